"""The classification study's data as the workflow runs it: the class folders, the split and the
base/augmented training sets.

Both variants ("base" and "augmented") are scored on exactly the same test
images: augmentation only ever touches the training part of one split. The
study's file names and class names per experiment are `nucleiflow.workflow.classification`'s
(read while the DAG is built).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from nucleiflow.classification.dataset import CLASS_NAMES, load_image, read_class_folders, split_classes
from nucleiflow.errors import DataFormatError

# ---------------------------------------------------------------- data


def find_class_root(unpacked: str | Path, class_names=CLASS_NAMES) -> Path:
    """The folder holding the class folders: `unpacked` or one level below it.

    When none holds all of them, the error names the first class folder
    missing from the best candidate (the one holding the most).
    """
    unpacked = Path(unpacked)
    if not unpacked.is_dir():
        raise DataFormatError(f"{unpacked}: data folder not found; expected class folders {', '.join(class_names)}")
    candidates = [unpacked, *sorted(p for p in unpacked.iterdir() if p.is_dir())]
    present = [sum((folder / name).is_dir() for name in class_names) for folder in candidates]
    best = candidates[present.index(max(present))]
    missing = [name for name in class_names if not (best / name).is_dir()]
    if missing:
        raise DataFormatError(
            f"{best / missing[0]}: class folder {missing[0]!r} is missing; expected class folders: "
            f"{', '.join(class_names)}"
        )
    return best


def make_split(unpacked, test_fraction: float, seed: int, class_names=CLASS_NAMES) -> pd.DataFrame:
    """Validate the class folders (reporting counts) and split them 70/30 (or as configured), stratified."""
    root = find_class_root(unpacked, class_names)
    return split_classes(read_class_folders(root, class_names), test_fraction, seed, class_names, root=root)


def training_sets(
    unpacked, split: pd.DataFrame, augmented: pd.DataFrame | None, class_names=CLASS_NAMES
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) manifests with `path` and `label_index`; train is the augmented set when given."""
    listing = read_class_folders(find_class_root(unpacked, class_names), class_names)
    merged = split[["image_id", "split"]].merge(listing, on="image_id", how="left", validate="one_to_one")
    missing = merged[merged["path"].isna()]
    if len(missing):
        raise DataFormatError(f"{unpacked}: the split lists {missing['image_id'].iloc[0]!r}, which is not there")
    train = augmented if augmented is not None else merged[merged["split"] == "train"]
    return train.reset_index(drop=True), merged[merged["split"] == "test"].reset_index(drop=True)


def load_images(manifest: pd.DataFrame, size: int) -> list:
    return [load_image(path, size) for path in manifest["path"]]
