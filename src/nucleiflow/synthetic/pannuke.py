"""Synthetic PanNuke folds in the release layout.

A fold is distributed as `fold_N.zip` holding

* `Fold N/images/foldN/images.npy`: float64 (n, 256, 256, 3), RGB values 0-255
* `Fold N/images/foldN/types.npy`: unicode (n,), the tissue of each image
* `Fold N/masks/foldN/masks.npy`: float64 (n, 256, 256, 6); channels 0-4 hold
  instance ids (positive, unique within an image, not consecutive) of the
  neoplastic, inflammatory, connective, dead and epithelial nuclei; channel 5
  is 1 on background and 0 on nuclei.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nucleiflow.synthetic import npy_bytes, write_zip
from nucleiflow.synthetic.shapes import layout_nuclei, random_nucleus, render_he

IMAGE_SIZE = 256
TISSUES = (
    "Adrenal_gland",
    "Bile-duct",
    "Bladder",
    "Breast",
    "Cervix",
    "Colon",
    "Esophagus",
    "HeadNeck",
    "Kidney",
    "Liver",
    "Lung",
    "Ovarian",
    "Pancreatic",
    "Prostate",
    "Skin",
    "Stomach",
    "Testis",
    "Thyroid",
    "Uterus",
)
CLASS_NAMES = ("neoplastic", "inflammatory", "connective", "dead", "epithelial")
BACKGROUND_CHANNEL = len(CLASS_NAMES)
# Each class has its own look (radius range px, axis-ratio range, boundary irregularity), so the
# classes are learnable: big irregular tumour nuclei, small round lymphocytes, spindle fibroblasts...
CLASS_SHAPES = (
    ((8.0, 13.0), (1.0, 1.5), 0.10),
    ((4.0, 6.0), (1.0, 1.15), 0.03),
    ((4.0, 7.0), (2.0, 3.2), 0.04),
    ((3.0, 5.5), (1.0, 1.4), 0.18),
    ((6.0, 9.5), (1.0, 1.4), 0.06),
)
# Dirichlet concentration of the per-image class mix; dead nuclei are rare, as in the release.
CLASS_MIX = np.array([2.0, 1.5, 1.5, 0.2, 1.5])
NUCLEI_PER_IMAGE = (10, 70)


def member_names(fold: int) -> dict[str, str]:
    """Zip member name of each array of fold `fold` (keys: images, types, masks)."""
    return {
        "images": f"Fold {fold}/images/fold{fold}/images.npy",
        "types": f"Fold {fold}/images/fold{fold}/types.npy",
        "masks": f"Fold {fold}/masks/fold{fold}/masks.npy",
    }


def make_sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
    """One image: float64 (256, 256, 3) RGB, float64 (256, 256, 6) masks, tissue name."""
    tissue = TISSUES[rng.integers(len(TISSUES))]
    mix = rng.dirichlet(CLASS_MIX)

    def make_nucleus(rng: np.random.Generator):
        kind = int(rng.choice(len(CLASS_NAMES), p=mix))
        radius, elongation, irregularity = CLASS_SHAPES[kind]
        return random_nucleus(rng, radius, elongation, irregularity, kind)

    count = int(rng.integers(*NUCLEI_PER_IMAGE, endpoint=True))
    labels, nuclei = layout_nuclei(rng, (IMAGE_SIZE, IMAGE_SIZE), count, make_nucleus, touching=0.6)
    image = render_he(rng, labels).astype(np.float64)
    return image, _masks(rng, labels, [n.kind for n in nuclei]), tissue


def _masks(rng: np.random.Generator, labels: np.ndarray, kinds: list[int]) -> np.ndarray:
    """The 6-channel mask stack of a label map whose label k has class `kinds[k - 1]`."""
    n = len(kinds)
    # Release ids are arbitrary positive integers, unique within an image, with gaps.
    instance_id = np.concatenate([[0], rng.choice(np.arange(1, 3 * n + 2), size=n, replace=False)])
    kind = np.array([-1, *kinds])
    masks = np.zeros((*labels.shape, BACKGROUND_CHANNEL + 1), np.float64)
    for channel in range(BACKGROUND_CHANNEL):
        masks[..., channel] = np.where(kind[labels] == channel, instance_id[labels], 0)
    masks[..., BACKGROUND_CHANNEL] = labels == 0
    return masks


def make_fold(n_images: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`n_images` samples as the release arrays: (images, masks, types).

    Each image draws from its own child generator, so one image can be
    regenerated alone (e.g. to stream a full-size fold) and the cost is linear in n.
    """
    images = np.zeros((n_images, IMAGE_SIZE, IMAGE_SIZE, 3), np.float64)
    masks = np.zeros((n_images, IMAGE_SIZE, IMAGE_SIZE, BACKGROUND_CHANNEL + 1), np.float64)
    tissues = []
    for index, child in enumerate(rng.spawn(n_images)):
        images[index], masks[index], tissue = make_sample(child)
        tissues.append(tissue)
    return images, masks, np.array(tissues, dtype=str)


def write_fold_zip(path: str | os.PathLike, fold: int, n_images: int, seed: int) -> Path:
    """Write `fold_N.zip` for fold `fold` at `path` (atomically); return the path."""
    # The fold number enters the seed so that the folds of one seed differ.
    images, masks, types = make_fold(n_images, np.random.default_rng([seed, fold]))
    names = member_names(fold)
    return write_zip(
        path, {names["images"]: npy_bytes(images), names["types"]: npy_bytes(types), names["masks"]: npy_bytes(masks)}
    )
