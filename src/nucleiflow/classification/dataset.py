"""Class-folder layout: manifest, image loading and the train/test split.

Layout read by `read_class_folders` (NucRec's, and the PanNuke crops')::

    <root>/<class name>/*.png|jpg|tif|bmp     one folder per class name

The class names are an ordered list; a label's index is its position in it.
NucRec's are CLASS_NAMES; in a two-class task the second name is the
positive class (micronucleus, small nucleus). Images may be RGB or grayscale
and of any size; `load_image` makes them uniform (RGB, square, bilinear resize).
The CNN-side dataset (`training.ClassificationDataset`) decodes through `load_image`.

This module stays free of torch (rules import `study`, which imports it).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from nucleiflow.catalog import NUCREC_CLASS_NAMES as CLASS_NAMES
from nucleiflow.errors import ConfigError, DataFormatError
from nucleiflow.splits import stratified_split

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MANIFEST_COLUMNS = ["image_id", "path", "label", "label_index"]
# Every class needs at least one image in each of train and test.
MIN_IMAGES_PER_CLASS = 2
SPLITS = ("train", "test")
# CNN inputs are scaled to [-1, 1] unless the model carries its own normalisation (timm pretrained_cfg).
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)


def read_class_folders(root, class_names=CLASS_NAMES) -> pd.DataFrame:
    """List and validate the images under `root/<class>/`; return the manifest.

    Columns: ``image_id`` (posix path relative to `root`), ``path``, ``label``,
    ``label_index``. Raises DataFormatError for a missing class folder, a file
    that is not an image by suffix, or an image Pillow cannot decode. Hidden
    files (``.DS_Store`` and the like) are OS metadata and are skipped.
    """
    root = Path(root)
    _check_class_folders(root, class_names)
    rows = []
    for index, name in enumerate(class_names):
        for path in _class_files(root / name):
            _check_decodable(path, root)
            rows.append((path.relative_to(root).as_posix(), str(path), name, index))
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    counts = manifest["label"].value_counts().reindex(list(class_names), fill_value=0)
    log.info("%s: %s", root, ", ".join(f"{n}={c}" for n, c in counts.items()))
    return manifest


def load_image(path, size: int) -> np.ndarray:
    """Read an image as uint8 RGB of shape (size, size, 3); grayscale is replicated."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    # np.array copies: arrays over Pillow buffers are read-only, which torch warns about.
    return np.array(rgb.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def split_classes(
    df: pd.DataFrame, test_fraction: float = 0.3, seed: int = 0, class_names=CLASS_NAMES, root=None
) -> pd.DataFrame:
    """Stratified train/test split by label; returns ``image_id, label, split``.

    Counts per class are exact (largest remainder, see `splits.stratified_split`)
    and reproducible from `seed`. A class too small to put at least one image
    in each of train and test is a DataFormatError naming its folder under
    `root` (when given).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction: {test_fraction!r} must lie strictly between 0 and 1")
    fractions = {"train": 1.0 - test_fraction, "test": test_fraction}
    # Reindex so an empty class folder is reported, not silently dropped.
    counts = df["label"].value_counts().reindex(list(class_names), fill_value=0)
    _check_enough_images(counts, fractions, root)
    split = stratified_split(df["image_id"], df["label"], fractions, seed)
    labels = df.set_index("image_id")["label"]
    split.insert(1, "label", split["image_id"].map(labels))
    _check_every_class_in_both_splits(split, class_names, fractions, root)
    return split


def _check_enough_images(counts: pd.Series, fractions: dict[str, float], root) -> None:
    too_few = counts[counts < MIN_IMAGES_PER_CLASS]
    if len(too_few):
        _raise_too_few(too_few.index[0], int(too_few.iloc[0]), fractions, root)


def _check_every_class_in_both_splits(split: pd.DataFrame, class_names, fractions: dict[str, float], root) -> None:
    # With a lopsided test_fraction a small class can round to zero images in one split.
    table = split.groupby(["label", "split"]).size().unstack(fill_value=0)
    table = table.reindex(index=list(class_names), columns=list(SPLITS), fill_value=0)
    short = table[(table == 0).any(axis=1)]
    if len(short):
        name = short.index[0]
        _raise_too_few(name, int(table.loc[name].sum()), fractions, root)


def _raise_too_few(name: str, count: int, fractions: dict[str, float], root) -> None:
    # From this size on even the smaller share's floor is one image (tolerance: 1 / 0.25 is 4, not 4.0000001).
    needed = max(MIN_IMAGES_PER_CLASS, math.ceil(1.0 / min(fractions.values()) - 1e-9))
    where = f"{Path(root) / name}: " if root is not None else ""
    raise DataFormatError(
        f"{where}class {name!r} has {count} image(s); at least {needed} are needed to put one in each of "
        f"train and test (test_fraction {fractions['test']:g})"
    )


def label_index(labels, class_names=CLASS_NAMES) -> np.ndarray:
    """Class index of each label name (position in `class_names`)."""
    lookup = {name: i for i, name in enumerate(class_names)}
    return np.array([lookup[label] for label in labels], dtype=np.int64)


def _check_class_folders(root: Path, class_names) -> None:
    for name in class_names:
        if not (root / name).is_dir():
            raise DataFormatError(
                f"{root / name}: class folder {name!r} is missing; expected class folders: {', '.join(class_names)}"
            )


def _class_files(folder: Path) -> list[Path]:
    """Image files under `folder` (recursive, sorted); stray non-image files are an error."""
    files = [
        p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    stray = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    if stray:
        shown = ", ".join(str(p) for p in stray[:5]) + (" ..." if len(stray) > 5 else "")
        raise DataFormatError(f"{folder}: {len(stray)} file(s) are not images ({', '.join(IMAGE_SUFFIXES)}): {shown}")
    return files


def _check_decodable(path: Path, root: Path) -> None:
    # verify() checks the file structure without decoding all pixels; load()
    # then catches truncated pixel data that verify() lets through.
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataFormatError(f"{path}: not a decodable image ({err})") from None
