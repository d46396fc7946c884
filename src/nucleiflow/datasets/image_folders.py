"""A folder of your own images (optionally with masks) -> store.

Layout: ``images/<stem>.<png|tif|tiff>`` plus an optional ``masks/`` folder
whose files have the same stems (any of the same suffixes); the root may also
hold one wrapping folder. A mask is either

* an instance label image: 0 background, 1..n one id per nucleus (8/16/32-bit
  unsigned or signed integers, no negative values), stored as it is, or
* a binary mask: a single non-zero value (0/1, 0/255, bool). Its nuclei are the
  8-connected components, so touching nuclei merge. A label image that holds a
  single nucleus reads the same way, with the same result.

`mask_kind` in the store metadata records which (``labels`` or ``binary``).
Images without a mask are stored unlabelled (no ``instances`` dataset,
``labelled: false``): prediction reads them, training and evaluation skip them.

Pixels (`read_image`): PNG (Pillow) and TIFF (tifffile); 8 or 16-bit (or
32-bit/float TIFF), grey, RGB(A), or a multi-page / channel-first TIFF whose
pages are channels (first three pages -> red, green, blue; two pages -> red,
green). The store holds RGB uint8, by one rule: an 8-bit grey or RGB image is
kept as it is (grey repeated to three channels); any other image is stretched
per channel from its 0.5th to its 99.5th percentile onto 0-255 (a flat channel
becomes 0). `scaling` in the metadata records which.

Any bad input (a mask of another size than its image, a mask without an image,
an unreadable file, a label image with negative or non-integer values) stops
the conversion with one line naming the file, and no store is left.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from nucleiflow.errors import DataFormatError
from nucleiflow.image_keys import PNG_READ_ERRORS, content_hash, modality_features, modality_hint
from nucleiflow.store import BINARY_CLASS_NAMES, StoreWriter

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")
STRETCH_PERCENTILES = (0.5, 99.5)
EIGHT_CONNECTED = np.ones((3, 3), bool)
MAX_CHANNEL_PAGES = 4  # a leading axis this short (and a long last axis) is a stack of channel pages


@dataclass(frozen=True)
class FolderSample:
    image_id: str
    image: Path
    mask: Path | None


# ---------------------------------------------------------------- reading files


def read_array(path: Path) -> np.ndarray:
    """The raw pixel array of a PNG or TIFF; an unreadable file is a one-line error naming it."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            return np.asarray(tifffile.imread(path))
        with Image.open(path) as im:
            im.load()
            if im.mode == "P":  # palette indices are not intensities
                im = im.convert("RGBA")
            return np.asarray(im)
    except (*PNG_READ_ERRORS, tifffile.TiffFileError, KeyError, IndexError) as err:
        raise DataFormatError(f"{path}: unreadable image ({type(err).__name__}: {err})".replace("\n", " ")) from None


def channels_last(array: np.ndarray, path: Path) -> np.ndarray:
    """(H, W) or (H, W, C): channel-first stacks (multi-page TIFFs) are moved to the last axis."""
    array = np.squeeze(array) if array.ndim > 3 else array
    if array.ndim == 2:
        return array
    if array.ndim == 3:
        if array.shape[2] <= MAX_CHANNEL_PAGES:
            return array
        if array.shape[0] <= MAX_CHANNEL_PAGES:
            return np.moveaxis(array, 0, -1)
    raise DataFormatError(
        f"{path}: unsupported image shape {array.shape}; expected (H, W), (H, W, C) or C pages of (H, W) with C <= 4"
    )


def to_rgb_uint8(array: np.ndarray, path: Path) -> tuple[np.ndarray, str]:
    """(RGB uint8 image, scaling): 8-bit grey/RGB kept, anything else stretched per channel (module docstring)."""
    array = channels_last(array, path)
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise DataFormatError(f"{path}: unsupported pixel type {array.dtype}; expected 8/16-bit integers or floats")
    planes = array[..., None] if array.ndim == 2 else array
    if planes.shape[2] in (2, 4) and array.dtype == np.uint8 and path.suffix.lower() == ".png":
        planes = planes[..., :-1]  # grey+alpha or RGBA PNG: drop the alpha band
    elif planes.shape[2] == 4:
        planes = planes[..., :3]
    scaling = "none"
    if planes.dtype != np.uint8 or planes.shape[2] == 2:
        planes = np.stack([_stretch(planes[..., c]) for c in range(planes.shape[2])], axis=-1)
        scaling = "percentile_0.5_99.5"
    if planes.shape[2] == 1:
        planes = np.repeat(planes, 3, axis=2)
    elif planes.shape[2] == 2:
        planes = np.concatenate([planes, np.zeros_like(planes[..., :1])], axis=2)
    return np.ascontiguousarray(planes), scaling


def _stretch(channel: np.ndarray) -> np.ndarray:
    values = channel.astype(np.float64)
    finite = values[np.isfinite(values)]
    if not finite.size:
        return np.zeros(channel.shape, np.uint8)
    lo, hi = np.percentile(finite, STRETCH_PERCENTILES)
    if hi <= lo:
        return np.zeros(channel.shape, np.uint8)
    scaled = np.clip((np.nan_to_num(values, nan=lo) - lo) / (hi - lo), 0.0, 1.0)
    return np.round(scaled * 255).astype(np.uint8)


def read_image(path: Path) -> tuple[np.ndarray, dict]:
    """(RGB uint8 image, metadata on its source: dtype, channels, scaling)."""
    raw = read_array(path)
    image, scaling = to_rgb_uint8(raw, path)
    return image, {"source_dtype": str(raw.dtype), "source_shape": "x".join(map(str, raw.shape)), "scaling": scaling}


def read_mask(path: Path, shape: tuple[int, int], image_path: Path) -> tuple[np.ndarray, str]:
    """(int32 instance map, mask kind `labels` or `binary`) of one mask file, checked against its image."""
    array = read_array(path)
    if array.ndim == 3 and array.shape[2] in (2, 3, 4):  # an RGB(A) rendering of a grey mask
        if not all(np.array_equal(array[..., 0], array[..., c]) for c in range(1, min(3, array.shape[2]))):
            raise DataFormatError(f"{path}: colour mask; expected a single-channel label image or binary mask")
        array = array[..., 0]
    if array.ndim != 2:
        raise DataFormatError(f"{path}: mask must be a single 2-D image, got shape {array.shape}")
    if array.shape != shape:
        raise DataFormatError(f"{path}: mask size {array.shape} differs from image size {shape} ({image_path.name})")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise DataFormatError(
            f"{path}: label image holds {array.dtype} values; expected integers (0 background, 1..n nuclei)"
        )
    if array.size and array.min() < 0:
        raise DataFormatError(f"{path}: label image holds negative values (min {array.min()}); expected 0 and 1..n")
    if array.size and int(array.max()) > np.iinfo(np.int32).max:
        raise DataFormatError(f"{path}: label ids above {np.iinfo(np.int32).max} are not supported")
    values = np.unique(array)
    if len(values[values > 0]) <= 1:
        labels, _ = ndimage.label(array > 0, structure=EIGHT_CONNECTED, output=np.int32)
        return labels, "binary"
    return array.astype(np.int32), "labels"


# ---------------------------------------------------------------- finding samples


def layout_root(root: str | Path) -> Path:
    """The folder holding `images/`: `root` itself or its single wrapping subfolder."""
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"{root}: not a folder (expected a folder holding images/ and optionally masks/)")
    if (root / "images").is_dir():
        return root
    children = [p for p in root.iterdir() if not p.name.startswith(".")]
    if len(children) == 1 and (children[0] / "images").is_dir():
        return children[0]
    raise DataFormatError(f"{root}: no images/ folder (expected images/ and optionally masks/ with the same stems)")


def images_by_stem(folder: Path) -> dict[str, Path]:
    """{stem: path} of the image files of a flat folder; DataFormatError for another file or a repeated stem."""
    files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    found: dict[str, Path] = {}
    for path in files:
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataFormatError(f"{path}: not an image file (valid: {', '.join(IMAGE_SUFFIXES)} files)")
        if path.stem in found:
            raise DataFormatError(f"{path}: two files with stem {path.stem!r} ({found[path.stem].name})")
        found[path.stem] = path
    return found


def find_samples(root: str | Path) -> list[FolderSample]:
    """Every image of `root/images` with its mask (or None), in sorted stem order."""
    root = layout_root(root)
    images = images_by_stem(root / "images")
    if not images:
        raise DataFormatError(f"{root / 'images'}: no images (valid: {', '.join(IMAGE_SUFFIXES)} files)")
    masks = images_by_stem(root / "masks") if (root / "masks").is_dir() else {}
    orphans = sorted(set(masks) - set(images))
    if orphans:
        raise DataFormatError(f"{masks[orphans[0]]}: mask without an image (no images/{orphans[0]}.* file)")
    return [FolderSample(stem, images[stem], masks.get(stem)) for stem in sorted(images)]


# ---------------------------------------------------------------- converting


def read_sample(files: FolderSample) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """(RGB image, instance map or None, metadata) of one sample."""
    image, meta = read_image(files.image)
    instances, kind = (None, None) if files.mask is None else read_mask(files.mask, image.shape[:2], files.image)
    meta.update(
        {
            "source_file": files.image.name,
            "mask_file": files.mask.name if files.mask else None,
            "labelled": instances is not None,
            "mask_kind": kind,
            "modality_hint": modality_hint(image),
            "n_overlap_pixels": None,  # one label per pixel: overlaps cannot be known
            "content_hash": content_hash(image),
            **modality_features(image),
        }
    )
    return image, instances, meta


def convert_image_folders(roots: list[str | Path], out_path: str | Path, progress: bool = True) -> dict:
    """Convert image folders (layout above) into one store, atomically; returns a summary."""
    samples = [s for root in roots for s in find_samples(root)]
    ids = [s.image_id for s in samples]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise DataFormatError(f"{out_path}: image stem {duplicate!r} occurs in two source folders")
    summary: dict = {
        "images": len(samples),
        "labelled": 0,
        "unlabelled": 0,
        "nuclei": 0,
        "mask_kinds": {},
        "scaling": {},
    }
    with StoreWriter(out_path, "image_folders", BINARY_CLASS_NAMES) as writer:
        for files in tqdm(samples, desc="image folders", unit="img", disable=not progress):
            image, instances, meta = read_sample(files)
            writer.add(files.image_id, image, instances, **meta)
            if instances is None:
                summary["unlabelled"] += 1
            else:
                summary["labelled"] += 1
                summary["nuclei"] += int(np.count_nonzero(np.unique(instances)))
                summary["mask_kinds"][meta["mask_kind"]] = summary["mask_kinds"].get(meta["mask_kind"], 0) + 1
            summary["scaling"][meta["scaling"]] = summary["scaling"].get(meta["scaling"], 0) + 1
    log.info("image folders: %s", summary)
    return summary
