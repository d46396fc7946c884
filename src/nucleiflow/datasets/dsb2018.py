"""DSB2018 release (one PNG per nucleus) -> store.

Per-nucleus masks are merged into an instance map (and so a binary mask by
pixel-wise maximum); images keep their native size, and RGBA / grayscale are
normalised to RGB. Overlapping nuclei are counted and reported.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..errors import DataFormatError
from ..store import BINARY_CLASS_NAMES, StoreWriter

log = logging.getLogger(__name__)


def read_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except Exception as err:  # PIL raises several types for broken files
        raise DataFormatError(f"{path}: unreadable image ({err})") from None


def to_rgb(array: np.ndarray, where: Path) -> np.ndarray:
    """RGB uint8 from grayscale, RGB or RGBA (alpha dropped: it is constant in the release)."""
    if array.dtype == np.uint16:
        array = (array / 257).round().astype(np.uint8)
    if array.dtype != np.uint8:
        raise DataFormatError(f"{where}: unsupported pixel type {array.dtype}")
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return np.ascontiguousarray(array[..., :3])
    raise DataFormatError(f"{where}: unsupported image shape {array.shape}")


def modality_hint(image: np.ndarray) -> str:
    """Coarse imaging look from colour statistics: fluorescence, brightfield or he."""
    mean = image.reshape(-1, 3).mean(axis=0)
    spread = float(mean.max() - mean.min())
    if mean.mean() < 100:
        return "fluorescence"
    return "he" if spread > 20 else "brightfield"


def merge_masks(mask_paths: list[Path], shape: tuple[int, int], where: Path) -> tuple[np.ndarray, int]:
    """Instance map from one binary PNG per nucleus; returns (instances, overlapping pixels)."""
    instances = np.zeros(shape, np.int32)
    coverage = np.zeros(shape, np.uint8)
    for k, path in enumerate(mask_paths, start=1):
        mask = read_png(path)
        if mask.ndim == 3:
            mask = mask[..., 0]
        if mask.shape != shape:
            raise DataFormatError(f"{path}: mask size {mask.shape} differs from image size {shape} ({where.name})")
        on = mask > 0
        instances[on] = k
        coverage += on
    return instances, int((coverage > 1).sum())


def sample_dirs(root: Path) -> list[Path]:
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise DataFormatError(f"{root}: no image folders (expected <id>/images/<id>.png and <id>/masks/*.png)")
    return dirs


def read_sample(sample_dir: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    image_id = sample_dir.name
    image_path = sample_dir / "images" / f"{image_id}.png"
    if not image_path.is_file():
        raise DataFormatError(f"{sample_dir}: missing images/{image_id}.png")
    mask_dir = sample_dir / "masks"
    files = sorted(mask_dir.iterdir()) if mask_dir.is_dir() else []
    stray = [p for p in files if p.suffix.lower() != ".png"]
    if stray:
        raise DataFormatError(f"{stray[0]}: not a PNG mask (only <mask>.png files belong in {mask_dir})")
    if not files:
        raise DataFormatError(f"{mask_dir}: image {image_id} has no mask files")
    raw = read_png(image_path)
    image = to_rgb(raw, image_path)
    instances, overlap = merge_masks(files, image.shape[:2], sample_dir)
    meta = {
        "modality_hint": modality_hint(image),
        "source_mode": {2: "L", 3: "RGB", 4: "RGBA"}.get(raw.ndim if raw.ndim == 2 else raw.shape[2], "?"),
        "n_mask_files": len(files),
        "n_overlap_pixels": overlap,
        "content_hash": hashlib.sha256(image.tobytes() + str(image.shape).encode()).hexdigest(),
    }
    return image, instances, meta


def convert_dsb2018(roots: list[str | Path], out_path: str | Path, progress: bool = True) -> dict:
    """Convert unpacked stage1_train-style folders into one store; returns a summary."""
    dirs = [d for root in roots for d in sample_dirs(Path(root))]
    overlapping = 0
    with StoreWriter(out_path, "dsb2018", BINARY_CLASS_NAMES) as writer:
        for sample_dir in tqdm(dirs, desc="DSB2018", unit="img", disable=not progress):
            image, instances, meta = read_sample(sample_dir)
            writer.add(sample_dir.name, image, instances, **meta)
            overlapping += meta["n_overlap_pixels"] > 0
    summary = {"images": len(dirs), "images_with_overlaps": overlapping}
    log.info("DSB2018: %d images, %d with overlapping nuclei", len(dirs), overlapping)
    return summary
