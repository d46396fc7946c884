"""HoVer-Net's label layout (CoNSeP, Kumar, CPM-17: `Images/` + `Labels/*.mat`) -> store.

Layout: a folder (or one wrapping folder level, e.g. CoNSeP's ``Train/``) holding
``Images/<name>.<png|jpg|jpeg|tif|tiff>`` and ``Labels/<name>.mat`` (MATLAB v5, as
HoVer-Net's release writes them) with

* ``inst_map`` (H, W) integers: 0 background, 1..N one id per nucleus;
* ``inst_type`` (N, 1) the type of nucleus i (1-based, HoVer-Net's order), or
  ``type_map`` (H, W) the type per pixel when ``inst_type`` is absent (Kumar's
  files carry no types: every nucleus is then class 1).

The store's `classes` map gives each nucleus's pixels its type (0 background),
and its class names are ``background`` followed by the dataset config's
`classes` (CoNSeP merged: other, inflammatory, epithelial, spindle-shaped), so
the type head, per-class PQ and mPQ use those names. A type above the number
of named classes is a one-line error naming the file.

`source_image` in the metadata is the name with a trailing ``_<digits>`` patch
index removed (CoNSeP patches ``train_<k>_<nnn>`` come from image ``train_<k>``):
the split scheme's `group_by: source_image` keeps one image's patches together.

Any bad input (an image without a label file or the reverse, a .mat without
``inst_map``, a label map of another size than its image) stops the conversion
with one line naming the file and the element; no store is left.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from nucleiflow.catalog import CONSEP_CLASSES  # the default when the config names none
from nucleiflow.datasets.image_folders import read_image
from nucleiflow.errors import DataFormatError
from nucleiflow.image_keys import content_hash, modality_features
from nucleiflow.store import StoreWriter

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
IMAGES, LABELS = "Images", "Labels"
PATCH_INDEX = re.compile(r"^(?P<image>.+)_\d+$")
MAT_READ_ERRORS = (ValueError, OSError, TypeError, NotImplementedError, scipy.io.matlab.MatReadError)


def source_image(name: str) -> str:
    """The image a patch was cut from: `train_3_012` -> `train_3`; a name without a patch index is its own."""
    match = PATCH_INDEX.match(name)
    return match["image"] if match else name


def layout_root(root: str | Path) -> Path:
    """The folder holding `Images/` and `Labels/`: `root` itself or one subfolder of it (CoNSeP's Train/)."""
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"{root}: not a folder (expected {IMAGES}/ and {LABELS}/ with .mat label files)")
    if (root / IMAGES).is_dir():
        return root
    children = [p for p in sorted(root.iterdir()) if p.is_dir() and (p / IMAGES).is_dir()]
    if len(children) == 1:
        return children[0]
    raise DataFormatError(f"{root}: no {IMAGES}/ folder (expected {IMAGES}/ and {LABELS}/*.mat, HoVer-Net's layout)")


def find_pairs(root: str | Path) -> list[tuple[str, Path, Path]]:
    """(name, image, label file) of every image, sorted by name; an image without labels or the reverse is an error."""
    root = layout_root(root)
    if not (root / LABELS).is_dir():
        raise DataFormatError(f"{root / LABELS}: missing (expected one <name>.mat per image of {IMAGES}/)")
    images = {p.stem: p for p in (root / IMAGES).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    labels = {p.stem: p for p in (root / LABELS).iterdir() if p.suffix.lower() == ".mat"}
    if not images:
        raise DataFormatError(f"{root / IMAGES}: holds no image (valid: {', '.join(IMAGE_SUFFIXES)} files)")
    for stem in sorted(set(images) - set(labels)):
        raise DataFormatError(f"{images[stem]}: image without a label file ({LABELS}/{stem}.mat missing)")
    for stem in sorted(set(labels) - set(images)):
        raise DataFormatError(f"{labels[stem]}: label file without an image (no {IMAGES}/{stem}.* file)")
    return [(stem, images[stem], labels[stem]) for stem in sorted(images)]


def read_labels(path: Path, n_classes: int) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    """(int32 instance map, uint8 class map, {nucleus id: type}) of one HoVer-Net .mat file."""
    try:
        mat = scipy.io.loadmat(path)
    except MAT_READ_ERRORS as err:
        raise DataFormatError(
            f"{path}: unreadable .mat file ({type(err).__name__}: {err})".replace("\n", " ")
        ) from None
    if "inst_map" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise DataFormatError(f"{path}: no inst_map in the .mat file (has {keys}; expected HoVer-Net's label layout)")
    inst = np.asarray(mat["inst_map"])
    if inst.ndim != 2 or not (np.issubdtype(inst.dtype, np.integer) or np.issubdtype(inst.dtype, np.floating)):
        raise DataFormatError(f"{path}: inst_map must be a 2-D integer map, got {inst.dtype} {inst.shape}")
    if inst.size and (inst.min() < 0 or not np.array_equal(inst, np.round(inst))):
        raise DataFormatError(f"{path}: inst_map holds negative or fractional values; expected 0 and 1..N")
    instances = inst.astype(np.int32)
    ids = np.unique(instances)
    ids = ids[ids > 0]
    types = _nucleus_types(mat, instances, ids, path)
    bad = {i: t for i, t in types.items() if not 1 <= t <= n_classes}
    if bad:
        nucleus, kind = next(iter(bad.items()))
        raise DataFormatError(
            f"{path}: nucleus {nucleus} has type {kind}; the dataset's classes name types 1..{n_classes}"
        )
    lookup = np.zeros(int(instances.max(initial=0)) + 1, np.uint8)
    for nucleus, kind in types.items():
        lookup[nucleus] = kind
    return instances, lookup[instances], types


def _nucleus_types(mat: dict, instances: np.ndarray, ids: np.ndarray, path: Path) -> dict[int, int]:
    if "inst_type" in mat:
        column = np.asarray(mat["inst_type"]).reshape(-1)
        if len(ids) and ids.max() > len(column):
            raise DataFormatError(
                f"{path}: inst_type has {len(column)} entries but inst_map holds nucleus id {int(ids.max())}"
            )
        return {int(i): int(column[i - 1]) for i in ids}
    if "type_map" in mat:
        type_map = np.asarray(mat["type_map"]).astype(np.int64)
        if type_map.shape != instances.shape:
            raise DataFormatError(f"{path}: type_map {type_map.shape} and inst_map {instances.shape} differ in size")
        # Majority type of each nucleus's pixels.
        return {int(i): int(np.bincount(type_map[instances == i].clip(0)).argmax()) for i in ids}
    return {int(i): 1 for i in ids}


def convert_hovernet_mat(
    roots: list[str | Path], out_path: str | Path, class_names=CONSEP_CLASSES, progress: bool = True
) -> dict:
    """Convert HoVer-Net label folders (layout above) into one store, atomically; returns a summary."""
    class_names = list(class_names)
    pairs = [pair for root in roots for pair in find_pairs(root)]
    per_class: dict[str, int] = dict.fromkeys(class_names, 0)
    with StoreWriter(out_path, "hovernet_mat", ["background", *class_names]) as writer:
        for name, image_path, label_path in tqdm(pairs, desc="HoVer-Net .mat", unit="img", disable=not progress):
            image, meta = read_any_image(image_path)
            instances, classes, types = read_labels(label_path, len(class_names))
            if instances.shape != image.shape[:2]:
                raise DataFormatError(
                    f"{label_path}: inst_map size {instances.shape} differs from image size {image.shape[:2]} "
                    f"({image_path.name})"
                )
            writer.add(
                name,
                image,
                instances,
                classes,
                source_file=image_path.name,
                label_file=label_path.name,
                source_image=source_image(name),
                content_hash=content_hash(image),
                n_overlap_pixels=None,  # one label per pixel: overlaps cannot be known
                **meta,
                **modality_features(image),
            )
            for kind in types.values():
                per_class[class_names[kind - 1]] += 1
    summary = {
        "images": len(pairs),
        "nuclei": sum(per_class.values()),
        "source_images": len({source_image(name) for name, _, _ in pairs}),
        "nuclei_per_class": per_class,
    }
    log.info("HoVer-Net .mat: %s", summary)
    return summary


def read_any_image(path: Path) -> tuple[np.ndarray, dict]:
    """(RGB uint8 image, metadata) of a PNG, TIFF or JPEG (CoNSeP's patches) H&E image.

    PNG and TIFF go through `image_folders.read_image`; JPEG, and an 8-bit RGB TIFF whose compression
    tifffile cannot decode without its optional codecs (MoNuSeg's TIFFs are LZW), through Pillow.
    """
    if path.suffix.lower() not in (".jpg", ".jpeg"):
        try:
            return read_image(path)
        except DataFormatError as err:
            if path.suffix.lower() not in (".tif", ".tiff"):
                raise
            fallback = err
    else:
        fallback = None
    try:
        with Image.open(path) as im:
            mode = im.mode
            array = np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise (fallback or DataFormatError(f"{path}: unreadable image ({type(err).__name__}: {err})")) from None
    if fallback is not None and mode not in ("RGB", "RGBA"):
        raise fallback  # not plain 8-bit colour: what Pillow would make of it is not what read_image promises
    return array, {"source_dtype": "uint8", "source_shape": "x".join(map(str, array.shape)), "scaling": "none"}
