"""One trained segmentation model turning images into maps and nuclei: `InferenceConfig` and `Predictor`.

Every way a model meets images (evaluation, post-processing tuning, the
robustness sweep, cross-dataset evaluation, prediction on new images,
explanations) builds one `Predictor` and calls it; nothing else runs the
forward pass.

`InferenceConfig` is read once from the model's spec (training size, size
policy, batch size, threshold, pre-filter, input scaling, output layout), the
experiment's `postprocess` section (test-time augmentation, fixed watershed
settings) and, for an experiment that tunes, the model's postprocess.json
(`inference.tuning_record`). Inputs are prepared exactly as in training
(`data.prepare_image`: the optional Gaussian pre-filter at native size;
`data.to_tensor`: the same input scaling), because a pre-filter or scaling
applied only at training would be a train/test mismatch.

The forward pass gives `heads.probabilities` maps (C, H, W) (binary: the
foreground probability; contour: background / interior / boundary; hv:
foreground probability and the raw h, v maps; with a type head the type
probabilities after them), at the training size (`resize`, each channel
resized back to the image's size) or from overlapping native-scale tiles
(`tile`, every channel averaged where tiles overlap), so metrics compare
against the original masks. Nuclei are found once on the whole stitched maps,
never per tile, so a nucleus across a tile border is neither cut nor counted
twice.

Test-time augmentation (`catalog.TTA_MODES`: flips or d4, the dihedral group)
averages the maps over flips and quarter turns of the model input, batched on
the device; each output is transformed back before the mean, the hv vector
channels with their signs and order. Probabilities (and the raw h/v maps) are
averaged, not logits or masks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from nucleiflow.catalog import INPUT_SCALINGS, PANNUKE_CLASS_NAMES, TTA_MODES
from nucleiflow.config import ModelSpec, tunes_postprocess
from nucleiflow.device import DeviceSetup, for_inference, setup_device
from nucleiflow.engine import load_checkpoint
from nucleiflow.errors import ConfigError, DataFormatError, choices_error
from nucleiflow.io import read_json
from nucleiflow.segmentation.evaluation.pannuke_metrics import nucleus_types
from nucleiflow.segmentation.representation.postprocess import (
    WatershedParams,
    configured_params,
    params_from_dict,
    params_to_dict,
)
from nucleiflow.segmentation.representation.postprocess import postprocess as watershed_postprocess
from nucleiflow.segmentation.representation.targets import HV_CHANNELS
from nucleiflow.segmentation.training.data import SIZE_POLICIES, fit_size, pad_to, prepare_image, resize_pair, to_tensor
from nucleiflow.segmentation.training.heads import BINARY, OutputLayout, foreground, layout_of, probabilities
from nucleiflow.segmentation.training.trainer import build_from_spec, checkpoint_identity

log = logging.getLogger(__name__)

NO_TTA = TTA_MODES[0]
MODEL_FILE = "model.pt"  # the best weights inside a trained model's folder (`run.train_from_spec`)
TRAIN_INFO_FILE = "train_info.json"  # written beside them, holding the spec the model was trained from


def check_tta(mode: str) -> str:
    """`mode` if it is a test-time augmentation setting (`catalog.TTA_MODES`); a ConfigError otherwise."""
    if mode not in TTA_MODES:
        raise choices_error("postprocess.tta", mode, TTA_MODES)
    return mode


# ---------------------------------------------------------------- the configuration


@dataclass(frozen=True)
class InferenceConfig:
    """Everything that decides how a model's images become maps and nuclei; built once by `from_spec`.

    input_size: the side of the network input (training.input_size).
    size_policy: `resize` (whole image at input_size, maps resized back) or `tile` (native-scale tiles).
    batch_size: images (resize) or tiles (tile) per forward pass.
    threshold: the foreground probability cut of pixel metrics and stored probabilities (training.threshold).
    prefilter_sigma, input_scaling: the input preparation of training (`data.prepare_image`, `data.to_tensor`).
    layout: what the model's output channels mean (`heads.OutputLayout`).
    tta: test-time augmentation (`catalog.TTA_MODES`).
    watershed: the post-processing settings; None: the target's fixed settings at `threshold`
        (`postprocess.configured_params` of an empty postprocess section; binary: connected components).
    watershed_source: where `watershed` came from, for the log.
    loss: the training loss (training.loss); each evaluated image's `loss` column is this loss.
    """

    input_size: int
    size_policy: str = "resize"
    batch_size: int = 8
    threshold: float = 0.5
    prefilter_sigma: float = 0.0
    input_scaling: str = INPUT_SCALINGS[0]
    layout: OutputLayout = BINARY
    tta: str = NO_TTA
    watershed: WatershedParams | None = None
    watershed_source: str = "the target's defaults"
    loss: str = "dice"

    def __post_init__(self):
        if self.size_policy not in SIZE_POLICIES:
            raise choices_error("training.size_policy", self.size_policy, SIZE_POLICIES)
        if self.input_scaling not in INPUT_SCALINGS:
            raise choices_error("training.input_scaling", self.input_scaling, INPUT_SCALINGS)
        check_tta(self.tta)
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size: {self.batch_size!r} is not valid; choose an integer >= 1")
        if self.watershed is None:  # resolved here so every reader sees the settings actually used
            object.__setattr__(self, "watershed", configured_params(self.layout.target, {}, self.threshold))

    @property
    def images_per_batch(self) -> int:
        """Images per forward pass: `batch_size` when resizing; one when tiling (its tiles fill the batch)."""
        return 1 if self.size_policy == "tile" else self.batch_size

    @classmethod
    def from_spec(
        cls,
        spec: ModelSpec | Mapping,
        postprocess: Mapping | None = None,
        tuned_path: str | Path | None = None,
        *,
        maps_only: bool = False,
    ) -> InferenceConfig:
        """The configuration of one model: its spec's training settings and its post-processing.

        Args:
            spec: the model cell's `ModelSpec` (or its dict).
            postprocess: the experiment's `postprocess` section (tta, tune, fixed watershed keys); None: empty.
            tuned_path: the model's postprocess.json (`inference.tuning_record`); its settings win.
            maps_only: the caller needs maps only (tuning, explanations), so the watershed settings are
                not resolved from a tuning record and the target's fixed settings stand in.

        Returns:
            The frozen configuration; the chosen post-processing and its source are logged.

        Raises:
            ConfigError: the experiment tunes (`config.tunes_postprocess`) but no `tuned_path` was given
                (silently falling back to the defaults would report a number nobody configured).
            DataFormatError: `tuned_path` is not a tuning record for this model's target.
        """
        training = ModelSpec.from_dict(spec).training
        layout = layout_of(training)
        settings = dict(postprocess or {})
        threshold = float(training["threshold"])
        tta = check_tta(settings.get("tta", NO_TTA))
        if maps_only:
            watershed, source = configured_params(layout.target, {}, threshold), "not used (maps only)"
        elif tuned_path is not None:
            watershed = read_tuned_params(tuned_path, layout.target)
            source = f"tuned on the validation split ({tuned_path})"
        elif tunes_postprocess(layout.target, settings):
            raise ConfigError(
                f"postprocess.tune: the {layout.target} model's settings are tuned on the validation split; "
                "pass its postprocess.json (rule tune_postprocess), or set postprocess.tune: false"
            )
        else:
            watershed = configured_params(layout.target, settings, threshold)
            source = "the experiment's fixed postprocess settings"
        if not maps_only:
            log.info("post-processing (%s, TTA %s): %s from %s", layout.target, tta, params_to_dict(watershed), source)
        return cls(
            input_size=int(training["input_size"]),
            size_policy=training["size_policy"],
            batch_size=int(training["batch_size"]),
            threshold=threshold,
            # An absent pre-filter is stored as null in older specs: no filter.
            prefilter_sigma=float(training.get("prefilter_sigma") or 0.0),
            input_scaling=training.get("input_scaling", INPUT_SCALINGS[0]),
            layout=layout,
            tta=tta,
            watershed=watershed,
            watershed_source=source,
            loss=training["loss"],  # the evaluated `loss` column is the training objective
        )


def read_tuned_params(path: str | Path, target: str) -> WatershedParams:
    """The `params` of a tuning record (`inference.tuning_record`), checked to be for `target`."""
    record = read_json(path)
    if not isinstance(record, dict) or "params" not in record or "target" not in record:
        raise DataFormatError(f"{path}: not a post-processing tuning record (needs keys target and params)")
    if record["target"] != target:
        raise DataFormatError(f"{path}: tuned for target {record['target']!r}, but the model's target is {target!r}")
    return params_from_dict(record["params"], what=f"{path} params")


# ---------------------------------------------------------------- loading a trained model


def model_file(model_dir: str | Path) -> Path:
    """The weights of a trained model: `model_dir`/model.pt, or `model_dir` itself when it names the file."""
    path = Path(model_dir)
    return path / MODEL_FILE if path.is_dir() else path


def recorded_spec(model_path: Path) -> ModelSpec:
    """The spec a model was trained from, as its folder's train_info.json records it."""
    info_path = model_path.parent / TRAIN_INFO_FILE
    if not info_path.is_file():
        raise DataFormatError(
            f"{model_path.parent}: no {TRAIN_INFO_FILE} beside {model_path.name}; pass the model's spec instead"
        )
    info = read_json(info_path)
    if not isinstance(info, dict) or "spec" not in info:
        raise DataFormatError(f"{info_path}: has no 'spec' (not written by the train stage)")
    return ModelSpec.from_dict(info["spec"])


def load_trained(
    spec: ModelSpec | Mapping, model_path, threads: int = 1, device: str | None = None
) -> tuple[torch.nn.Module, DeviceSetup, dict]:
    """The best checkpoint's model (checked against the spec), its device setup and the checkpoint state.

    `device` overrides the training device (then in full precision), e.g. "cpu" for explanations.
    """
    spec = ModelSpec.from_dict(spec)
    state = load_checkpoint(Path(model_path), checkpoint_identity(spec), map_location="cpu")
    model, setup = model_on_device(spec, state["model"], threads, device)
    return model, setup, state


def model_on_device(
    spec: ModelSpec, weights: Mapping, threads: int = 1, device: str | None = None
) -> tuple[torch.nn.Module, DeviceSetup]:
    """The spec's network with `weights` loaded, and the device setup it runs on.

    `device` overrides the training device (then in full precision); a trained folder (`load_trained`) and an
    exported package (`export.load`) both come here, so both run the same model the same way.
    """
    training = spec.training
    amp = training["amp"] if device is None else False
    setup = for_inference(setup_device(device or training["device"], threads, amp))
    model = build_from_spec(spec)
    model.load_state_dict(weights)
    return model.to(memory_format=torch.channels_last), setup


# ---------------------------------------------------------------- the forward pass


def dihedral(mode: str) -> list[tuple[bool, int]]:
    """(flip left-right first, then k quarter turns) of each transform of a TTA mode; the identity first.

    The transform of an (H, W, ...) image is `np.rot90(image[:, ::-1] if flip else image, k)`.
    """
    if check_tta(mode) == NO_TTA:
        return [(False, 0)]
    if mode == "flips":  # identity, left-right, up-down (two quarter turns after a left-right flip), both
        return [(False, 0), (True, 0), (True, 2), (False, 2)]
    return [(flip, k) for flip in (False, True) for k in range(4)]


def transform_batch(x: torch.Tensor, flip: bool, k: int) -> torch.Tensor:
    """(N, C, H, W) images flipped left-right (if `flip`), then turned `k` quarter turns (`dihedral`)."""
    if flip:
        x = torch.flip(x, dims=(3,))
    return torch.rot90(x, k, dims=(2, 3)) if k % 4 else x


def untransform_batch(maps: torch.Tensor, flip: bool, k: int, hv_channels=None) -> torch.Tensor:
    """`transform_batch` undone on (N, C, H, W) maps; `hv_channels` (h index, v index) hold a vector field.

    A quarter turn (rows, cols) moves an offset (dv, dh) to (-dh, dv), so undoing it maps the predicted
    (v', h') back to (h', -v'); a left-right flip negates h. Scalar channels only move.
    """
    out = torch.rot90(maps, -k, dims=(2, 3)) if k % 4 else maps
    if hv_channels is not None:
        h_index, v_index = hv_channels
        for _ in range(k % 4):
            turned = out.clone()
            turned[:, v_index], turned[:, h_index] = out[:, h_index], -out[:, v_index]
            out = turned
    if flip:
        out = torch.flip(out, dims=(3,))
        if hv_channels is not None:
            out = out.clone()
            out[:, hv_channels[0]] = -out[:, hv_channels[0]]
    return out


def tile_origins(length: int, size: int) -> list[int]:
    """Tile starts covering [0, length) with tiles of `size` overlapping by about half."""
    if length <= size:
        return [0]
    stride = size // 2
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def _resize_maps(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    if maps.shape[1:] == (height, width):
        return maps
    return np.stack([cv2.resize(c, (width, height), interpolation=cv2.INTER_LINEAR) for c in maps])


# ---------------------------------------------------------------- the predictor


def find_nuclei(maps: np.ndarray, config: InferenceConfig) -> tuple[np.ndarray, dict[int, int] | None]:
    """`Predictor.nuclei_from_maps` without the model: what a post-processing worker process runs."""
    layout = config.layout
    labels = watershed_postprocess(layout.target, maps[: layout.target_channels], config.watershed)
    types = nucleus_types(labels, maps[layout.types]) if layout.type_classes else None
    return labels, types


def resolve_type_names(layout: OutputLayout, names: Sequence[str] | None) -> tuple[str, ...]:
    """The name of each type id of a layout's type head: `names` (background first), PanNuke's when None.

    Ids the names do not cover (a dataset with fewer types than the head's channels) read `type_<id>`.
    """
    if not layout.type_classes:
        return ()
    given = tuple(PANNUKE_CLASS_NAMES if names is None or not len(names) else names)
    return tuple(given[k] if k < len(given) else f"type_{k}" for k in range(max(layout.type_classes, len(given))))


class Predictor:
    """A trained model with its `InferenceConfig`: images in, maps and nuclei out.

    Attributes:
        model: the network (evaluation mode, on `device`).
        config: the frozen `InferenceConfig`.
        spec: the `ModelSpec` the model was trained from (None for a model built by hand).
        setup: the device setup (device, mixed precision, memory format).
        state: the checkpoint's payload (e.g. `state["best"]["epoch"]`); empty for a model built by hand.
        type_names: the name of each type id the type head predicts (index = id, 0 background): the training
            dataset's (`workflow.cells.dataset_type_names`); empty without a type head.

    Build it with `from_model_dir` for a trained model, or `Predictor(model, config, setup)` for any
    module returning (N, C, H, W) logits in the config's layout.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: InferenceConfig,
        setup: DeviceSetup,
        *,
        spec: ModelSpec | None = None,
        state: dict | None = None,
        type_names: Sequence[str] | None = None,
    ):
        self.model = model.eval().to(setup.device)
        self.config, self.setup, self.spec = config, setup, spec
        self.state = state or {}
        self.type_names = resolve_type_names(config.layout, type_names)

    @property
    def device(self) -> torch.device:
        """The torch device the model runs on."""
        return self.setup.device

    @classmethod
    def from_model_dir(
        cls,
        model_dir: str | Path,
        *,
        spec: ModelSpec | Mapping | None = None,
        postprocess: Mapping | None = None,
        tuned_path: str | Path | None = None,
        device: str | None = None,
        batch_size: int | None = None,
        threads: int = 1,
        maps_only: bool = False,
        type_names: Sequence[str] | None = None,
    ) -> Predictor:
        """The predictor of a trained model.

        Args:
            model_dir: the model's folder (holding model.pt and train_info.json), or its model.pt.
            spec: the model cell's spec; the checkpoint must match it. None: the spec train_info.json records.
            postprocess: the experiment's `postprocess` section (`InferenceConfig.from_spec`).
            tuned_path: the model's tuned postprocess.json; required when the experiment tunes.
            device: "cpu", "cuda", "cuda:N", "mps" or "auto" instead of the training device (then in full
                precision); None: the training device and precision.
            batch_size: images (resize) or tiles (tile) per forward pass instead of the training batch size.
            threads: CPU threads (intra-op on CPU; loader workers on CUDA).
            maps_only: no post-processing settings are resolved (tuning, explanations).
            type_names: the training dataset's type names, background first (a type head's ids name into
                them); None: PanNuke's.

        Returns:
            The predictor, its model in evaluation mode on the device.

        Raises:
            CheckpointMismatch: model.pt was trained for another spec.
            ConfigError, DataFormatError: see `InferenceConfig.from_spec`; a folder without train_info.json
                and no `spec`.
        """
        model_path = model_file(model_dir)
        spec = recorded_spec(model_path) if spec is None else ModelSpec.from_dict(spec)
        # The configuration first: a missing tuning record fails before the weights are read.
        config = InferenceConfig.from_spec(spec, postprocess, tuned_path, maps_only=maps_only)
        if batch_size is not None:
            config = replace(config, batch_size=batch_size)
        model, setup, state = load_trained(spec, model_path, threads, device)
        return cls(model, config, setup, spec=spec, state=state, type_names=type_names)

    # -- maps -----------------------------------------------------------------

    @torch.no_grad()
    def forward(self, batch: torch.Tensor) -> np.ndarray:
        """`heads.probabilities` maps (N, C, H, W) float32 of a prepared (N, 3, H, W) batch, averaged over TTA.

        Args:
            batch: network inputs as `data.to_tensor` makes them (any H, W the network accepts).

        Returns:
            The maps on the CPU, each TTA transform undone before the mean.

        Raises:
            DataFormatError: the model's channel count does not match the config's layout.
        """
        layout = self.config.layout
        x = batch.to(self.device, non_blocking=True)
        transforms = dihedral(self.config.tta)
        hv_channels = HV_CHANNELS if layout.target == "hv" else None
        amp = self.setup.amp_dtype is not None
        total: torch.Tensor | None = None
        for flip, k in transforms:
            xt = transform_batch(x, flip, k)
            if self.setup.channels_last:
                xt = xt.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=self.setup.amp_dtype or torch.float32, enabled=amp):
                logits = self.model(xt)
            if logits.shape[1] != layout.channels:
                raise DataFormatError(
                    f"the model gives {logits.shape[1]} output channels; target {layout.target!r} "
                    f"with {layout.type_classes} type classes needs {layout.channels}"
                )
            maps = untransform_batch(probabilities(logits, layout), flip, k, hv_channels)
            total = maps if total is None else total + maps
        assert total is not None  # `transforms` holds at least the identity
        return (total / len(transforms)).cpu().numpy()

    def predict_maps(self, image: np.ndarray) -> np.ndarray:
        """The maps of one image at its own size.

        Args:
            image: (H, W, 3) RGB uint8.

        Returns:
            (C, H, W) float32 `heads.probabilities` maps (C = `config.layout.channels`).
        """
        return self.predict_maps_batch([image])[0]

    def predict_maps_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The maps of several images, each at its own size; batched through the network.

        Args:
            images: (H, W, 3) RGB uint8 images (sizes may differ).

        Returns:
            One (C, H, W) float32 map stack per image, in order. `resize`: `config.batch_size` images per
            forward pass; `tile`: one image's tiles per pass, `config.batch_size` at a time.
        """
        if self.config.size_policy == "tile":
            return [self._tiled(image) for image in images]
        step = self.config.batch_size
        return [maps for start in range(0, len(images), step) for maps in self._resized(images[start : start + step])]

    def _prepared(self, image: np.ndarray) -> np.ndarray:
        return prepare_image(image, self.config.prefilter_sigma)

    def _tensor(self, image: np.ndarray) -> torch.Tensor:
        return to_tensor(image, self.config.input_scaling)

    def _resized(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        size = self.config.input_size
        batch = torch.stack(
            [self._tensor(resize_pair(self._prepared(image), image[..., 0], size)[0]) for image in images]
        )
        maps = self.forward(batch).astype(np.float32, copy=False)
        return [_resize_maps(m, *image.shape[:2]) for m, image in zip(maps, images)]

    def _tiled(self, image: np.ndarray) -> np.ndarray:
        size, batch_size = self.config.input_size, self.config.batch_size
        h, w = image.shape[:2]
        padded = pad_to(self._prepared(image), size)
        origins = [(y, x) for y in tile_origins(padded.shape[0], size) for x in tile_origins(padded.shape[1], size)]
        total = np.zeros((self.config.layout.channels, *padded.shape[:2]), np.float32)
        hits = np.zeros(padded.shape[:2], np.float32)
        for start in range(0, len(origins), batch_size):
            chunk = origins[start : start + batch_size]
            batch = torch.stack([self._tensor(padded[y : y + size, x : x + size]) for y, x in chunk])
            for (y, x), maps in zip(chunk, self.forward(batch)):
                total[:, y : y + size, x : x + size] += maps
                hits[y : y + size, x : x + size] += 1
        return (total / hits)[:, :h, :w]

    def model_inputs(
        self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]
    ) -> tuple[list[np.ndarray], list[np.ndarray], torch.Tensor]:
        """The network inputs of images at the training size, as training fed them (what explanations attribute).

        Args:
            images: (H, W, 3) RGB uint8 images.
            masks: their (H, W) nucleus masks.

        Returns:
            (pre-filtered images at input_size x input_size, the masks brought to that size (bool), the
            prepared (N, 3, size, size) batch on the CPU). `resize` rescales; `tile` cuts the centre tile.
        """
        shown, fitted, tensors = [], [], []
        size, policy = self.config.input_size, self.config.size_policy
        for image, mask in zip(images, masks):
            image, mask = fit_size(self._prepared(image), np.asarray(mask).astype(np.uint8), size, policy, None)
            shown.append(image)
            fitted.append(mask.astype(bool))
            tensors.append(self._tensor(image))
        return shown, fitted, torch.stack(tensors)

    # -- from maps ------------------------------------------------------------

    def foreground_probability(self, maps: np.ndarray) -> np.ndarray:
        """The nucleus probability of one image's maps.

        Args:
            maps: (C, H, W) maps from `predict_maps`.

        Returns:
            (H, W) float32: channel 0, or interior + boundary for a contour model (`heads.foreground`).
        """
        return np.asarray(foreground(maps[None], self.config.layout)[0], dtype=np.float32)

    def nuclei_from_maps(self, maps: np.ndarray) -> tuple[np.ndarray, dict[int, int] | None]:
        """The nuclei of one image's maps: the target's post-processing with `config.watershed`.

        Args:
            maps: (C, H, W) maps from `predict_maps`.

        Returns:
            (labels, types): an int32 (H, W) instance map (0 background, ids 1..n) and, for a model with a
            type head, {nucleus id: type id} by majority vote of the type argmax (`type_names` names them);
            else None.
        """
        return find_nuclei(maps, self.config)

    def predict_nuclei(self, image: np.ndarray) -> tuple[np.ndarray, dict[int, int] | None]:
        """`nuclei_from_maps(predict_maps(image))`: the nuclei of one (H, W, 3) RGB uint8 image."""
        return self.nuclei_from_maps(self.predict_maps(image))
