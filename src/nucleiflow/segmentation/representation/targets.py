"""Instance-aware training targets derived from an instance map (int, 0 background, 1..n nuclei).

numpy and scipy only (no torch), so targets can be made in a data-loader worker or offline.

A binary foreground mask cannot tell two touching nuclei apart; the targets below
add what a network needs to learn to separate them, and `postprocess` turns the
predicted targets back into instances with a marker-controlled watershed.

Targets (`TARGETS`, keyed by `catalog.INSTANCE_TARGETS`)
-------------------------------------------------------
* ``binary``: uint8 (H, W), 1 on nuclei. The plain semantic target.
* ``contour``: uint8 (H, W) class index, 0 background, 1 nucleus interior,
  2 nucleus boundary: the three-class target of the Kaggle Data Science Bowl
  2018 winning solutions (their "mask + contour" outputs). A boundary pixel
  is a nucleus pixel with a pixel of another label (another nucleus or
  background) within `width` steps (4-connected, city-block distance), so
  the interiors of touching nuclei are separated by 2 * `width` boundary
  pixels and never touch, not even at a corner.
* ``hv``: float32 (3, H, W): foreground, then the horizontal (h, along
  columns) and vertical (v, along rows, positive downwards) offsets of each
  pixel from its nucleus's centre of mass, scaled per nucleus so that its
  negative part reaches -1 and its positive part +1, as HoVer-Net does
  (Graham et al. 2019, Medical Image Analysis 58). Background is 0. The
  centre of mass is kept at sub-pixel precision, where HoVer-Net rounds it
  to a pixel: rounding is not symmetric under flips, and test-time
  augmentation (`predictor.Predictor`) relies on the maps being exactly
  flip- and rotation-equivariant.

`TARGET_CHANNELS` gives the number of output channels a model head needs for
each target (contour: three logits for a softmax; hv: one foreground logit and
two regression maps).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from nucleiflow.catalog import INSTANCE_TARGETS
from nucleiflow.errors import ConfigError, DataFormatError, choices_error
from nucleiflow.segmentation.representation.labels import as_label_map

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2
HV_CHANNELS = (1, 2)  # indices of h and v in the hv target and in an hv model's output


def binary_target(instances) -> np.ndarray:
    """uint8 (H, W) foreground mask of an instance map."""
    return (as_label_map(instances, "instance map") > 0).astype(np.uint8)


def _diamond(radius: int) -> np.ndarray:
    """City-block ball of `radius` (4-connected neighbourhood, as skimage's find_boundaries uses)."""
    offsets = np.abs(np.arange(-radius, radius + 1))
    return (offsets[:, None] + offsets[None, :]) <= radius


def contour_target(instances, width: int = 1) -> np.ndarray:
    """uint8 (H, W): 0 background, 1 interior, 2 boundary of `width` pixels (see the module docstring).

    The image edge is not a boundary ('nearest' padding): a nucleus cut by the
    tile edge continues beyond it, and marking the cut would teach the network
    a contour that is not in the tissue.
    """
    if isinstance(width, bool) or not isinstance(width, int | np.integer) or width < 1:
        raise ConfigError(f"contour width: {width!r} is not valid; choose an integer >= 1")
    labels = as_label_map(instances, "instance map")
    footprint = _diamond(int(width))
    # A pixel sees another label within `width` steps iff the max or the min of the labels around it differs.
    highest = ndimage.maximum_filter(labels, footprint=footprint, mode="nearest")
    lowest = ndimage.minimum_filter(labels, footprint=footprint, mode="nearest")
    foreground = labels > 0
    target = np.where(foreground, INTERIOR, BACKGROUND).astype(np.uint8)
    target[foreground & ((highest != labels) | (lowest != labels))] = BOUNDARY
    return target


def _scale_signed(offsets: np.ndarray) -> np.ndarray:
    """Negative part divided by its largest magnitude, positive part by its maximum (HoVer-Net's scaling)."""
    scaled = np.zeros_like(offsets)
    negative, positive = offsets < 0, offsets > 0
    if negative.any():
        scaled[negative] = offsets[negative] / -offsets[negative].min()
    if positive.any():
        scaled[positive] = offsets[positive] / offsets[positive].max()
    return scaled


def hv_target(instances) -> np.ndarray:
    """float32 (3, H, W): foreground, h and v distance maps in [-1, 1] per nucleus (see the module docstring)."""
    labels = as_label_map(instances, "instance map")
    target = np.zeros((3, *labels.shape), dtype=np.float32)
    target[0] = labels > 0
    # One bounding box per id: the work grows with the nuclei's area, not n_nuclei * image size.
    for index, box in enumerate(ndimage.find_objects(labels)):
        if box is None:  # ids need not be contiguous
            continue
        nucleus = labels[box] == index + 1
        centre_row, centre_col = ndimage.center_of_mass(nucleus)
        rows, cols = np.nonzero(nucleus)
        h = _scale_signed(cols - centre_col)
        v = _scale_signed(rows - centre_row)
        target[1][box][nucleus] = h
        target[2][box][nucleus] = v
    return target


TARGETS: dict[str, Callable[..., np.ndarray]] = {
    "binary": binary_target,
    "contour": contour_target,
    "hv": hv_target,
}
TARGET_CHANNELS = {"binary": 1, "contour": 3, "hv": 3}
# Channels of the training target as a dataset yields it (`packed_target`): contour as one class-index channel.
PACKED_CHANNELS = {"binary": 1, "contour": 1, "hv": 3}


def make_target(name: str, instances, **options) -> np.ndarray:
    """The target `name` (one of `catalog.INSTANCE_TARGETS`) of an instance map; options go to its function."""
    if name not in TARGETS:
        raise choices_error("instance target", name, INSTANCE_TARGETS)
    return TARGETS[name](instances, **options)


def packed_target(name: str, instances, classes=None) -> np.ndarray:
    """float32 (K, H, W) training target of `name` as losses take it (see `heads`), type class map appended.

    binary: (1, H, W) 0/1; contour: (1, H, W) class index 0/1/2; hv: (3, H, W).
    `classes` (H, W) nucleus type per pixel (0 background), given for a type head, becomes one more channel.
    """
    target = make_target(name, instances).astype(np.float32)
    if target.ndim == 2:
        target = target[None]
    if classes is None:
        return target
    classes = np.asarray(classes)
    if classes.shape != target.shape[1:]:
        raise DataFormatError(f"type map shape {classes.shape} does not match instance map shape {target.shape[1:]}")
    return np.concatenate([target, classes[None].astype(np.float32)])
