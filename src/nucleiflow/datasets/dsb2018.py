"""DSB2018 releases -> store.

Three layouts are read (`find_samples` tells them apart):

* ``per_nucleus`` - the official stage1_train release, and the stage-1 test
  set with its decoded solution: ``<id>/images/<id>.png`` plus one binary
  ``<id>/masks/<mask>.png`` per nucleus. Masks are merged into an instance
  map; pixels claimed by two masks are counted as overlaps (later mask wins).
* ``rle`` - the official stage-1 test release (``<id>/images/<id>.png``, no
  masks) with the run-length encoded solution file ``stage1_solution.csv``
  among the converter's inputs (`rle`): each row is decoded into one nucleus.
* ``merged`` - the "processed" variant used by U-Net studies, one merged
  binary mask per image: either flat folders ``images/<id>.png`` +
  ``masks/<id>.png`` (or ``masks/0/<id>.png``, the layout of the widely
  copied ``preprocess_dsb2018.py``), or ``<id>/images/<id>.png`` +
  ``<id>/masks/<id>.png``. Instances are the 8-connected components of the
  mask, so touching nuclei merge and overlaps cannot be known (``None``).

The root may also hold one wrapping folder (``stage1_train/...``). Images
keep their native size; RGBA, grey and palette images become RGB. Every image
records `source_set`, the name of the input folder it came from (the archive's
name, e.g. ``stage1_train`` or ``stage1_test``), so one store can hold both
stage-1 sets and a split can draw its test set from one (`splits`).
"""

from __future__ import annotations

import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from nucleiflow.datasets.rle import decode_instances, read_solution
from nucleiflow.errors import DataFormatError
from nucleiflow.image_keys import PNG_READ_ERRORS, content_hash, modality_features, modality_hint
from nucleiflow.store import BINARY_CLASS_NAMES, StoreWriter

log = logging.getLogger(__name__)

EIGHT_CONNECTED = np.ones((3, 3), bool)  # skimage.measure.label's default for 2-D
FLAT_MASK_SUBFOLDER = "0"  # preprocess_dsb2018.py writes masks/0/<id>.png


@dataclass(frozen=True)
class SampleFiles:
    """Where one image and its mask(s) are; `merged`: one binary mask for all nuclei."""

    image_id: str
    image: Path
    masks: tuple[Path, ...]
    merged: bool

    @property
    def layout(self) -> str:
        if not self.masks:
            return "rle"
        return "merged" if self.merged else "per_nucleus"


# ---------------------------------------------------------------- reading PNGs


def open_png(path: Path) -> Image.Image:
    """Fully decoded PIL image; a broken or cut file is a one-line error naming it."""
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so a cut file fails here, naming it
            return im
    except PNG_READ_ERRORS as err:  # Pillow raises several types for broken files
        raise DataFormatError(f"{path}: unreadable image ({type(err).__name__}: {err})".replace("\n", " ")) from None


def to_rgb(array: np.ndarray, where: Path) -> np.ndarray:
    """RGB uint8 from grayscale, grey+alpha, RGB or RGBA (alpha dropped: it is constant in the release)."""
    if array.dtype == np.uint16:
        array = (array / 257).round().astype(np.uint8)
    if array.dtype != np.uint8:
        raise DataFormatError(f"{where}: unsupported pixel type {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 2:  # grey + alpha
        array = array[..., 0]
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return np.ascontiguousarray(array[..., :3])
    raise DataFormatError(f"{where}: unsupported image shape {array.shape}")


def read_image(path: Path) -> tuple[np.ndarray, str]:
    """(RGB uint8 image, source PIL mode)."""
    im = open_png(path)
    mode = im.mode
    if mode == "P":  # palette indices are not intensities
        im = im.convert("RGBA")
    return to_rgb(np.asarray(im), path), mode


def mask_band(path: Path, shape: tuple[int, int], image_path: Path) -> Image.Image:
    """The first band of a mask PNG, checked to be the image's size."""
    im = open_png(path)
    if (im.height, im.width) != shape:
        raise DataFormatError(
            f"{path}: mask size {(im.height, im.width)} differs from image size {shape} ({image_path.name})"
        )
    return im.getchannel(0) if len(im.getbands()) > 1 else im


# ---------------------------------------------------------------- merging masks


def nucleus_crop(
    path: Path, shape: tuple[int, int], image_path: Path
) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """((top, bottom, left, right), boolean crop) of one nucleus mask; None for an empty mask.

    The merge below then touches only the nucleus's box, not the whole image, per mask.
    """
    mask = np.asarray(mask_band(path, shape, image_path))
    rows = np.flatnonzero(mask.any(axis=1))
    if not len(rows):
        return None
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    strip = mask[top:bottom]
    cols = np.flatnonzero(strip.any(axis=0))
    left, right = int(cols[0]), int(cols[-1]) + 1
    return (top, bottom, left, right), strip[:, left:right] > 0


def merge_nucleus_masks(
    paths: tuple[Path, ...], shape: tuple[int, int], image_path: Path, pool: ThreadPoolExecutor | None = None
) -> tuple[np.ndarray, int]:
    """Instance map (id k = k-th mask) and the count of pixels claimed by two or more masks.

    Inflating the PNGs is ~85 % of the cost (zlib-bound); updating only each
    nucleus's box keeps the rest small. With a thread `pool` the masks decode
    in parallel (Pillow releases the GIL while inflating); only the small
    crops wait in memory, so memory stays one image plus a decoded mask per thread.
    """
    read = partial(nucleus_crop, shape=shape, image_path=image_path)
    crops = pool.map(read, paths) if pool is not None else map(read, paths)
    instances = np.zeros(shape, np.int32)
    coverage = np.zeros(shape, np.uint16)
    for k, crop in enumerate(crops, start=1):
        if crop is None:  # an empty mask file adds no nucleus
            continue
        (top, bottom, left, right), on = crop
        instances[top:bottom, left:right][on] = k
        coverage[top:bottom, left:right] += on
    return instances, int(np.count_nonzero(coverage > 1))


def label_merged_mask(path: Path, shape: tuple[int, int], image_path: Path) -> np.ndarray:
    """Instance map from one merged binary mask: its 8-connected components."""
    binary = np.asarray(mask_band(path, shape, image_path)) > 0
    instances, _ = ndimage.label(binary, structure=EIGHT_CONNECTED, output=np.int32)
    return instances


# ---------------------------------------------------------------- finding samples


def find_samples(root: str | Path, encoded_ids=frozenset()) -> list[SampleFiles]:
    """Every image (with its mask files) under one unpacked root, in sorted id order.

    Images listed in `encoded_ids` (ids of a run-length encoded solution) may come without mask files.
    """
    root = _layout_root(Path(root))
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return _flat_samples(root)
    return [_folder_sample(d, encoded_ids) for d in sample_dirs(root)]


def _layout_root(root: Path) -> Path:
    """`root`, or its single subfolder when the archive wraps everything in one (e.g. stage1_train/)."""
    if not root.is_dir():
        raise DataFormatError(f"{root}: not a folder")
    children = [p for p in root.iterdir() if not p.name.startswith(".")]
    # A lone folder that is not itself one sample (<id>/images/<id>.png) wraps the layout.
    if len(children) != 1 or not children[0].is_dir():
        return root
    is_sample = (children[0] / "images" / f"{children[0].name}.png").is_file()
    return root if is_sample else children[0]


def sample_dirs(root: Path) -> list[Path]:
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise DataFormatError(
            f"{root}: no image folders (expected <id>/images/<id>.png and <id>/masks/*.png, or images/ + masks/)"
        )
    return dirs


def _png_files(folder: Path) -> list[Path]:
    """Sorted PNG files of `folder`; any other file is a one-line error."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    stray = [p for p in files if p.suffix.lower() != ".png"]
    if stray:
        raise DataFormatError(f"{stray[0]}: not a PNG file (only .png files belong in {folder})")
    return files


def _folder_sample(sample_dir: Path, encoded_ids=frozenset()) -> SampleFiles:
    """`<id>/images/<id>.png` with per-nucleus masks, one merged `<id>/masks/<id>.png`, or encoded masks."""
    image_id = sample_dir.name
    image_path = sample_dir / "images" / f"{image_id}.png"
    if not image_path.is_file():
        raise DataFormatError(f"{sample_dir}: missing images/{image_id}.png")
    mask_dir = sample_dir / "masks"
    masks = _png_files(mask_dir) if mask_dir.is_dir() else []
    if not masks and image_id in encoded_ids:
        return SampleFiles(image_id, image_path, (), False)
    if not masks:
        raise DataFormatError(f"{mask_dir}: image {image_id} has no mask files")
    merged = len(masks) == 1 and masks[0].stem == image_id
    return SampleFiles(image_id, image_path, tuple(masks), merged)


def _flat_samples(root: Path) -> list[SampleFiles]:
    """`images/<id>.png` + `masks/<id>.png` (or `masks/0/<id>.png`): one merged mask per image."""
    mask_dir = root / "masks"
    subfolders = [p for p in mask_dir.iterdir() if p.is_dir()]
    if subfolders:
        if len(subfolders) != 1:
            raise DataFormatError(
                f"{mask_dir}: expected merged masks in masks/ or in one folder such as "
                f"masks/{FLAT_MASK_SUBFOLDER}/, found {len(subfolders)} folders"
            )
        mask_dir = subfolders[0]
    images = {p.stem: p for p in _png_files(root / "images")}
    masks = {p.stem: p for p in _png_files(mask_dir)}
    if not images:
        raise DataFormatError(f"{root / 'images'}: no images")
    for image_id in sorted(images):
        if image_id not in masks:
            raise DataFormatError(f"{mask_dir / (image_id + '.png')}: missing merged mask of image {image_id}")
    orphans = sorted(set(masks) - set(images))
    if orphans:
        raise DataFormatError(
            f"{masks[orphans[0]]}: mask without an image (no {root / 'images' / (orphans[0] + '.png')})"
        )
    return [SampleFiles(i, images[i], (masks[i],), True) for i in sorted(images)]


# ---------------------------------------------------------------- converting


def read_sample(
    files: SampleFiles, pool: ThreadPoolExecutor | None = None, solution: dict | None = None
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(RGB image, instance map, metadata) of one sample; `pool` decodes per-nucleus masks in parallel.

    A sample without mask files takes its nuclei from `solution` (`rle.read_solution`).
    """
    image, mode = read_image(files.image)
    shape = image.shape[:2]
    if not files.masks:
        instances, overlap = decode_instances((solution or {})[files.image_id], shape, files.image_id)
    elif files.merged:
        instances, overlap = label_merged_mask(files.masks[0], shape, files.image), None
    else:
        instances, overlap = merge_nucleus_masks(files.masks, shape, files.image, pool)
    meta = {
        "modality_hint": modality_hint(image),
        "source_mode": mode,
        "mask_layout": files.layout,
        "n_mask_files": len(files.masks),
        "n_overlap_pixels": overlap,
        "content_hash": content_hash(image),
        **modality_features(image),
    }
    return image, instances, meta


def convert_dsb2018(roots: list[str | Path], out_path: str | Path, progress: bool = True, workers: int = 1) -> dict:
    """Convert unpacked DSB2018 folders (any layout above) into one store; returns a summary.

    A `.csv` among `roots` is a run-length encoded solution (stage1_solution.csv) for the images
    that come without masks. `workers` > 1 decodes each image's masks on that many threads. The
    store is written atomically: on any error no store (and no temporary) is left.
    """
    solution: dict = {}
    for path in [Path(r) for r in roots if Path(r).suffix.lower() == ".csv"]:
        solution.update(read_solution(path))
    folders = [Path(r) for r in roots if Path(r).suffix.lower() != ".csv"]
    samples = [(folder.name, s) for folder in folders for s in find_samples(folder, frozenset(solution))]
    summary = {
        "images": len(samples),
        "nuclei": 0,
        "images_with_overlaps": 0,
        "overlap_pixels": 0,
        "layouts": {},
        "modalities": {},
    }
    with StoreWriter(out_path, "dsb2018", BINARY_CLASS_NAMES) as writer, _thread_pool(workers) as pool:
        for source_set, files in tqdm(samples, desc="DSB2018", unit="img", disable=not progress):
            image, instances, meta = read_sample(files, pool, solution)
            writer.add(files.image_id, image, instances, source_set=source_set, **meta)
            _count(summary, instances, meta)
    log.info(
        "DSB2018: %d images, %d nuclei, %d images with overlapping nuclei (%d pixels)",
        summary["images"],
        summary["nuclei"],
        summary["images_with_overlaps"],
        summary["overlap_pixels"],
    )
    return summary


def _thread_pool(workers: int):
    """A thread pool for `workers` > 1, else a context yielding None (decode inline)."""
    if workers < 1:
        raise ValueError(f"workers: {workers!r} must be at least 1")
    return ThreadPoolExecutor(workers) if workers > 1 else contextlib.nullcontext()


def _count(summary: dict, instances: np.ndarray, meta: dict) -> None:
    summary["nuclei"] += int(np.count_nonzero(np.unique(instances)))
    overlap = meta["n_overlap_pixels"] or 0
    summary["images_with_overlaps"] += overlap > 0
    summary["overlap_pixels"] += overlap
    for key, value in (("layouts", meta["mask_layout"]), ("modalities", meta["modality_hint"])):
        summary[key][value] = summary[key].get(value, 0) + 1
