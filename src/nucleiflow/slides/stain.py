"""Stain normalisation of a whole slide to a reference (Macenko et al., ISBI 2009), one transform per slide.

A per-tile normaliser (as torchstain's `normalize`, which estimates the stains of each image it is given)
would give neighbouring tiles different colours and the model different inputs on either side of a tile
border. Here the slide's H and E optical-density vectors and its 99th-percentile stain concentrations are
estimated once, from the tissue pixels of the low-resolution image the tissue mask was detected on
(`estimate_slide_stains`, at planning), and recorded in the plan; every window of every job is then mapped
with the same linear transform in optical density (`SlideStainNormaliser`): concentrations from the
slide's vectors, scaled to the reference's maxima, recomposed with the reference's vectors. The reference
is torchstain's (the H&E vectors and maxima of Macenko's reference implementation) or the stains torchstain's
Macenko fit finds in a reference image (e.g. a tile of the model's training data).

The model sees normalised pixels; the per-nucleus stain intensities of the outputs are measured on the
slide's own pixels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nucleiflow.errors import DataFormatError

log = logging.getLogger(__name__)

# torchstain's (and Macenko's reference implementation's) constants: transmitted light, the angular
# percentile of the extreme stain directions, the optical density below which a pixel is background.
LIGHT, ALPHA, BETA = 240, 1, 0.15
MIN_TISSUE_PIXELS = 500  # fewer stained pixels than this give no stable estimate: the slide is left as it is


@dataclass(frozen=True)
class StainMatrix:
    """H and E unit optical-density vectors (3 x 2, columns H then E) and their 99th-percentile concentrations."""

    vectors: tuple[tuple[float, float], tuple[float, float], tuple[float, float]]
    max_concentrations: tuple[float, float]

    @classmethod
    def from_dict(cls, record: dict) -> StainMatrix:
        return cls(
            tuple(tuple(float(v) for v in row) for row in record["vectors"]),  # type: ignore[arg-type]
            tuple(float(v) for v in record["max_concentrations"]),  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict:
        return {"vectors": [list(row) for row in self.vectors], "max_concentrations": list(self.max_concentrations)}


def _macenko(pixels: np.ndarray | None = None) -> StainMatrix:
    """torchstain's Macenko stains: its default reference, or its fit of RGB uint8 pixels (N, 3)."""
    import torchstain

    normaliser = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    if pixels is not None:
        normaliser.fit(np.ascontiguousarray(pixels.reshape(-1, 1, 3)), Io=LIGHT, alpha=ALPHA, beta=BETA)
    vectors = np.asarray(normaliser.HERef, np.float64)
    maxima = np.asarray(normaliser.maxCRef, np.float64)
    return StainMatrix(tuple(map(tuple, vectors.tolist())), tuple(maxima.tolist()))  # type: ignore[arg-type]


def reference_stains(reference: str | Path | None = None) -> StainMatrix:
    """The target stains: torchstain's default reference, or torchstain's Macenko fit of an RGB image file."""
    if reference is None:
        return _macenko()
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(reference) as image:
            pixels = np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError) as err:
        raise DataFormatError(
            f"{reference}: not a readable RGB image for stain_normalisation.reference ({err})"
        ) from None
    stained = _stained(pixels.reshape(-1, 3))
    if len(stained) < MIN_TISSUE_PIXELS:
        raise DataFormatError(
            f"{reference}: {len(stained)} stained pixels; a stain reference needs H&E tissue ({MIN_TISSUE_PIXELS}+ px)"
        )
    return _macenko(stained)


def _stained(pixels: np.ndarray) -> np.ndarray:
    """The pixels with optical density at least BETA in every channel (torchstain's tissue rule)."""
    od = -np.log((pixels.astype(np.float64) + 1) / LIGHT)
    return pixels[~np.any(od < BETA, axis=1)]


def estimate_slide_stains(thumbnail: np.ndarray, tissue: np.ndarray) -> StainMatrix | None:
    """The slide's stains from its low-resolution image's tissue pixels; None when too little tissue is stained.

    `tissue` (boolean) may be at another resolution than `thumbnail`: it is resampled (nearest) onto it.
    """
    import cv2

    if tissue.shape != thumbnail.shape[:2]:
        tissue = cv2.resize(tissue.astype(np.uint8), thumbnail.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
    stained = _stained(thumbnail[tissue])
    if len(stained) < MIN_TISSUE_PIXELS:
        log.warning("stain normalisation: %d stained tissue pixels; the slide is left as it is", len(stained))
        return None
    try:
        return _macenko(stained)
    except (ValueError, np.linalg.LinAlgError) as err:
        log.warning("stain normalisation: no stain estimate (%s); the slide is left as it is", err)
        return None


class SlideStainNormaliser:
    """The slide's pixels mapped to the reference's stains: the same transform for every window and job."""

    def __init__(self, source: StainMatrix, target: StainMatrix):
        self.source, self.target = source, target
        source_vectors = np.asarray(source.vectors, np.float64)
        # Concentrations by least squares on the slide's vectors (full column rank: the pseudo-inverse),
        # each stain scaled so that the slide's 99th percentile becomes the reference's.
        scale = np.asarray(target.max_concentrations) / np.asarray(source.max_concentrations)
        self._unmix = (np.linalg.pinv(source_vectors) * scale[:, None]).astype(np.float32)
        self._mix = np.asarray(target.vectors, np.float32)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) RGB uint8 -> the same image in the reference's stains, uint8."""
        od = -np.log((image.reshape(-1, 3).astype(np.float32) + 1) / LIGHT)
        concentrations = od @ self._unmix.T  # (N, 2)
        out = LIGHT * np.exp(-(concentrations @ self._mix.T))
        return np.clip(out, 0, 255).astype(np.uint8).reshape(image.shape)


def plan_stains(thumbnail: np.ndarray, tissue: np.ndarray, settings: dict | None) -> dict | None:
    """The plan's `stain` record for `slides.<name>.stain_normalisation` (None: off, or no estimate)."""
    if not settings:
        return None
    target = reference_stains(settings.get("reference"))
    source = estimate_slide_stains(thumbnail, tissue)
    if source is None:
        return None
    return {
        "method": "macenko",
        "reference": settings.get("reference"),
        "source": source.to_dict(),
        "target": target.to_dict(),
    }


def plan_normaliser(plan: dict) -> SlideStainNormaliser | None:
    """The normaliser a plan records (`plan_stains`), or None."""
    record = plan.get("stain")
    if not record:
        return None
    return SlideStainNormaliser(StainMatrix.from_dict(record["source"]), StainMatrix.from_dict(record["target"]))
