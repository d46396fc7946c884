"""Tissue detection on a low-resolution level: stained (saturated, not white) pixels, cleaned up morphologically.

Glass is bright and grey, H&E tissue is coloured: the mask is the pixels whose HSV saturation exceeds a
threshold (Otsu's on the level, never below `min_saturation`) and whose brightness is below
`max_value` (glass and dust reflections are bright), then a closing joins tissue torn by
folds, holes are filled, and pieces smaller than `min_area_um2` (dust, pen specks) are dropped. This is the
usual first step of whole-slide pipelines (e.g. the saturation threshold of CLAM and TIAToolbox).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.morphology import remove_small_objects

from nucleiflow.slides.reader import Slide

TISSUE_MPP = 8.0  # um per pixel of the level the mask is computed on (or the closest coarser level)


@dataclass(frozen=True)
class TissueSettings:
    min_saturation: float = 0.05  # 0-1: below this a pixel is glass, whatever Otsu says
    max_value: float = 0.94  # 0-1 brightness: brighter pixels are glass
    min_area_um2: float = 2000.0  # tissue pieces smaller than this are dropped
    closing_um: float = 40.0  # joins tissue torn by folds and fills thin gaps
    mpp: float = TISSUE_MPP

    @classmethod
    def from_dict(cls, settings: dict | None) -> TissueSettings:
        return cls(**(settings or {}))


def tissue_level(slide: Slide, mpp: float = TISSUE_MPP, max_pixels: int = 4096 * 4096) -> int:
    """The coarsest level not coarser than `mpp` that stays under `max_pixels` (level 0 for one-level slides)."""
    chosen = 0
    for level in range(slide.level_count):
        level_mpp = slide.level_mpp(level) or 0.0
        if level_mpp <= mpp * 1.01:
            chosen = level
    while chosen + 1 < slide.level_count and math.prod(slide.level_dimensions[chosen]) > max_pixels:
        chosen += 1
    return chosen


def low_resolution(slide: Slide, mpp: float = TISSUE_MPP, strip: int = 2048) -> tuple[np.ndarray, float]:
    """(RGB uint8 image of the whole slide at about `mpp` um/px, its exact um per pixel), read in strips.

    The level read is `tissue_level`'s; strips of it are shrunk (area averaging) as they are read, so a
    one-level slide never sits whole in memory.
    """
    level = tissue_level(slide, mpp)
    level_mpp = slide.level_mpp(level)
    width, height = slide.level_dimensions[level]
    factor = max(1, round(mpp / level_mpp)) if level_mpp else max(1, round(max(width, height) / 2048))
    strip = max(factor, strip // factor * factor)
    out_w, out_h = max(1, width // factor), max(1, height // factor)
    out = np.empty((out_h, out_w, 3), np.uint8)
    scale = slide.level_downsamples[level]
    for top in range(0, out_h * factor, strip):
        rows = min(strip, out_h * factor - top)
        piece = slide.read_region(0, round(top * scale), level, out_w * factor, rows)
        out[top // factor : (top + rows) // factor] = (
            piece if factor == 1 else cv2.resize(piece, (out_w, rows // factor), interpolation=cv2.INTER_AREA)
        )
    return out, (level_mpp or 1.0) * factor


def tissue_mask(rgb: np.ndarray, pixel_um: float, settings: TissueSettings = TissueSettings()) -> np.ndarray:
    """Boolean tissue mask of a low-resolution RGB uint8 image whose pixels are `pixel_um` um a side."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV_FULL).astype(np.float32) / 255.0
    saturation, value = hsv[..., 1], hsv[..., 2]
    threshold = settings.min_saturation
    if np.ptp(saturation) > 0:
        threshold = max(threshold, float(threshold_otsu(saturation)))
    mask = (saturation > threshold) & (value < settings.max_value)
    radius = max(1, round(settings.closing_um / pixel_um / 2))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    padded = np.pad(mask.astype(np.uint8), radius)  # a closing must not glue tissue to the image border
    mask = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, disk)[radius:-radius, radius:-radius].astype(bool)
    mask = ndi.binary_fill_holes(mask)
    min_pixels = max(1, round(settings.min_area_um2 / pixel_um**2))
    return remove_small_objects(mask, max_size=min_pixels - 1)
