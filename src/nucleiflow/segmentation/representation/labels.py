"""Label maps of nuclei: validation, connected components, small-object removal, the distance watershed.

The representation every phase shares: training targets (`targets`), post-processing (`postprocess`) and
the object metrics (`instances`, `pannuke_metrics`) read label maps through `as_label_map`. A label map is
an int array (H, W), 0 background, 1..n objects (ids need not be contiguous).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import segmentation
from skimage.feature import peak_local_max

from nucleiflow.errors import DataFormatError

# 8-connectivity: pixels touching at a corner belong to one nucleus (skimage.measure.label's default).
FULL_CONNECTIVITY = np.ones((3, 3), dtype=bool)


FULL_CONNECTIVITY = np.ones((3, 3), dtype=bool)


def as_label_map(labels, what: str) -> np.ndarray:
    """`labels` as a 2-D non-negative integer array, or a one-line DataFormatError."""
    array = np.asarray(labels)
    if array.ndim != 2:
        raise DataFormatError(f"{what} must be a 2-D label map; got shape {array.shape}")
    if array.dtype == bool:
        return array.astype(np.int32)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.mod(array, 1) == 0):
            raise DataFormatError(f"{what} holds non-integer values (dtype {array.dtype}); expected object ids")
        array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise DataFormatError(f"{what} holds negative ids (min {array.min()}); expected 0 background, 1..n objects")
    return array


def _split_touching(mask: np.ndarray, components: np.ndarray, min_distance: int) -> np.ndarray:
    """Watershed on the negated distance transform, one marker per distance peak."""
    distance = ndimage.distance_transform_edt(mask)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=components, exclude_border=False)
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = segmentation.watershed(-distance, markers, mask=mask)
    # A component without a peak would vanish; keep it as one object instead.
    orphans, n_orphans = ndimage.label(mask & (labels == 0), structure=FULL_CONNECTIVITY)
    if n_orphans:
        labels = np.where(orphans > 0, orphans + len(peaks), labels)
    return labels


def remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """`labels` with the objects of fewer than `min_size` pixels set to background (ids kept)."""
    if min_size <= 0:
        return labels
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    return np.where(small[labels], 0, labels)


def instances_from_binary(mask, *, watershed: bool = False, min_distance: int = 3, min_size: int = 0) -> np.ndarray:
    """int32 label map (ids 1..n) of a binary mask's connected components (8-connectivity).

    With `watershed`, touching nuclei are split by a distance-transform
    watershed with markers at distance peaks at least `min_distance` pixels
    apart. Objects of fewer than `min_size` pixels are removed afterwards.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise DataFormatError(f"binary mask must be 2-D; got shape {mask.shape}")
    components, _ = ndimage.label(mask, structure=FULL_CONNECTIVITY)
    labels = _split_touching(mask, components, min_distance) if watershed else components
    labels = remove_small(labels, min_size)
    return segmentation.relabel_sequential(labels)[0].astype(np.int32)
