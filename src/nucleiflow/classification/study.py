"""The classification study as the workflow runs it: split, base/augmented
training sets, the classic ML grid, the CNN runs and their tables.

Both variants ("base" and "augmented") are scored on exactly the same test
images: augmentation only ever touches the training part of one split.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import DataFormatError
from .data import CLASS_NAMES, load_image, read_class_folders, split_classes

VARIANTS = ("base", "augmented")


def find_class_root(unpacked: str | Path, class_names=CLASS_NAMES) -> Path:
    """The folder holding the class folders: the unpacked root or one level below it."""
    unpacked = Path(unpacked)
    candidates = [unpacked, *sorted(p for p in unpacked.iterdir() if p.is_dir())]
    for folder in candidates:
        if all((folder / name).is_dir() for name in class_names):
            return folder
    raise DataFormatError(f"{unpacked}: no folder holds the class folders {', '.join(class_names)}")


def make_split(unpacked, test_fraction: float, seed: int) -> pd.DataFrame:
    root = find_class_root(unpacked)
    return split_classes(read_class_folders(root), test_fraction, seed)


def training_sets(unpacked, split: pd.DataFrame, augmented: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) manifests with `path` and `label_index`; train is the augmented set when given."""
    listing = read_class_folders(find_class_root(unpacked))
    merged = split[["image_id", "split"]].merge(listing, on="image_id", how="left", validate="one_to_one")
    missing = merged[merged["path"].isna()]
    if len(missing):
        raise DataFormatError(f"split lists {missing['image_id'].iloc[0]!r}, which is not in {unpacked}")
    train = augmented if augmented is not None else merged[merged["split"] == "train"]
    return train.reset_index(drop=True), merged[merged["split"] == "test"].reset_index(drop=True)


def load_images(manifest: pd.DataFrame, size: int) -> list:
    return [load_image(path, size) for path in manifest["path"]]


def classic_table(results: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Tables I (base) and II (augmented) stacked: one row per classifier and variant."""
    frames = [df.assign(variant=variant) for variant, df in results.items()]
    table = pd.concat(frames, ignore_index=True)
    return table[["variant", *[c for c in table.columns if c != "variant"]]]


def cnn_epoch_table(histories: dict[tuple[str, str], pd.DataFrame], epochs) -> pd.DataFrame:
    """Tables III-VI stacked: per-epoch metrics at the listed epochs, per model and variant."""
    rows = []
    for (model, variant), history in histories.items():
        picked = history[history["epoch"].isin(list(epochs))]
        rows.append(picked.assign(model=model, variant=variant))
    table = pd.concat(rows, ignore_index=True)
    front = ["model", "variant", "epoch"]
    return table[front + [c for c in table.columns if c not in front]]
