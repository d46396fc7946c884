"""Offline augmentation of the classification training set (albumentations).

The paper enlarges the NucRec training split with rotated, flipped and zoomed
copies before training. `augment_training_set` writes that enlarged set as a
class-folder tree of PNGs at a fixed size::

    <out_dir>/<label>/orig_<k>.png   the original training images (resized)
    <out_dir>/<label>/aug_<k>.png    generated images

and returns its manifest. Only the training split is augmented; test images
are never seen here, so nothing leaks into evaluation.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from nucleiflow.classification.dataset import CLASS_NAMES, label_index, load_image
from nucleiflow.errors import ConfigError
from nucleiflow.io import atomic_dir

# albumentations checks PyPI for a newer release on import; workflow jobs run
# offline (HPC nodes) and must not stall or leak requests.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A  # noqa: E402

log = logging.getLogger(__name__)

AUGMENTED_COLUMNS = ["image_id", "path", "label", "label_index", "source_image_id"]


def build_offline_augmenter(seed: int) -> A.Compose:
    """Rotation by any angle, horizontal/vertical flips and a 0.8-1.2 zoom.

    Border pixels are replicated rather than mirrored or filled: a mirrored
    border can copy part of a nucleus into a corner, which looks like a
    micronucleus satellite; a constant fill assumes a background colour that
    differs between stains. SafeRotate keeps the whole rotated image in the
    frame so a satellite near a corner is not cut away.
    """
    border = cv2.BORDER_REPLICATE
    return A.Compose(
        [
            A.SafeRotate(limit=(-180, 180), border_mode=border, p=1.0),
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            # keep_ratio: one factor for both axes, a zoom rather than a stretch.
            A.Affine(scale=(0.8, 1.2), keep_ratio=True, border_mode=border, p=0.5),
        ],
        seed=seed,
    )


def augment_training_set(
    manifest_train: pd.DataFrame,
    root,
    out_dir,
    n_total: int,
    image_size: int,
    seed: int,
    class_names=CLASS_NAMES,
) -> pd.DataFrame:
    """Write originals + generated images (`n_total` in all) under `out_dir`.

    `manifest_train` needs ``image_id`` (relative to `root`) and ``label``.
    Generated images are spread over the classes so the final class counts are
    as even as the originals allow; within a class, sources are drawn round
    robin from a seeded shuffle so every original is used about equally. The
    whole tree is written to a temporary directory and renamed into place, so
    a killed job leaves no partial set and a re-run leaves no stale files.
    Returns the manifest: ``image_id`` (relative to `out_dir`), ``path``,
    ``label``, ``label_index``, ``source_image_id``.
    """
    if n_total < len(manifest_train):
        raise ConfigError(f"augment n_total: {n_total} is less than the {len(manifest_train)} original training images")
    out_dir = Path(out_dir)
    originals = {name: sorted(manifest_train.loc[manifest_train["label"] == name, "image_id"]) for name in class_names}
    n_generated = _balanced_extra_counts({n: len(ids) for n, ids in originals.items()}, n_total)
    augmenter = build_offline_augmenter(seed)
    rng = np.random.default_rng(seed)
    rows = []
    with atomic_dir(out_dir) as tmp:
        for name in class_names:  # fixed order: the augmenter's random stream is shared
            jobs = _class_jobs(originals[name], n_generated[name], rng)
            for image_id, (prefix, _, source_id) in zip(_image_ids(name, jobs), jobs):
                image = load_image(Path(root) / source_id, image_size)
                if prefix == "aug":
                    image = augmenter(image=image)["image"]
                Image.fromarray(image).save(_ensure_parent(tmp / image_id))
                rows.append((image_id, str(out_dir / image_id), name, source_id))
    manifest = pd.DataFrame(rows, columns=["image_id", "path", "label", "source_image_id"])
    manifest.insert(3, "label_index", label_index(manifest["label"], class_names))
    log.info("augmented training set: %s", ", ".join(f"{n}={len(originals[n])}+{n_generated[n]}" for n in class_names))
    return manifest[AUGMENTED_COLUMNS]


def _balanced_extra_counts(original_counts: dict[str, int], n_total: int) -> dict[str, int]:
    """How many images to generate per class so final counts are as even as possible.

    Water filling: each extra image goes to the class that currently has the
    fewest (ties broken by class order), so a class that already has more
    originals than its even share receives none.
    """
    counts = dict(original_counts)
    for _ in range(n_total - sum(counts.values())):
        smallest = min(counts, key=lambda name: counts[name])
        counts[smallest] += 1
    return {name: counts[name] - original_counts[name] for name in counts}


def _class_jobs(source_ids: list[str], n_generated: int, rng: np.random.Generator) -> list[tuple]:
    """(prefix, k, source_image_id) for the originals, then the generated images."""
    jobs = [("orig", k, source) for k, source in enumerate(source_ids)]
    if n_generated and not source_ids:
        raise ConfigError("augment: cannot generate images for a class with no training images")
    order = list(rng.permutation(len(source_ids))) if source_ids else []
    jobs += [("aug", k, source_ids[order[k % len(order)]]) for k in range(n_generated)]
    return jobs


def _image_ids(label: str, jobs: list[tuple]) -> list[str]:
    # Zero-padded so the files sort in generation order.
    width = max(5, len(str(len(jobs))))
    return [f"{label}/{prefix}_{k:0{width}d}.png" for prefix, k, _ in jobs]


def _ensure_parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
