"""Nucleus crops cut from a segmentation store: a public class-folder dataset.

PanNuke annotates every nucleus with an instance id and one of five classes,
so square crops around single nuclei make a fully public classification
dataset for the nucleus-vs-micronucleus study's pipeline. Two tasks:

* ``five_class``: the PanNuke class of the nucleus (neoplastic, inflammatory,
  connective, dead, epithelial; the store's class map, majority vote over
  the nucleus' pixels);
* ``binary``: small vs normal nucleus, "small" meaning an area below the
  ``small_quantile`` of all eligible nuclei of the store (the closest public
  analogue of a micronucleus). "small" is the second, positive class.

Nuclei touching the tile edge are skipped: they are cut by the tile, so
neither their area nor their appearance is that of the whole nucleus; specks
under MIN_NUCLEUS_PIXELS are annotation fragments and are skipped too. At most
``max_per_class`` nuclei per class are drawn (seeded). Output layout, written
atomically::

    <out_dir>/<class>/<image_id>_<k>.png   k = the nucleus' instance id
    <out_dir>/crops.csv                     one row per crop: where it came from
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from nucleiflow.catalog import CROP_TASK_CLASS_NAMES as TASK_CLASS_NAMES
from nucleiflow.errors import ConfigError, DataFormatError
from nucleiflow.io import atomic_dir
from nucleiflow.store import Store
from nucleiflow.workflow.classification import task_class_names

log = logging.getLogger(__name__)

FIVE_CLASS_NAMES = TASK_CLASS_NAMES["five_class"]
BINARY_CLASS_NAMES = TASK_CLASS_NAMES["binary"]  # the second is the positive class, as micronucleus in NucRec
MIN_NUCLEUS_PIXELS = 10
DEFAULT_MAX_PER_CLASS = 500
DEFAULT_MARGIN = 8
DEFAULT_SMALL_QUANTILE = 0.25
MANIFEST_NAME = "crops.csv"
NUCLEUS_COLUMNS = ["image_id", "nucleus", "class_name", "area", "y0", "x0", "y1", "x1"]


def write_crops(
    store_path,
    out_dir,
    task: str,
    max_per_class: int = DEFAULT_MAX_PER_CLASS,
    margin: int = DEFAULT_MARGIN,
    small_quantile: float = DEFAULT_SMALL_QUANTILE,
    seed: int = 0,
) -> pd.DataFrame:
    """Cut the crops of `task` from the store at `store_path` into `out_dir`; return their manifest.

    The manifest has NUCLEUS_COLUMNS plus ``label`` and ``file`` (relative to
    `out_dir`) and is also written as `out_dir`/crops.csv.
    """
    class_names = task_class_names(task)
    _check_options(max_per_class, margin, small_quantile)
    store = Store(store_path)
    if task == "five_class":
        _check_pannuke_classes(store)
    nuclei = nucleus_table(store, need_classes=task == "five_class")
    labelled = label_nuclei(nuclei, task, small_quantile)
    chosen = sample_per_class(labelled, class_names, max_per_class, seed)
    chosen["file"] = [
        f"{label}/{image_id}_{k}.png"
        for label, image_id, k in zip(chosen["label"], chosen["image_id"], chosen["nucleus"])
    ]
    with atomic_dir(out_dir) as tmp:
        for name in class_names:
            (tmp / name).mkdir()  # also for a class with no crops, so the reader names it
        _write_patches(store, chosen, tmp, margin)
        chosen.to_csv(tmp / MANIFEST_NAME, index=False)
    counts = chosen["label"].value_counts().reindex(list(class_names), fill_value=0)
    log.info("%s crops from %s: %s", task, store_path, ", ".join(f"{n}={c}" for n, c in counts.items()))
    return chosen


def _check_options(max_per_class: int, margin: int, small_quantile: float) -> None:
    if max_per_class < 1:
        raise ConfigError(f"crops.max_per_class: {max_per_class!r} must be at least 1")
    if margin < 0:
        raise ConfigError(f"crops.margin: {margin!r} must be 0 or more pixels")
    if not 0.0 < small_quantile < 1.0:
        raise ConfigError(f"crops.small_quantile: {small_quantile!r} must lie strictly between 0 and 1")


def _check_pannuke_classes(store: Store) -> None:
    missing = [name for name in FIVE_CLASS_NAMES if name not in store.class_names]
    if missing:
        raise DataFormatError(
            f"{store.path}: class names {store.class_names} lack {missing}; five_class crops need a PanNuke "
            "store; use task binary"
        )


def nucleus_table(store: Store, need_classes: bool) -> pd.DataFrame:
    """One row per eligible nucleus of every image: NUCLEUS_COLUMNS (bbox end exclusive).

    ``class_name`` is the majority class of the nucleus' pixels ("" when the
    store has no class maps); `need_classes` makes a missing class map an error.
    """
    frames = []
    for image_id in store.ids:
        sample = store[image_id]
        if need_classes and sample.classes is None:
            raise DataFormatError(
                f"{store.path}: image {image_id!r} has no class map; five_class crops need a store with "
                "nucleus classes (PanNuke); use task binary"
            )
        frames.append(_image_nuclei(image_id, sample.instances, sample.classes, store.class_names))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=NUCLEUS_COLUMNS)
    if table.empty:
        raise DataFormatError(f"{store.path}: no nucleus of at least {MIN_NUCLEUS_PIXELS} px clear of the tile edge")
    return table


def _image_nuclei(image_id: str, instances: np.ndarray, classes, class_names) -> pd.DataFrame:
    rows = []
    height, width = instances.shape
    for k, box in enumerate(ndimage.find_objects(instances), start=1):
        if box is None:  # instance ids need not be contiguous
            continue
        y, x = box
        if y.start == 0 or x.start == 0 or y.stop == height or x.stop == width:
            continue  # cut by the tile edge
        pixels = instances[box] == k
        area = int(pixels.sum())
        if area < MIN_NUCLEUS_PIXELS:
            continue
        rows.append(
            (image_id, k, _majority_class(classes, box, pixels, class_names), area, y.start, x.start, y.stop, x.stop)
        )
    return pd.DataFrame(rows, columns=NUCLEUS_COLUMNS)


def _majority_class(classes, box, pixels: np.ndarray, class_names) -> str:
    """Name of the most frequent non-background class over the nucleus' pixels ("" if none)."""
    if classes is None:
        return ""
    votes = np.bincount(classes[box][pixels], minlength=len(class_names))
    votes[0] = 0  # background pixels inside an instance are annotation noise
    return class_names[int(votes.argmax())] if votes.any() else ""


def label_nuclei(nuclei: pd.DataFrame, task: str, small_quantile: float = DEFAULT_SMALL_QUANTILE) -> pd.DataFrame:
    """`nuclei` with a ``label`` column for `task`; nuclei without a class are dropped (five_class)."""
    if task == "five_class":
        labelled = nuclei[nuclei["class_name"].isin(FIVE_CLASS_NAMES)].copy()
        labelled["label"] = labelled["class_name"]
        return labelled.reset_index(drop=True)
    task_class_names(task)  # validates the name
    threshold = float(np.quantile(nuclei["area"], small_quantile))
    labelled = nuclei.copy()
    small, normal = BINARY_CLASS_NAMES[1], BINARY_CLASS_NAMES[0]
    labelled["label"] = np.where(labelled["area"] < threshold, small, normal)
    log.info("small nucleus: area below %.1f px (the %g quantile of %d nuclei)", threshold, small_quantile, len(nuclei))
    return labelled


def sample_per_class(labelled: pd.DataFrame, class_names, max_per_class: int, seed: int) -> pd.DataFrame:
    """At most `max_per_class` rows per label, drawn without replacement from a seeded generator.

    The input is sorted first so the draw depends only on the data and the
    seed, never on the order the store lists its images.
    """
    ordered = labelled.sort_values(["image_id", "nucleus"], kind="stable").reset_index(drop=True)
    rng = np.random.default_rng(seed)
    picks = []
    for name in class_names:  # fixed order: the generator's stream is shared
        members = ordered.index[ordered["label"] == name].to_numpy()
        if len(members) > max_per_class:
            members = np.sort(rng.choice(members, size=max_per_class, replace=False))
        picks.append(ordered.loc[members])
    return pd.concat(picks, ignore_index=True)


def square_patch(image: np.ndarray, box: tuple[int, int, int, int], margin: int) -> np.ndarray:
    """The square around bbox (y0, x0, y1, x1) grown by `margin` px per side.

    Centred on the bbox; where the square leaves the tile, edge pixels are
    repeated (as the offline augmentation does) rather than shifting the
    nucleus off centre.
    """
    y0, x0, y1, x1 = box
    side = max(y1 - y0, x1 - x0) + 2 * margin
    top = (y0 + y1 - side) // 2
    left = (x0 + x1 - side) // 2
    height, width = image.shape[:2]
    pad = max(0, -top, -left, top + side - height, left + side - width)
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge") if pad else image
    return padded[top + pad : top + pad + side, left + pad : left + pad + side]


def _write_patches(store: Store, chosen: pd.DataFrame, out_dir: Path, margin: int) -> None:
    # Grouped by image so each tile is read once.
    for image_id, rows in chosen.groupby("image_id", sort=True):
        image = store.image(image_id)
        for row in rows.itertuples(index=False):
            patch = square_patch(image, (row.y0, row.x0, row.y1, row.x1), margin)
            Image.fromarray(patch).save(out_dir / row.file)
