"""Instances from predicted targets: marker-controlled watershed per target, and its tuning.

numpy, scipy and scikit-image only (no torch). Predictions are probabilities
(after the sigmoid / softmax), channels first, in the layout of the matching
`targets` function:

* ``binary``: (H, W) or (1, H, W) foreground probability. Touching nuclei are
  split by a watershed on the negated distance transform with markers at
  distance peaks (`labels.instances_from_binary`); `min_distance` 0 keeps
  connected components.
* ``contour``: (3, H, W) probabilities of background, interior, boundary (the
  DSB2018 winning solutions). Markers are the connected components of
  interior > `marker_threshold`; the mask is interior + boundary >
  `foreground_threshold`; the watershed floods the boundary probability
  (`flood="boundary"`) or the negated distance transform of the mask
  (`flood="distance"`) from the markers.
* ``hv``: (3, H, W) foreground probability, h and v maps (HoVer-Net, Graham
  et al. 2019). h and v are min-max scaled to [0, 1], differentiated with a
  Sobel filter of `sobel_size` x `sobel_size` (OpenCV's kernel; HoVer-Net's
  released post-processing uses 21, a derivative smoothed by binomial weights
  of standard deviation about 2.2 px) after Gaussian smoothing of
  `sobel_sigma`, and each derivative is turned into
  1 - its min-max scaled value. The sign matters, as in HoVer-Net: inside a
  nucleus h rises steadily (derivative > 0, energy near 0) while it falls at
  every nucleus edge and jumps from +1 to -1 between touching nuclei
  (derivative < 0, energy near 1); a plain gradient magnitude would not tell
  the two apart. energy = max(h energy, v energy) on the foreground; markers
  = foreground probability - energy > `marker_threshold` (HoVer-Net's
  energy >= 0.4 cut is `marker_threshold` 0.6 on a certain foreground),
  holes filled, opened with a disc of `marker_opening`; the watershed floods
  -(1 - energy) on the foreground, smoothed as HoVer-Net does.

In every case a connected piece of the mask that received no marker is kept as
one object (it would vanish otherwise), objects smaller than `min_size` pixels
are removed and ids are renumbered 1..n.

`tune_postprocess` picks the parameters maximising mean PQ on validation
images. Test-time augmentation happens before, on the model's maps
(`predictor.Predictor`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
from scipy import ndimage
from skimage import morphology, segmentation

from nucleiflow.catalog import INSTANCE_TARGETS
from nucleiflow.errors import ConfigError, DataFormatError, choices_error
from nucleiflow.segmentation.evaluation.instances import panoptic_quality
from nucleiflow.segmentation.representation.labels import FULL_CONNECTIVITY, instances_from_binary, remove_small

FLOODS = ("boundary", "distance")
SOBEL_SIZES = range(3, 32, 2)  # OpenCV's Sobel accepts odd sizes up to 31


@dataclass(frozen=True)
class WatershedParams:
    """Post-processing settings; each target reads the fields its pipeline names (module docstring).

    foreground_threshold: the mask (binary and hv: foreground probability; contour: interior + boundary).
    marker_threshold: contour: interior probability; hv: foreground probability - energy.
    min_size: objects below this many pixels are removed at the end.
    marker_min_size: markers below this many pixels are dropped (noise would otherwise split a nucleus).
    marker_opening: radius of the disc opening the markers (0: none; HoVer-Net's 5 x 5 ellipse is 2).
    flood: contour only, what the watershed floods (`FLOODS`).
    sobel_sigma: hv only, Gaussian smoothing before the Sobel filter (0: none).
    sobel_size: hv only, the Sobel kernel's size (odd; 3 is the classic 3 x 3, HoVer-Net's code uses 21).
    min_distance: binary only, minimum distance between distance peaks (0: connected components only).
    """

    foreground_threshold: float = 0.5
    marker_threshold: float = 0.5
    min_size: int = 10
    marker_min_size: int = 5
    marker_opening: int = 0
    flood: str = "boundary"
    sobel_sigma: float = 1.0
    # 3: the 3 x 3 kernel that settings saved before this field existed were tuned with.
    sobel_size: int = 3
    min_distance: int = 3

    def __post_init__(self):
        for name in ("foreground_threshold", "marker_threshold"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not -1.0 <= value <= 1.0:
                raise ConfigError(f"watershed {name}: {value!r} is not valid; choose a number in [-1, 1]")
        for name in ("min_size", "marker_min_size", "marker_opening", "min_distance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise ConfigError(f"watershed {name}: {value!r} is not valid; choose an integer >= 0")
        if self.flood not in FLOODS:
            raise choices_error("watershed flood", self.flood, FLOODS)
        if not isinstance(self.sobel_sigma, int | float) or self.sobel_sigma < 0:
            raise ConfigError(f"watershed sobel_sigma: {self.sobel_sigma!r} is not valid; choose a number >= 0")
        size = self.sobel_size
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size not in SOBEL_SIZES:
            raise ConfigError(f"watershed sobel_size: {size!r} is not valid; choose an odd integer from 3 to 31")


# Per-target starting points: HoVer-Net's published settings for hv (energy cut 0.4, 5 x 5 marker opening).
DEFAULT_PARAMS = {
    "binary": WatershedParams(),
    "contour": WatershedParams(),
    "hv": WatershedParams(marker_threshold=0.6, marker_opening=2, marker_min_size=10),
}


# What `tune_postprocess` tries when the config gives no grid (`postprocess.grid`): the settings each target's
# pipeline reads, around the defaults. Binary's min_distance 0 is plain connected components.
DEFAULT_GRIDS = {
    "binary": {"foreground_threshold": [0.4, 0.5, 0.6], "min_distance": [0, 3, 6], "min_size": [5, 15]},
    "contour": {
        "foreground_threshold": [0.4, 0.5],
        "marker_threshold": [0.3, 0.5, 0.7],
        "flood": ["boundary", "distance"],
        "min_size": [5, 15],
    },
    "hv": {
        "foreground_threshold": [0.4, 0.5],
        "marker_threshold": [0.4, 0.5, 0.6, 0.7],
        "marker_opening": [0, 2],
        "min_size": [5, 15],
        "sobel_size": [3, 21],
    },
}


def configured_params(target: str, postprocess_config: Mapping, threshold: float = 0.5) -> WatershedParams:
    """The fixed (untuned) settings of an experiment: the target's defaults with the config's keys applied.

    Binary keeps the papers' keys: `watershed` false is connected components (min_distance 0), true splits
    touching nuclei at distance peaks `min_distance` apart; `min_size` drops small objects. `threshold`
    (training.threshold) is the foreground cut of every target.
    """
    if target not in POSTPROCESSORS:
        raise choices_error("instance target", target, INSTANCE_TARGETS)
    base = DEFAULT_PARAMS[target]
    changes = {"foreground_threshold": float(threshold)}
    if "min_size" in postprocess_config:
        changes["min_size"] = int(postprocess_config["min_size"])
    elif target == "binary":
        changes["min_size"] = 0  # the papers' object metrics keep every connected component
    if target == "binary":
        watershed = postprocess_config.get("watershed", False)
        changes["min_distance"] = int(postprocess_config.get("min_distance", 3)) if watershed else 0
    return replace(base, **changes)


def params_to_dict(params: WatershedParams) -> dict:
    return {field.name: getattr(params, field.name) for field in fields(WatershedParams)}


def params_from_dict(values: Mapping, what: str = "post-processing settings") -> WatershedParams:
    """WatershedParams from a dict (e.g. a postprocess.json's `params`); unknown keys are an error naming them."""
    names = [field.name for field in fields(WatershedParams)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise DataFormatError(f"{what}: unknown key(s) {unknown}; valid: {', '.join(names)}")
    return WatershedParams(**values)


# ---------------------------------------------------------------- helpers


def _channels(prediction, n_channels: int, target: str) -> np.ndarray:
    array = np.asarray(prediction, dtype=np.float64)
    if array.ndim != 3 or array.shape[0] != n_channels:
        raise DataFormatError(f"{target} prediction must have shape ({n_channels}, H, W); got {array.shape}")
    return array


def _minmax(array: np.ndarray) -> np.ndarray:
    low, high = array.min(), array.max()
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


def _markers(marker_mask: np.ndarray, params: WatershedParams) -> np.ndarray:
    if params.marker_opening:
        marker_mask = morphology.opening(marker_mask, morphology.disk(params.marker_opening))
    markers, _ = ndimage.label(marker_mask, structure=FULL_CONNECTIVITY)
    return remove_small(markers, params.marker_min_size)


def _flood(elevation: np.ndarray, markers: np.ndarray, mask: np.ndarray, min_size: int) -> np.ndarray:
    """Watershed from `markers` within `mask`; unmarked pieces of the mask kept; small objects removed."""
    markers = np.where(mask, markers, 0)
    labels = segmentation.watershed(elevation, markers, mask=mask)
    orphans, n_orphans = ndimage.label(mask & (labels == 0), structure=FULL_CONNECTIVITY)
    if n_orphans:
        labels = np.where(orphans > 0, orphans + labels.max(), labels)
    labels = remove_small(labels, min_size)
    return segmentation.relabel_sequential(labels)[0].astype(np.int32)


# ---------------------------------------------------------------- per target


def instances_from_binary_prediction(prediction, params: WatershedParams = DEFAULT_PARAMS["binary"]) -> np.ndarray:
    """Instances from a (H, W) or (1, H, W) foreground probability."""
    array = np.asarray(prediction, dtype=np.float64)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise DataFormatError(f"binary prediction must have shape (H, W) or (1, H, W); got {array.shape}")
    mask = array > params.foreground_threshold
    if params.min_distance == 0:
        return instances_from_binary(mask, min_size=params.min_size)
    return instances_from_binary(mask, watershed=True, min_distance=params.min_distance, min_size=params.min_size)


def instances_from_contour(prediction, params: WatershedParams = DEFAULT_PARAMS["contour"]) -> np.ndarray:
    """Instances from (3, H, W) background / interior / boundary probabilities."""
    probs = _channels(prediction, 3, "contour")
    interior, boundary = probs[1], probs[2]
    mask = interior + boundary > params.foreground_threshold
    markers = _markers(mask & (interior > params.marker_threshold), params)
    elevation = boundary if params.flood == "boundary" else -ndimage.distance_transform_edt(mask)
    return _flood(elevation, markers, mask, params.min_size)


def opencv_sobel_kernels(size: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's separable Sobel kernels of `size` (odd): (smoothing, first derivative), as correlation weights.

    Smoothing: the binomial coefficients of degree size - 1; derivative: those of degree size - 2 differenced,
    so size 3 gives [1, 2, 1] and [-1, 0, 1] (`cv2.getDerivKernels(1, 0, size)`).
    """
    if size not in SOBEL_SIZES:
        raise ConfigError(f"Sobel size: {size!r} is not valid; choose an odd integer from 3 to 31")
    smoothing = np.array([1.0])
    for _ in range(size - 2):
        smoothing = np.convolve(smoothing, [1.0, 1.0])
    return np.convolve(smoothing, [1.0, 1.0]), np.convolve(smoothing, [-1.0, 1.0])


def hv_energy(h: np.ndarray, v: np.ndarray, sobel_sigma: float = 1.0, sobel_size: int = 3) -> np.ndarray:
    """HoVer-Net's edge energy in [0, 1] from the h and v maps: 1 - min-max scaled signed Sobel derivative.

    The derivative is OpenCV's `Sobel` of `sobel_size` with its default border (reflect without repeating the
    edge pixel: scipy's "mirror"), so size 21 and sigma 0 are HoVer-Net's released post-processing.
    """
    smoothing, derivative = opencv_sobel_kernels(sobel_size)
    energies = []
    for channel, axis in ((h, 1), (v, 0)):  # h varies along columns, v along rows
        scaled = _minmax(np.asarray(channel, dtype=np.float64))
        if sobel_sigma > 0:
            scaled = ndimage.gaussian_filter(scaled, sobel_sigma)
        gradient = ndimage.correlate1d(scaled, derivative, axis=axis, mode="mirror")
        gradient = ndimage.correlate1d(gradient, smoothing, axis=1 - axis, mode="mirror")
        energies.append(1.0 - _minmax(gradient))
    return np.maximum(*energies)


def instances_from_hv(prediction, params: WatershedParams = DEFAULT_PARAMS["hv"]) -> np.ndarray:
    """Instances from (3, H, W) foreground probability, h and v maps (HoVer-Net's post-processing)."""
    channels = _channels(prediction, 3, "hv")
    probability = channels[0]
    foreground, _ = ndimage.label(probability > params.foreground_threshold, structure=FULL_CONNECTIVITY)
    mask = remove_small(foreground, params.min_size) > 0
    energy = hv_energy(channels[1], channels[2], params.sobel_sigma, params.sobel_size) * mask
    marker_mask = ndimage.binary_fill_holes(mask & (probability - energy > params.marker_threshold))
    markers = _markers(marker_mask, params)
    # HoVer-Net smooths the flooded surface with a 3 x 3 Gaussian (OpenCV's sigma for that size is 0.8) so
    # single-pixel noise makes no basin of its own.
    elevation = -ndimage.gaussian_filter((1.0 - energy) * mask, 0.8, truncate=1.25)
    return _flood(elevation, markers, mask, params.min_size)


POSTPROCESSORS: dict[str, Callable[..., np.ndarray]] = {
    "binary": instances_from_binary_prediction,
    "contour": instances_from_contour,
    "hv": instances_from_hv,
}


def postprocess(target: str, prediction, params: WatershedParams | None = None) -> np.ndarray:
    """int32 instance map (ids 1..n) from one image's prediction of `target`; `params` default per target."""
    if target not in POSTPROCESSORS:
        raise choices_error("instance target", target, INSTANCE_TARGETS)
    return POSTPROCESSORS[target](prediction, DEFAULT_PARAMS[target] if params is None else params)


# ---------------------------------------------------------------- tuning


@dataclass(frozen=True)
class TuningResult:
    """The chosen parameters, their mean validation PQ and every trial in grid order."""

    target: str
    params: WatershedParams
    mean_pq: float
    trials: tuple[tuple[WatershedParams, float], ...]


def parameter_grid(grid: Mapping[str, Sequence], base: WatershedParams) -> list[WatershedParams]:
    """Every combination of the values in `grid` (field name -> values) applied to `base`, in grid order."""
    names = [field.name for field in fields(WatershedParams)]
    for key, values in grid.items():
        if key not in names:
            raise choices_error("tuning grid key", key, names)
        if isinstance(values, str) or not isinstance(values, Sequence) or not values:
            raise ConfigError(f"tuning grid {key}: {values!r} is not valid; choose a non-empty list of values")
    keys = list(grid)
    return [replace(base, **dict(zip(keys, combo))) for combo in itertools.product(*(grid[k] for k in keys))]


def tune_postprocess(
    predictions_val: Sequence, instances_val: Sequence, grid: Mapping[str, Sequence], *, target: str
) -> TuningResult:
    """Parameters of `grid` maximising the mean PQ (IoU > 0.5) of `target`'s post-processing on validation images.

    Only validation predictions and instance maps are taken: the choice can never
    see the test set. Ties go to the first setting in grid order (the grid lists
    values in the order given, keys varying slowest first), so the result is
    deterministic. Images with no nucleus in either map score 1 (`instances`).
    """
    if target not in POSTPROCESSORS:
        raise choices_error("instance target", target, INSTANCE_TARGETS)
    if len(predictions_val) != len(instances_val) or not len(predictions_val):
        raise DataFormatError(
            f"tuning needs as many validation predictions as instance maps (>= 1); "
            f"got {len(predictions_val)} and {len(instances_val)}"
        )
    trials = []
    for params in parameter_grid(grid, DEFAULT_PARAMS[target]):
        scores = [
            panoptic_quality(truth, postprocess(target, prediction, params))["pq"]
            for prediction, truth in zip(predictions_val, instances_val)
        ]
        trials.append((params, float(np.mean(scores))))
    best = max(range(len(trials)), key=lambda i: (trials[i][1], -i))
    return TuningResult(target=target, params=trials[best][0], mean_pq=trials[best][1], trials=tuple(trials))
