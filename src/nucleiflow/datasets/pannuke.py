"""PanNuke release (fold_N.zip of float64 .npy arrays) -> store.

A real fold is ~12.5 GB of float64. Each array is read one image at a time
with plain file reads into a reused buffer (`NpyRows`), not through a memory
map: pages of a map count towards the process's resident memory as they are
touched, so a mapped 12.5 GB fold would look (and, under a cgroup limit,
act) as big as the fold. Peak memory is a few images whatever the fold size.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nucleiflow.catalog import PANNUKE_CLASS_NAMES
from nucleiflow.errors import DataFormatError
from nucleiflow.image_keys import content_hash, modality_features
from nucleiflow.store import StoreWriter

log = logging.getLogger(__name__)

CLASS_NAMES = PANNUKE_CLASS_NAMES  # background + the five nucleus types (nucleiflow.catalog)
N_CLASS_CHANNELS = 5  # channel 5 of masks.npy is background
NPY_READ_ERRORS = (ValueError, OSError, EOFError)  # what np.load raises for a cut or corrupt file


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
            raise DataFormatError(
                f"{path}: missing from the unpacked PanNuke fold {fold} (expected the fold_{fold}.zip layout)"
            )
    return files


class NpyRows:
    """Row-by-row reader of a C-ordered .npy file: `rows[i]` is array[i], read from disk.

    The header, dtype and file size are checked by numpy on open (a cut file
    fails there, naming the file). `rows[i]` returns one reused buffer, valid
    until the next read; pages just read are dropped from the page cache so a
    pass over a 12 GB fold does not evict everything else on the node.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        header = _open_npy(self.path)
        if header.ndim < 1:
            raise DataFormatError(f"{self.path}: expected an array of images, got a scalar")
        if not header.flags.c_contiguous and header.size > 0:
            raise DataFormatError(f"{self.path}: Fortran-ordered arrays are not supported (re-save in C order)")
        self.shape, self.dtype, self._offset = header.shape, header.dtype, header.offset
        del header  # drop the memory map; rows are read with plain reads
        self._buffer = np.empty(self.shape[1:], self.dtype)
        self._row_bytes = self._buffer.nbytes
        self._file = open(self.path, "rb")  # noqa: SIM115 - held for the reader's lifetime, closed by close()

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> np.ndarray:
        start = self._offset + index * self._row_bytes
        self._file.seek(start)
        read = self._file.readinto(memoryview(self._buffer).cast("B"))
        if read != self._row_bytes:
            raise DataFormatError(f"{self.path}: file ends inside row {index} (truncated)")
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self._file.fileno(), start, self._row_bytes, os.POSIX_FADV_DONTNEED)
        return self._buffer

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> NpyRows:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open_npy(path: Path) -> np.ndarray:
    """Header-checked memory map of a .npy file (only its shape, dtype and offset are used)."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except NPY_READ_ERRORS as err:  # a cut file fails numpy's header or size check
        raise DataFormatError(f"{path}: cannot read .npy ({err}); the file is truncated or corrupt") from None


def _load_types(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except NPY_READ_ERRORS as err:
        raise DataFormatError(f"{path}: cannot read .npy ({err}); the file is truncated or corrupt") from None


def open_fold(root: str | Path, fold: int) -> tuple[NpyRows, NpyRows, np.ndarray]:
    """Row readers of (images, masks) and the in-memory tissue types of a fold, shape-checked."""
    files = fold_files(root, fold)
    images, masks = NpyRows(files["images"]), NpyRows(files["masks"])
    try:
        types = _load_types(files["types"])
        _check_fold_shapes(files, fold, images.shape, masks.shape, types.shape)
    except BaseException:
        images.close()
        masks.close()
        raise
    return images, masks, types


def _check_fold_shapes(files: dict[str, Path], fold: int, images: tuple, masks: tuple, types: tuple) -> None:
    if len(images) != 4 or images[3] != 3:
        raise DataFormatError(f"{files['images']}: fold {fold} images have shape {images}, expected (N, H, W, 3)")
    if images[0] == 0:
        raise DataFormatError(f"{files['images']}: fold {fold} holds no images")
    expected_masks = (*images[:3], N_CLASS_CHANNELS + 1)
    if masks != expected_masks:
        raise DataFormatError(f"{files['masks']}: fold {fold} masks have shape {masks}, expected {expected_masks}")
    if types != (images[0],):
        raise DataFormatError(f"{files['types']}: fold {fold} has {types} tissue names, expected ({images[0]},)")


def image_to_uint8(image: np.ndarray, where: str) -> np.ndarray:
    """Validate one float image (0-255, no NaN) and convert it to uint8."""
    if not np.isfinite(image).all():
        raise DataFormatError(f"{where}: image holds NaN or infinite values")
    lo, hi = float(image.min()), float(image.max())
    if lo < 0 or hi > 255:
        raise DataFormatError(f"{where}: image values span [{lo:g}, {hi:g}], expected 0-255")
    return np.rint(image).astype(np.uint8)


def merge_instances(mask: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Instance map (ids 1..n unique per image), class map (1-5) and overlapping pixel count of one (H, W, 6) mask.

    Instance ids in the release are unique per class channel, not per image, so
    each (channel, id) pair becomes one new id. A pixel claimed by two channels
    keeps the later channel's nucleus and is counted as overlapping.
    """
    ids = _instance_ids(mask[..., :N_CLASS_CHANNELS], where)
    h, w = ids.shape[:2]
    instances = np.zeros((h, w), np.int32)
    classes = np.zeros((h, w), np.uint8)
    next_id = 1
    for c in range(N_CLASS_CHANNELS):
        channel = ids[..., c]
        on = channel > 0
        present = np.unique(channel[on])
        if not len(present):
            continue
        # Map old ids to consecutive new ids with one lookup table per channel.
        lut = np.zeros(int(present[-1]) + 1, np.int32)
        lut[present] = np.arange(next_id, next_id + len(present), dtype=np.int32)
        instances[on] = lut[channel[on]]
        classes[on] = c + 1
        next_id += len(present)
    overlap = int(np.count_nonzero(np.count_nonzero(ids, axis=2) > 1))
    return instances, classes, overlap


def _instance_ids(channels: np.ndarray, where: str) -> np.ndarray:
    """Integer ids of the class channels; NaN, negative or fractional ids are errors."""
    if not np.isfinite(channels).all():
        raise DataFormatError(f"{where}: mask holds NaN or infinite ids")
    if channels.min() < 0:
        raise DataFormatError(f"{where}: mask holds negative ids (min {float(channels.min()):g})")
    ids = channels.astype(np.int64)
    if (ids != channels).any():
        raise DataFormatError(f"{where}: mask holds non-integer ids")
    return ids


def find_folds(roots: list[str | Path]) -> dict[int, Path]:
    """{fold number: unpacked root} from directories holding `Fold N/` folders."""
    folds: dict[int, Path] = {}
    for root in map(Path, roots):
        found = [p for p in root.glob("Fold *") if p.is_dir() and p.name.split()[-1].isdigit()]
        if not found:
            raise DataFormatError(
                f"{root}: no 'Fold N' folder (expected the layout of the PanNuke fold_N.zip releases)"
            )
        for path in found:
            fold = int(path.name.split()[-1])
            if fold in folds:
                raise DataFormatError(f"{path}: fold {fold} found twice (also in {folds[fold]})")
            folds[fold] = root
    return folds


def convert_fold(writer: StoreWriter, root: Path, fold: int, progress: bool = True) -> dict:
    """Add every image of one fold to `writer`; returns the fold's counts."""
    images, masks, types = open_fold(root, fold)
    counts = {"images": len(images), "nuclei": 0, "empty_images": 0, "images_with_overlaps": 0}
    with images, masks:
        for index in tqdm(range(len(images)), desc=f"PanNuke fold {fold}", unit="img", disable=not progress):
            image = image_to_uint8(images[index], f"{images.path}: fold {fold} image {index}")
            instances, classes, overlap = merge_instances(masks[index], f"{masks.path}: fold {fold} image {index}")
            writer.add(
                f"fold{fold}_{index:04d}",
                image,
                instances,
                classes,
                tissue=str(types[index]),
                fold=int(fold),
                source_index=int(index),
                content_hash=content_hash(image),
                n_overlap_pixels=overlap,
                **modality_features(image),
            )
            n = int(np.count_nonzero(np.unique(instances)))
            counts["nuclei"] += n
            counts["empty_images"] += n == 0
            counts["images_with_overlaps"] += overlap > 0
    return counts


def convert_pannuke(roots: list[str | Path], out_path: str | Path, progress: bool = True) -> dict:
    """Convert unpacked fold archives into one store; returns a summary.

    The store is written atomically: on any error no store (and no temporary) is left.
    """
    folds = find_folds(roots)
    summary: dict = {"images": 0, "nuclei": 0, "empty_images": 0, "images_with_overlaps": 0, "per_fold": {}}
    with StoreWriter(out_path, "pannuke", CLASS_NAMES) as writer:
        for fold in sorted(folds):
            counts = convert_fold(writer, folds[fold], fold, progress)
            summary["per_fold"][fold] = counts
            for key in ("images", "nuclei", "empty_images", "images_with_overlaps"):
                summary[key] += counts[key]
            log.info("PanNuke fold %d: %s", fold, counts)
    return summary
