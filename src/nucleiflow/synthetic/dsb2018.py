"""Synthetic Data Science Bowl 2018 stage 1 training set in the release layout.

`stage1_train.zip` holds, per image, `<id>/images/<id>.png` and one
`<id>/masks/<mask_id>.png` per nucleus (uint8 grey, 255 on the nucleus, 0
elsewhere); ids are 64 hex characters. As in the release the images mix
modalities (fluorescence saved as RGBA with equal RGB channels, brightfield
and H&E as RGB) and sizes; nuclei touch and a few masks overlap by a pixel or two.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from nucleiflow.synthetic import png_bytes, write_zip
from nucleiflow.synthetic.shapes import (
    dilate,
    layout_nuclei,
    random_nucleus,
    render_brightfield,
    render_fluorescence,
    render_he,
    touching_pairs,
)

# Repeating pattern of modalities: fluorescence dominates, as in the release,
# and any three consecutive images cover all three modalities.
MODALITY_PATTERN = ("fluorescence", "brightfield", "histology", "fluorescence", "fluorescence")
RENDERERS = {"fluorescence": render_fluorescence, "brightfield": render_brightfield, "histology": render_he}
# (height, width); small for speed, mostly not square.
SIZES = ((96, 128), (128, 128), (128, 176), (160, 160), (176, 240), (200, 256), (256, 256), (256, 200), (112, 224))
# Per modality: radius range px, axis-ratio range, irregularity, nuclei per 10,000 px.
NUCLEUS_LOOKS = {
    "fluorescence": ((4.0, 11.0), (1.0, 1.6), 0.06, 8.0),
    "brightfield": ((6.0, 13.0), (1.0, 1.5), 0.08, 4.0),
    "histology": ((4.0, 8.0), (1.0, 1.8), 0.10, 14.0),
}
OVERLAP_PROBABILITY = 0.3  # share of images where a couple of masks overlap a little
MAX_OVERLAP_PIXELS = 2


def image_id(seed: int, index: int) -> str:
    """64-hex-character image id, stable for (seed, index)."""
    return hashlib.sha256(f"dsb2018-synthetic:{seed}:{index}".encode()).hexdigest()


def mask_id(image: str, index: int) -> str:
    """64-hex-character mask id, stable for (image id, nucleus index)."""
    return hashlib.sha256(f"{image}:mask:{index}".encode()).hexdigest()


def make_sample(rng: np.random.Generator, modality: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """One image (uint8 RGBA for fluorescence, RGB otherwise) and its boolean nucleus masks."""
    height, width = SIZES[rng.integers(len(SIZES))]
    labels = _label_map(rng, (height, width), modality)
    masks = [labels == label for label in range(1, labels.max() + 1)]
    _overlap_a_few(rng, labels, masks)
    image = RENDERERS[modality](rng, labels)
    if modality == "fluorescence":
        image = np.dstack([image, image, image, np.full_like(image, 255)])
    return image, masks


def _label_map(rng: np.random.Generator, shape: tuple[int, int], modality: str) -> np.ndarray:
    """Label map with at least one nucleus (every release image has a mask)."""
    radius, elongation, irregularity, density = NUCLEUS_LOOKS[modality]
    count = max(2, round(density * shape[0] * shape[1] / 10_000 * rng.uniform(0.5, 1.5)))
    labels = np.zeros(shape, np.int32)
    while labels.max() == 0:
        labels, _ = layout_nuclei(
            rng, shape, count, lambda r: random_nucleus(r, radius, elongation, irregularity), touching=0.4
        )
    return labels


def _overlap_a_few(rng: np.random.Generator, labels: np.ndarray, masks: list[np.ndarray]) -> None:
    """In some images, grow one or two masks by a pixel or two into a touching neighbour."""
    pairs = touching_pairs(labels)
    if not pairs or rng.random() >= OVERLAP_PROBABILITY:
        return
    for pair_index in rng.choice(len(pairs), size=min(2, len(pairs)), replace=False):
        grown, neighbour = pairs[pair_index]
        ys, xs = np.nonzero(dilate(masks[grown - 1]) & (labels == neighbour))
        take = rng.integers(1, MAX_OVERLAP_PIXELS, endpoint=True)
        masks[grown - 1][ys[:take], xs[:take]] = True


def archive_entries(n_images: int, seed: int) -> dict[str, bytes]:
    """Zip member name -> PNG bytes for `n_images` images."""
    rng = np.random.default_rng(seed)
    modalities = rng.permutation([MODALITY_PATTERN[i % len(MODALITY_PATTERN)] for i in range(n_images)])
    entries = {}
    for index, (child, modality) in enumerate(zip(rng.spawn(n_images), modalities)):
        image, masks = make_sample(child, str(modality))
        iid = image_id(seed, index)
        entries[f"{iid}/images/{iid}.png"] = png_bytes(image)
        for k, mask in enumerate(masks):
            entries[f"{iid}/masks/{mask_id(iid, k)}.png"] = png_bytes(mask.astype(np.uint8) * 255)
    return entries


def write_stage1_zip(path: str | os.PathLike, n_images: int, seed: int) -> Path:
    """Write `stage1_train.zip` with `n_images` images at `path` (atomically); return the path."""
    return write_zip(path, archive_entries(n_images, seed))
