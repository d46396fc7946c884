"""PanNuke release (fold_N.zip of float64 .npy arrays) -> store.

Each fold is read through a memory map one image at a time, so peak memory is
one image whatever the fold size (a real fold is ~12.5 GB of float64).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import DataFormatError
from ..store import StoreWriter

log = logging.getLogger(__name__)

CLASS_NAMES = ("background", "neoplastic", "inflammatory", "connective", "dead", "epithelial")
N_CLASS_CHANNELS = 5  # channel 5 of masks.npy is background


def fold_files(root: str | Path, fold: int) -> dict[str, Path]:
    """Paths of the three arrays of `fold` inside an unpacked fold_N.zip."""
    root = Path(root)
    base = root / f"Fold {fold}"
    files = {
        "images": base / "images" / f"fold{fold}" / "images.npy",
        "types": base / "images" / f"fold{fold}" / "types.npy",
        "masks": base / "masks" / f"fold{fold}" / "masks.npy",
    }
    for path in files.values():
        if not path.is_file():
            raise DataFormatError(f"{path}: missing from the unpacked PanNuke fold {fold} (expected the fold_{fold}.zip layout)")
    return files


def _open_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:  # a truncated file fails the mmap size check
        raise DataFormatError(f"{path}: cannot read .npy ({err}); the file is truncated or corrupt") from None


def open_fold(root: str | Path, fold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Memory-mapped (images, masks) and the in-memory tissue types of a fold, shape-checked."""
    files = fold_files(root, fold)
    images = _open_array(files["images"])
    masks = _open_array(files["masks"])
    types = np.load(files["types"], allow_pickle=False)
    n = images.shape[0]
    if n == 0:
        raise DataFormatError(f"{files['images']}: fold {fold} holds no images")
    if images.ndim != 4 or images.shape[3] != 3:
        raise DataFormatError(f"{files['images']}: expected (N, H, W, 3), got {images.shape}")
    if masks.shape[:3] != images.shape[:3] or masks.ndim != 4 or masks.shape[3] != N_CLASS_CHANNELS + 1:
        raise DataFormatError(f"{files['masks']}: expected {(*images.shape[:3], N_CLASS_CHANNELS + 1)}, got {masks.shape}")
    if types.shape != (n,):
        raise DataFormatError(f"{files['types']}: expected {n} tissue names, got shape {types.shape}")
    return images, masks, types


def image_to_uint8(image: np.ndarray, where: str) -> np.ndarray:
    """Validate one float image (0-255, no NaN) and convert it to uint8."""
    if not np.isfinite(image).all():
        raise DataFormatError(f"{where}: image holds NaN or infinite values")
    lo, hi = float(image.min()), float(image.max())
    if lo < 0 or hi > 255:
        raise DataFormatError(f"{where}: image values span [{lo:g}, {hi:g}], expected 0-255")
    return np.rint(image).astype(np.uint8)


def merge_instances(mask: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Instance map (ids 1..n unique per image) and class map (1-5) from one (H, W, 6) mask.

    Instance ids in the release are unique per class channel, not per image, so
    each (channel, id) pair becomes one new id.
    """
    channels = np.asarray(mask[..., :N_CLASS_CHANNELS])
    if not np.isfinite(channels).all() or channels.min() < 0:
        raise DataFormatError(f"{where}: mask holds NaN or negative ids")
    channels = channels.astype(np.int64)
    h, w = channels.shape[:2]
    instances = np.zeros((h, w), np.int32)
    classes = np.zeros((h, w), np.uint8)
    next_id = 1
    for c in range(N_CLASS_CHANNELS):
        ids = channels[..., c]
        present = np.unique(ids)
        present = present[present > 0]
        if not len(present):
            continue
        # Map old ids to consecutive new ids with one lookup table per channel.
        lut = np.zeros(int(present.max()) + 1, np.int32)
        lut[present] = np.arange(next_id, next_id + len(present), dtype=np.int32)
        on = ids > 0
        instances[on] = lut[ids[on]]
        classes[on] = c + 1
        next_id += len(present)
    return instances, classes


def find_folds(roots: list[str | Path]) -> dict[int, Path]:
    """{fold number: unpacked root} from directories holding `Fold N/` folders."""
    folds: dict[int, Path] = {}
    for root in map(Path, roots):
        found = [p for p in root.glob("Fold *") if p.is_dir() and p.name.split()[-1].isdigit()]
        if not found:
            raise DataFormatError(f"{root}: no 'Fold N' folder (expected the layout of the PanNuke fold_N.zip releases)")
        for path in found:
            fold = int(path.name.split()[-1])
            if fold in folds:
                raise DataFormatError(f"{path}: fold {fold} found twice (also in {folds[fold]})")
            folds[fold] = root
    return folds


def convert_pannuke(roots: list[str | Path], out_path: str | Path, progress: bool = True) -> dict:
    """Convert unpacked fold archives into one store; returns a summary."""
    folds = find_folds(roots)
    summary = {"images": 0, "nuclei": 0, "per_fold": {}}
    with StoreWriter(out_path, "pannuke", CLASS_NAMES) as writer:
        for fold in sorted(folds):
            images, masks, types = open_fold(folds[fold], fold)
            n = images.shape[0]
            nuclei = 0
            for index in tqdm(range(n), desc=f"PanNuke fold {fold}", unit="img", disable=not progress):
                where = f"fold {fold} image {index}"
                image = image_to_uint8(np.asarray(images[index]), where)
                instances, classes = merge_instances(masks[index], where)
                writer.add(
                    f"fold{fold}_{index:04d}", image, instances, classes,
                    tissue=str(types[index]), fold=int(fold), source_index=int(index),
                )
                nuclei += int(instances.max())
            summary["per_fold"][fold] = {"images": n, "nuclei": nuclei}
            summary["images"] += n
            summary["nuclei"] += nuclei
            log.info("PanNuke fold %d: %d images, %d nuclei", fold, n, nuclei)
    return summary
