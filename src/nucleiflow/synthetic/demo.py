"""The small synthetic data set of the demo workflow: every release, in its layout, in seconds."""

from __future__ import annotations

import os
from pathlib import Path

from nucleiflow.paths import DEMO_SLIDE_NAME
from nucleiflow.synthetic.dsb2018 import write_stage1_zip
from nucleiflow.synthetic.nucrec import write_nucrec_zip
from nucleiflow.synthetic.pannuke import write_fold_zip

PANNUKE_FOLDS = (1, 2, 3)
DEFAULT_SEED = 0
DEFAULT_PANNUKE_IMAGES_PER_FOLD = 12
DEFAULT_DSB_IMAGES = 24
DEFAULT_NUCREC_IMAGES_PER_CLASS = 40


def write_demo_archives(
    out_dir: str | os.PathLike,
    *,
    seed: int = DEFAULT_SEED,
    pannuke_images_per_fold: int = DEFAULT_PANNUKE_IMAGES_PER_FOLD,
    dsb_images: int = DEFAULT_DSB_IMAGES,
    nucrec_images_per_class: int = DEFAULT_NUCREC_IMAGES_PER_CLASS,
) -> dict[str, Path]:
    """Write every demo archive under `out_dir`; return {path relative to out_dir (posix): path}.

    Layout: `pannuke/fold_{1,2,3}.zip`, `dsb2018/stage1_train.zip`, `nucrec/nucrec.zip`.
    Each archive is written atomically.
    """
    out_dir = Path(out_dir)
    archives = {}
    for fold in PANNUKE_FOLDS:
        archives[f"pannuke/fold_{fold}.zip"] = write_fold_zip(
            out_dir / "pannuke" / f"fold_{fold}.zip", fold, pannuke_images_per_fold, seed
        )
    archives["dsb2018/stage1_train.zip"] = write_stage1_zip(out_dir / "dsb2018" / "stage1_train.zip", dsb_images, seed)
    archives["nucrec/nucrec.zip"] = write_nucrec_zip(out_dir / "nucrec" / "nucrec.zip", nucrec_images_per_class, seed)
    return archives


def write_demo_slide(out_dir: str | os.PathLike, seed: int = DEFAULT_SEED) -> Path:
    """The demo's whole slide: a small tiled pyramidal OME-TIFF at 20x with two tissue pieces on glass."""
    from dataclasses import replace

    from nucleiflow.synthetic.slide import DEMO_SLIDE, write_synthetic_slide

    return write_synthetic_slide(Path(out_dir) / DEMO_SLIDE_NAME, replace(DEMO_SLIDE, seed=seed))
