"""Segment new images with a trained model, and score a model on other datasets.

`predict_images` runs one trained model over a store (`results/<dataset>/store.h5`)
or a folder of images (`images/` of the image_folders layout, or a flat folder)
and writes, per image, under `out_dir`:

* ``labels/<id>.tif``: the instance label image (uint16, or uint32 above 65535 nuclei), 0 background
* ``probabilities/<id>.tif``: the foreground probability (float32, 0-1; contour: interior + boundary)
* ``overlays/<id>.png``: the image with each nucleus outlined in yellow
* ``nuclei/<id>.csv``: one row per nucleus (`NUCLEUS_COLUMNS`, skimage `regionprops_table`), plus
  `type` (the type id, 0 untyped) and `type_name` (its name in the training dataset's classes, e.g.
  PanNuke's or CoNSeP's) for a model with a type head

It uses the model's own input policy (`resize`: whole image at the training size,
maps resized back; `tile`: overlapping native-scale tiles streamed through
the model in batches, averaged into one map per channel), its test-time
augmentation and its post-processing: the target's watershed
(`postprocess.postprocess`) with the model's tuned settings (postprocess.json)
or its experiment's fixed ones, all read once into the model's
`predictor.InferenceConfig`. Nuclei are found once on the whole stitched maps,
never per tile, so a nucleus across a tile border is neither cut nor counted
twice.

`evaluate_on` scores a model on another dataset's images with the metrics of the
evaluate stage (`inference.evaluate_split`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from PIL import Image
from skimage.measure import regionprops_table
from skimage.segmentation import find_boundaries
from tqdm import tqdm

from nucleiflow.catalog import UNTYPED
from nucleiflow.config import ALL_IMAGES
from nucleiflow.datasets.image_folders import IMAGE_SUFFIXES, find_samples, images_by_stem, read_image
from nucleiflow.errors import DataFormatError
from nucleiflow.io import atomic_dir
from nucleiflow.segmentation.inference.inference import evaluate_split
from nucleiflow.segmentation.inference.predictor import Predictor
from nucleiflow.segmentation.training.data import split_ids
from nucleiflow.store import Store

log = logging.getLogger(__name__)

OUTLINE_RGB = (255, 255, 0)
NUCLEUS_COLUMNS = (
    "image_id",
    "label",
    "centroid_y",
    "centroid_x",
    "area",
    "perimeter",
    "eccentricity",
    "solidity",
    "mean_red",
    "mean_green",
    "mean_blue",
)
TYPE_COLUMN = "type"  # added to the nucleus rows of a model with a type head, with its name after it
TYPE_NAME_COLUMN = "type_name"
TYPE_COLUMNS = (TYPE_COLUMN, TYPE_NAME_COLUMN)
IMAGE_COLUMNS = ("image_id", "height", "width", "n_nuclei", "foreground_fraction", "seconds")


# ---------------------------------------------------------------- reading the images to segment


def image_reader(source: str | Path) -> tuple[list[str], callable]:
    """(image ids, id -> RGB uint8 image) of a store file or an image folder."""
    source = Path(source)
    if source.is_file():
        store = Store(source)
        return list(store.ids), store.image
    if not source.is_dir():
        raise DataFormatError(f"{source}: not a store file nor a folder of images")
    if (source / "images").is_dir() or not any(p.suffix.lower() in IMAGE_SUFFIXES for p in source.iterdir()):
        files = {s.image_id: s.image for s in find_samples(source)}
    else:
        files = images_by_stem(source)  # a flat folder of images
    return sorted(files), lambda image_id: read_image(files[image_id])[0]


# ---------------------------------------------------------------- per-image outputs


def nucleus_table(
    image_id: str,
    labels: np.ndarray,
    image: np.ndarray,
    types: dict | None = None,
    type_names: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per nucleus: label, centroid, area, perimeter, eccentricity, solidity, mean intensity per channel.

    With `types` ({label: type id}, a type head's vote) `type` and `type_name` columns follow; `type_names`
    names each id (index = id; `Predictor.type_names`), id 0 reads `catalog.UNTYPED`.
    """
    columns = list(NUCLEUS_COLUMNS) + (list(TYPE_COLUMNS) if types is not None else [])
    if not labels.any():
        return pd.DataFrame(columns=columns)
    props = regionprops_table(
        labels,
        intensity_image=image,
        properties=("label", "centroid", "area", "perimeter", "eccentricity", "solidity", "intensity_mean"),
    )
    table = pd.DataFrame(props).rename(
        columns={
            "centroid-0": "centroid_y",
            "centroid-1": "centroid_x",
            "intensity_mean-0": "mean_red",
            "intensity_mean-1": "mean_green",
            "intensity_mean-2": "mean_blue",
        }
    )
    table.insert(0, "image_id", image_id)
    table["area"] = table["area"].astype(int)
    if types is not None:
        table[TYPE_COLUMN] = [int(types.get(int(label), 0)) for label in table["label"]]
        names = [UNTYPED, *type_names[1:]]
        table[TYPE_NAME_COLUMN] = [names[k] if k < len(names) else f"type_{k}" for k in table[TYPE_COLUMN]]
    return table[columns]


def outline_overlay(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The image with every nucleus' inner boundary painted OUTLINE_RGB."""
    overlay = image.copy()
    overlay[find_boundaries(labels, mode="inner")] = OUTLINE_RGB
    return overlay


def label_dtype(labels: np.ndarray):
    return np.uint16 if labels.max(initial=0) <= np.iinfo(np.uint16).max else np.uint32


def write_image_outputs(out_dir: Path, image_id: str, image, prob, labels, nuclei: pd.DataFrame) -> None:
    tifffile.imwrite(out_dir / "labels" / f"{image_id}.tif", labels.astype(label_dtype(labels)), compression="zlib")
    tifffile.imwrite(out_dir / "probabilities" / f"{image_id}.tif", prob.astype(np.float32), compression="zlib")
    Image.fromarray(outline_overlay(image, labels)).save(out_dir / "overlays" / f"{image_id}.png")
    nuclei.to_csv(out_dir / "nuclei" / f"{image_id}.csv", index=False)


def predict_images(
    predictor: Predictor,
    source: str | Path,
    out_dir: str | Path,
    *,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Segment every image of `source` into `out_dir` (layout in the module docstring), atomically.

    Args:
        predictor: the model and its settings (`Predictor.from_model_dir`).
        source: a store file, an image_folders dataset folder (with `images/`) or a flat folder of images.
        out_dir: the folder to write; it appears complete or not at all.
        progress: show a progress bar.

    Returns:
        (one row per image: IMAGE_COLUMNS, one row per nucleus: NUCLEUS_COLUMNS and, with a type head,
        `type` and `type_name`).
    """
    ids, read = image_reader(source)
    if not ids:
        raise DataFormatError(f"{source}: no images to segment")
    columns = list(NUCLEUS_COLUMNS) + (list(TYPE_COLUMNS) if predictor.config.layout.type_classes else [])
    rows, tables = [], []
    with atomic_dir(out_dir) as tmp:
        for sub in ("labels", "probabilities", "overlays", "nuclei"):
            (tmp / sub).mkdir()
        for image_id in tqdm(ids, desc="predict", unit="img", disable=not progress):
            image = read(image_id)
            started = time.perf_counter()
            maps = predictor.predict_maps(image)
            prob = predictor.foreground_probability(maps)
            labels, types = predictor.nuclei_from_maps(maps)
            seconds = time.perf_counter() - started
            nuclei = nucleus_table(image_id, labels, image, types, predictor.type_names)
            write_image_outputs(tmp, image_id, image, prob, labels, nuclei)
            h, w = labels.shape
            rows.append(
                {
                    "image_id": image_id,
                    "height": h,
                    "width": w,
                    "n_nuclei": len(nuclei),
                    "foreground_fraction": float((labels > 0).mean()),
                    "seconds": seconds,
                }
            )
            if len(nuclei):
                tables.append(nuclei)
    nuclei = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=columns)
    return pd.DataFrame(rows, columns=list(IMAGE_COLUMNS)), nuclei


# ---------------------------------------------------------------- cross-dataset evaluation


def target_ids(store: Store, manifest_path, subset: str) -> list[str]:
    """Labelled ids of `subset` of a split manifest, or of the whole store for `all`."""
    labelled = store.labelled_ids
    if subset == ALL_IMAGES:
        ids = labelled
    else:
        keep = set(labelled)
        ids = [i for i in split_ids(pd.read_csv(manifest_path), subset) if i in keep]
    if not ids:
        raise DataFormatError(f"{store.path}: no labelled images in {subset!r} to evaluate on")
    return ids


def evaluate_on(
    spec,
    model_path,
    store_path,
    manifest_path,
    subset: str,
    *,
    threads: int = 1,
    postprocess: dict | None = None,
    tuned_path=None,
) -> pd.DataFrame:
    """Per-image pixel and object metrics of one model on another dataset's images (evaluate stage's columns).

    The model's own post-processing is used (tuned on its own validation split, or fixed).
    """
    predictor = Predictor.from_model_dir(
        model_path, spec=spec, postprocess=postprocess, tuned_path=tuned_path, threads=threads
    )
    store = Store(store_path)
    return evaluate_split(predictor, store, target_ids(store, manifest_path, subset), progress=False)
