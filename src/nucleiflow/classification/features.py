"""Hand-crafted feature vectors for the classic classifiers.

The paper does not say which features fed its scikit-learn classifiers, so the
set is ours; `FEATURE_SET_DESCRIPTION` is the text for the methods section.
Every image is first resized to WORK_SIZE x WORK_SIZE so features are comparable
across the varied crop sizes and the vector length is fixed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from skimage.feature import graycomatrix, graycoprops, local_binary_pattern
from skimage.filters import threshold_otsu
from skimage.measure import label, regionprops

WORK_SIZE = 64
PIXEL_GRID = 16  # coarse layout only; 32x32 (1024 values) would swamp the other groups
PERCENTILES = (5, 25, 50, 75, 95)
GLCM_LEVELS = 32  # 8-bit grey quantised so the co-occurrence matrix is not mostly empty
GLCM_DISTANCES = (1, 2, 4)
GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
GLCM_PROPS = ("contrast", "homogeneity", "energy", "correlation")
LBP_POINTS, LBP_RADIUS = 8, 1
LBP_BINS = LBP_POINTS + 2  # 'uniform' codes 0..P plus one bin for all non-uniform codes
MIN_COMPONENT_PIXELS = 3  # specks below this (at WORK_SIZE) are noise, not micronuclei
SATELLITE_MAX_RATIO = 0.25  # a component under a quarter of the largest one is a satellite

FEATURE_SET_DESCRIPTION = (
    f"Each image is resized to {WORK_SIZE}x{WORK_SIZE} pixels (bilinear) and described by: "
    f"(1) its grey levels on a {PIXEL_GRID}x{PIXEL_GRID} grid, scaled to [0, 1] (coarse layout); "
    f"(2) per RGB channel the mean, standard deviation and the {', '.join(map(str, PERCENTILES))}th "
    "percentiles of intensity; "
    f"(3) grey-level co-occurrence texture ({GLCM_LEVELS} levels, distances "
    f"{', '.join(map(str, GLCM_DISTANCES))} px, averaged over 0, 45, 90 and 135 degrees): "
    f"{', '.join(GLCM_PROPS)}; "
    f"(4) a normalised histogram of uniform local binary patterns (P={LBP_POINTS}, R={LBP_RADIUS}); "
    "(5) shape descriptors of the Otsu foreground mask (the side of the threshold that does not "
    "dominate the image border is foreground, so bright-on-dark and dark-on-bright stains both "
    f"work; components under {MIN_COMPONENT_PIXELS} px are discarded): number of connected "
    "components, number and total area of satellite components (smaller than "
    f"{SATELLITE_MAX_RATIO:g} of the largest), areas of the largest and second-largest component "
    "and of all foreground relative to the image, and the eccentricity, solidity and perimeter "
    "(relative to the image side) of the largest component. The satellite count and the "
    "second-largest area are what separate a micronucleus from a single nucleus."
)


@dataclass(frozen=True)
class WorkImage:
    """One image prepared once for every feature group."""

    rgb: np.ndarray  # uint8 (WORK_SIZE, WORK_SIZE, 3)
    gray: np.ndarray  # uint8 (WORK_SIZE, WORK_SIZE)
    components: np.ndarray  # int labels of foreground components, 0 = background


@dataclass(frozen=True)
class FeatureGroup:
    names: tuple[str, ...]
    compute: Callable[[WorkImage], np.ndarray]


def extract_features(images: list[np.ndarray]) -> np.ndarray:
    """Feature matrix (n_images, len(feature_names())) of finite float64 values.

    `images` are uint8 arrays, RGB (H, W, 3) or grayscale (H, W), any size.
    """
    rows = [_image_features(_prepare(image)) for image in images]
    return np.vstack(rows) if rows else np.empty((0, len(feature_names())))


def feature_names() -> list[str]:
    """Names of the feature columns, in `extract_features` order."""
    return [name for group in FEATURE_GROUPS.values() for name in group.names]


def _image_features(work: WorkImage) -> np.ndarray:
    values = np.concatenate([group.compute(work) for group in FEATURE_GROUPS.values()])
    # GLCM correlation is undefined (NaN) on a flat image; treat as "no structure".
    return np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def _prepare(image: np.ndarray) -> WorkImage:
    pil = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    pil = pil.resize((WORK_SIZE, WORK_SIZE), Image.Resampling.BILINEAR)
    rgb = np.asarray(pil)
    gray = np.asarray(pil.convert("L"))
    return WorkImage(rgb=rgb, gray=gray, components=_foreground_components(gray))


def _foreground_components(gray: np.ndarray) -> np.ndarray:
    """Label the Otsu foreground; its polarity is decided by the image border."""
    if gray.min() == gray.max():
        return np.zeros(gray.shape, dtype=np.int32)
    threshold = threshold_otsu(gray)
    bright = gray > threshold
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    # Crops are centred on a nucleus, so the border is mostly background.
    mask = ~bright if (border > threshold).mean() > 0.5 else bright
    labels = label(mask, connectivity=2)
    sizes = np.bincount(labels.ravel())
    small = np.flatnonzero(sizes < MIN_COMPONENT_PIXELS)
    labels[np.isin(labels, small[small > 0])] = 0
    return label(labels > 0, connectivity=2)


def _pixels(work: WorkImage) -> np.ndarray:
    grid = Image.fromarray(work.gray).resize((PIXEL_GRID, PIXEL_GRID), Image.Resampling.BILINEAR)
    return np.asarray(grid, dtype=np.float64).ravel() / 255.0


def _intensity(work: WorkImage) -> np.ndarray:
    channels = work.rgb.reshape(-1, 3).astype(np.float64) / 255.0
    stats = [channels.mean(0), channels.std(0)] + [np.percentile(channels, q, axis=0) for q in PERCENTILES]
    return np.stack(stats, axis=1).ravel()  # channel-major, matching _intensity_names


def _glcm(work: WorkImage) -> np.ndarray:
    quantised = (work.gray.astype(np.int32) * GLCM_LEVELS // 256).astype(np.uint8)
    matrix = graycomatrix(quantised, GLCM_DISTANCES, GLCM_ANGLES, levels=GLCM_LEVELS, symmetric=True, normed=True)
    # graycoprops -> (distances, angles); average the angles for rotation invariance.
    return np.concatenate([graycoprops(matrix, prop).mean(axis=1) for prop in GLCM_PROPS])


def _lbp(work: WorkImage) -> np.ndarray:
    codes = local_binary_pattern(work.gray, LBP_POINTS, LBP_RADIUS, method="uniform")
    hist = np.bincount(codes.astype(np.int64).ravel(), minlength=LBP_BINS)[:LBP_BINS]
    return hist / hist.sum()


def _shape(work: WorkImage) -> np.ndarray:
    image_area = float(work.components.size)
    regions = sorted(regionprops(work.components), key=lambda r: r.area, reverse=True)
    areas = np.array([r.area for r in regions], dtype=np.float64)
    largest = regions[0] if regions else None
    satellites = areas[1:][areas[1:] < SATELLITE_MAX_RATIO * areas[0]] if regions else areas
    return np.array(
        [
            len(regions),
            len(satellites),
            satellites.sum() / image_area,
            areas[0] / image_area if len(areas) > 0 else 0.0,
            areas[1] / image_area if len(areas) > 1 else 0.0,
            areas.sum() / image_area,
            largest.eccentricity if largest is not None else 0.0,
            largest.solidity if largest is not None else 0.0,
            largest.perimeter / WORK_SIZE if largest is not None else 0.0,
        ]
    )


def _intensity_names() -> tuple[str, ...]:
    stats = ["mean", "std"] + [f"p{q}" for q in PERCENTILES]
    return tuple(f"intensity_{c}_{s}" for c in "rgb" for s in stats)


FEATURE_GROUPS: dict[str, FeatureGroup] = {
    "pixels": FeatureGroup(tuple(f"pixel_{i:03d}" for i in range(PIXEL_GRID**2)), _pixels),
    "intensity": FeatureGroup(_intensity_names(), _intensity),
    "glcm": FeatureGroup(tuple(f"glcm_{p}_d{d}" for p in GLCM_PROPS for d in GLCM_DISTANCES), _glcm),
    "lbp": FeatureGroup(tuple(f"lbp_{i}" for i in range(LBP_BINS)), _lbp),
    "shape": FeatureGroup(
        (
            "shape_n_components",
            "shape_n_satellites",
            "shape_satellite_area_fraction",
            "shape_largest_area_fraction",
            "shape_second_area_fraction",
            "shape_foreground_fraction",
            "shape_largest_eccentricity",
            "shape_largest_solidity",
            "shape_largest_perimeter",
        ),
        _shape,
    ),
}
