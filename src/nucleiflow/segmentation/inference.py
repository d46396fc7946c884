"""Inference of a trained model on a split: per-image metrics, timing, stored predictions, post-processing tuning.

Every model, whatever its training target (`heads.OutputLayout`), is run the
same way: the forward pass gives `heads.probabilities` maps (N, C, H, W)
(binary: the foreground probability; contour: background / interior /
boundary; hv: foreground probability and the raw h, v maps; with a type head
the type probabilities after them). Predictions are made at the training size
(`resize`) or from overlapping native-scale tiles (`tile`), every channel
averaged where tiles overlap and resized back to each image's native size, so
metrics compare against the original masks. Inputs are prepared exactly as in
training (`data.prepare_image`: the optional Gaussian pre-filter at native
size; `data.to_tensor`: the same input scaling).

Pixel metrics and the stored probability (predictions.h5, uint8) use the
foreground probability (`heads.foreground`) at the training threshold. Nuclei
come from the target's post-processing (`postprocess.postprocess`) with one
`WatershedParams`: tuned on the validation split (`tune_model`, written as the
model's postprocess.json) or the experiment's fixed settings
(`postprocess.configured_params`: for a binary model, connected components or a
distance watershed, our choice: the four papers do not say how they separate
nuclei). `postprocessing` decides
which, and says so in the log.

Test-time augmentation (`postprocess.tta`: flips or d4) averages the maps over
flips and quarter turns of the model input, batched on the device; each output
is transformed back, the hv vector channels with their signs and order
(`postprocess.untransform`'s semantics).

PanNuke stores (samples with a class map) add the benchmark's per-image
columns (`PANNUKE_COLUMNS`: tissue, bpq, mpq, pq_class_1..5; Gamper et al.
2020). mPQ and the class PQs need predicted nucleus types, so they are NaN for
a model without a type head (scoring its untyped nuclei would give 0 in every
class present, a number about the missing head rather than the segmentation);
bPQ is scored for every model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from nucleiflow.catalog import TTA_MODES
from nucleiflow.config import tunes_postprocess
from nucleiflow.device import DeviceSetup
from nucleiflow.errors import ConfigError, DataFormatError, choices_error
from nucleiflow.io import atomic_path, read_json
from nucleiflow.segmentation.data import SIZE_POLICIES, pad_to, prepare_image, resize_pair, to_tensor
from nucleiflow.segmentation.heads import BINARY, OutputLayout, foreground, probabilities
from nucleiflow.segmentation.instances import label_metrics
from nucleiflow.segmentation.losses import evaluation_loss
from nucleiflow.segmentation.metrics import confusion_counts, metrics_from_counts
from nucleiflow.segmentation.pannuke_metrics import PANNUKE_CLASS_IDS, image_counts, image_scores, nucleus_types
from nucleiflow.segmentation.postprocess import (
    DEFAULT_GRIDS,
    TuningResult,
    WatershedParams,
    configured_params,
    dihedral,
    params_from_dict,
    params_to_dict,
    postprocess,
    tune_postprocess,
)
from nucleiflow.segmentation.predictions import write_probability
from nucleiflow.segmentation.targets import HV_CHANNELS
from nucleiflow.store import Store

log = logging.getLogger(__name__)
WARMUP_BATCHES = 1  # the first batch pays for lazy initialisation (cuDNN autotuning, allocations)
NO_TTA = TTA_MODES[0]
# The PanNuke benchmark's per-image columns, added for stores with nucleus classes (names other stages read).
PANNUKE_COLUMNS = ("tissue", "bpq", "mpq", *(f"pq_class_{c}" for c in PANNUKE_CLASS_IDS))


@dataclass(frozen=True)
class EvalOptions:
    """How `evaluate_split` runs: input size, threshold, device, batching, post-processing, progress bar,
    the input preparation the model was trained with (pre-filter sigma, input scaling), the model's output
    layout and test-time augmentation.

    `params` None: the target's fixed settings at `threshold` (`postprocess.configured_params` of an empty
    postprocess section; binary: connected components).
    """

    size: int
    threshold: float
    setup: DeviceSetup
    policy: str = "resize"
    batch_size: int = 8
    params: WatershedParams | None = None
    progress: bool = True
    prefilter_sigma: float = 0.0
    input_scaling: str = "imagenet"
    layout: OutputLayout = BINARY
    tta: str = NO_TTA
    loss: str = "dice"  # the training loss (training.loss): each image's `loss` column is this loss

    def __post_init__(self):
        if self.policy not in SIZE_POLICIES:
            raise choices_error("training.size_policy", self.policy, SIZE_POLICIES)
        check_tta(self.tta)

    @property
    def watershed(self) -> WatershedParams:
        """The post-processing settings this run uses."""
        return self.params or configured_params(self.layout.target, {}, self.threshold)


def check_tta(mode: str) -> str:
    if mode not in TTA_MODES:
        raise choices_error("postprocess.tta", mode, TTA_MODES)
    return mode


# ---------------------------------------------------------------- which post-processing settings


@dataclass(frozen=True)
class Postprocessing:
    """How one run turns predictions into nuclei: the settings, test-time augmentation and where they came from."""

    params: WatershedParams
    tta: str = NO_TTA
    source: str = "defaults"


def read_tuned_params(path: str | Path, target: str) -> WatershedParams:
    """The `params` of a tuning record (`tuning_record`), checked to be for `target`."""
    record = read_json(path)
    if not isinstance(record, dict) or "params" not in record or "target" not in record:
        raise DataFormatError(f"{path}: not a post-processing tuning record (needs keys target and params)")
    if record["target"] != target:
        raise DataFormatError(f"{path}: tuned for target {record['target']!r}, but the model's target is {target!r}")
    return params_from_dict(record["params"], what=f"{path} params")


def postprocessing(
    layout: OutputLayout, postprocess_config: Mapping | None, threshold: float, params_path: str | Path | None = None
) -> Postprocessing:
    """The settings of one run: a tuning record's if given, else the experiment's fixed ones; logged.

    An experiment that tunes (`config.tunes_postprocess`) must pass its record: silently falling back to the
    defaults would report a number nobody configured.
    """
    config = dict(postprocess_config or {})
    tta = check_tta(config.get("tta", NO_TTA))
    target = layout.target
    if params_path is not None:
        params = read_tuned_params(params_path, target)
        source = f"tuned on the validation split ({params_path})"
    elif tunes_postprocess(target, config):
        raise ConfigError(
            f"postprocess.tune: the {target} model's settings are tuned on the validation split; "
            "pass its postprocess.json (rule tune_postprocess), or set postprocess.tune: false"
        )
    else:
        params = configured_params(target, config, threshold)
        source = "the experiment's fixed postprocess settings"
    log.info("post-processing (%s, TTA %s): %s from %s", target, tta, params_to_dict(params), source)
    return Postprocessing(params, tta, source)


# ---------------------------------------------------------------- the forward pass


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def transform_batch(x: torch.Tensor, flip: bool, k: int) -> torch.Tensor:
    """(N, C, H, W) images flipped left-right (if `flip`), then turned `k` quarter turns (`postprocess.dihedral`)."""
    if flip:
        x = torch.flip(x, dims=(3,))
    return torch.rot90(x, k, dims=(2, 3)) if k % 4 else x


def untransform_batch(maps: torch.Tensor, flip: bool, k: int, hv_channels=None) -> torch.Tensor:
    """`postprocess.untransform` on a (N, C, H, W) batch: the transform undone, h/v vectors included."""
    out = torch.rot90(maps, -k, dims=(2, 3)) if k % 4 else maps
    if hv_channels is not None:
        h_index, v_index = hv_channels
        for _ in range(k % 4):  # one quarter turn moves the offset (dv, dh) to (-dh, dv): undo it
            turned = out.clone()
            turned[:, v_index], turned[:, h_index] = out[:, h_index], -out[:, v_index]
            out = turned
    if flip:
        out = torch.flip(out, dims=(3,))
        if hv_channels is not None:
            out = out.clone()
            out[:, hv_channels[0]] = -out[:, hv_channels[0]]
    return out


@torch.no_grad()
def forward_maps(
    model: torch.nn.Module, batch: torch.Tensor, setup: DeviceSetup, layout: OutputLayout = BINARY, tta: str = NO_TTA
) -> np.ndarray:
    """`heads.probabilities` maps (N, C, H, W) float32 of a normalised (N, 3, H, W) batch, averaged over `tta`.

    Probabilities (and the raw h/v maps) are averaged, not logits or masks; with TTA the batch goes through
    the model once per transform, each output transformed back before the mean.
    """
    x = batch.to(setup.device, non_blocking=True)
    transforms = [(False, 0)] if check_tta(tta) == NO_TTA else dihedral(tta)
    hv_channels = HV_CHANNELS if layout.target == "hv" else None
    total = None
    for flip, k in transforms:
        xt = transform_batch(x, flip, k)
        if setup.channels_last:
            xt = xt.contiguous(memory_format=torch.channels_last)
        amp = setup.amp_dtype is not None
        with torch.autocast(setup.device.type, dtype=setup.amp_dtype or torch.float32, enabled=amp):
            logits = model(xt)
        if logits.shape[1] != layout.channels:
            raise DataFormatError(
                f"the model gives {logits.shape[1]} output channels; target {layout.target!r} "
                f"with {layout.type_classes} type classes needs {layout.channels}"
            )
        maps = untransform_batch(probabilities(logits, layout), flip, k, hv_channels)
        total = maps if total is None else total + maps
    return (total / len(transforms)).cpu().numpy()


def forward_probability(
    model: torch.nn.Module, batch: torch.Tensor, setup: DeviceSetup, layout: OutputLayout = BINARY, tta: str = NO_TTA
) -> np.ndarray:
    """Foreground probabilities (N, H, W) of a normalised (N, 3, H, W) batch (binary: the sigmoid)."""
    return foreground(forward_maps(model, batch, setup, layout, tta), layout)


def tile_origins(length: int, size: int) -> list[int]:
    """Tile starts covering [0, length) with tiles of `size` overlapping by about half."""
    if length <= size:
        return [0]
    stride = size // 2
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def predict_tiled(
    model: torch.nn.Module,
    image: np.ndarray,
    size: int,
    setup: DeviceSetup,
    batch_size: int,
    *,
    prefilter_sigma: float = 0.0,
    input_scaling: str = "imagenet",
    layout: OutputLayout = BINARY,
    tta: str = NO_TTA,
) -> np.ndarray:
    """Native-scale maps (C, H, W) of one image from overlapping tiles, every channel averaged where they overlap."""
    h, w = image.shape[:2]
    padded = pad_to(prepare_image(image, prefilter_sigma), size)
    origins = [(y, x) for y in tile_origins(padded.shape[0], size) for x in tile_origins(padded.shape[1], size)]
    total = np.zeros((layout.channels, *padded.shape[:2]), np.float32)
    hits = np.zeros(padded.shape[:2], np.float32)
    for start in range(0, len(origins), batch_size):
        chunk = origins[start : start + batch_size]
        batch = torch.stack([to_tensor(padded[y : y + size, x : x + size], input_scaling) for y, x in chunk])
        for (y, x), maps in zip(chunk, forward_maps(model, batch, setup, layout, tta)):
            total[:, y : y + size, x : x + size] += maps
            hits[y : y + size, x : x + size] += 1
    return (total / hits)[:, :h, :w]


def _resize_maps(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    if maps.shape[1:] == (height, width):
        return maps
    return np.stack([cv2.resize(c, (width, height), interpolation=cv2.INTER_LINEAR) for c in maps])


def predict_resized(
    model: torch.nn.Module,
    images: list[np.ndarray],
    size: int,
    setup: DeviceSetup,
    *,
    prefilter_sigma: float = 0.0,
    input_scaling: str = "imagenet",
    layout: OutputLayout = BINARY,
    tta: str = NO_TTA,
) -> list[np.ndarray]:
    """Maps (C, H, W) of a batch of images resized to the training size, each channel resized back to native size."""
    batch = torch.stack(
        [
            to_tensor(resize_pair(prepare_image(image, prefilter_sigma), image[..., 0], size)[0], input_scaling)
            for image in images
        ]
    )
    maps = forward_maps(model, batch, setup, layout, tta)
    return [_resize_maps(m, *image.shape[:2]) for m, image in zip(maps, images)]


def predict_image(model: torch.nn.Module, image: np.ndarray, options: EvalOptions) -> np.ndarray:
    """Native-size maps (C, H, W) float32 of one RGB uint8 image by the options' policy."""
    prepare = {"prefilter_sigma": options.prefilter_sigma, "input_scaling": options.input_scaling}
    head = {"layout": options.layout, "tta": options.tta}
    if options.policy == "tile":
        return predict_tiled(model, image, options.size, options.setup, options.batch_size, **prepare, **head)
    return predict_resized(model, [image], options.size, options.setup, **prepare, **head)[0]


def _predict_batches(model, store, ids, options: EvalOptions, image_of=None):
    """Yield (sample, maps (C, H, W) at native size, seconds per image, batch index) in id order."""
    size, setup, policy, batch_size = options.size, options.setup, options.policy, options.batch_size
    per_batch = 1 if policy == "tile" else batch_size
    prepare = {"prefilter_sigma": options.prefilter_sigma, "input_scaling": options.input_scaling}
    head = {"layout": options.layout, "tta": options.tta}
    for index, start in enumerate(range(0, len(ids), per_batch)):
        samples = [store[image_id] for image_id in ids[start : start + per_batch]]
        images = [image_of(s) if image_of else s.image for s in samples]
        _sync(setup.device)
        started = time.perf_counter()
        if policy == "tile":
            maps = [predict_tiled(model, images[0], size, setup, batch_size, **prepare, **head)]
        else:
            maps = predict_resized(model, images, size, setup, **prepare, **head)
        _sync(setup.device)
        seconds = (time.perf_counter() - started) / len(samples)
        for sample, sample_maps in zip(samples, maps):
            yield sample, sample_maps, seconds, index


# ---------------------------------------------------------------- from maps to nuclei and scores


def nuclei_of(maps: np.ndarray, layout: OutputLayout, params: WatershedParams) -> np.ndarray:
    """int32 instance map of one image's maps (C, H, W): the target's post-processing of its target channels."""
    return postprocess(layout.target, maps[: layout.target_channels], params)


def predicted_types(labels: np.ndarray, maps: np.ndarray, layout: OutputLayout) -> dict[int, int] | None:
    """{nucleus id: type} by majority vote of the type head's argmax; None without a type head."""
    if not layout.type_classes:
        return None
    return nucleus_types(labels, maps[layout.types])


def pannuke_columns(sample, labels: np.ndarray, types: dict[int, int] | None, tissue) -> dict:
    """The PanNuke benchmark's columns of one image (`PANNUKE_COLUMNS`; module docstring for the NaNs)."""
    scores = image_scores(image_counts(sample.instances, sample.classes, labels, types, what=sample.image_id))
    if types is None:  # no type head: only bPQ means something
        scores = {key: (value if key == "bpq" else float("nan")) for key, value in scores.items()}
    return {"tissue": tissue, **scores}


def _tissues(store) -> dict:
    metadata = getattr(store, "metadata", None)
    if metadata is None or "tissue" not in metadata.columns:
        return {}
    return dict(zip(metadata["image_id"].astype(str), metadata["tissue"]))


def evaluate_split(
    model: torch.nn.Module,
    store: Store,
    ids: list[str],
    *,
    size: int,
    threshold: float,
    setup: DeviceSetup,
    predictions_path: str | Path | None = None,
    progress: bool = True,
    params: WatershedParams | None = None,
    policy: str = "resize",
    batch_size: int = 8,
    prefilter_sigma: float = 0.0,
    input_scaling: str = "imagenet",
    layout: OutputLayout = BINARY,
    tta: str = NO_TTA,
    loss: str = "dice",
) -> pd.DataFrame:
    """Per-image pixel and object metrics (and counts, seconds) for `ids`.

    Images go through the model in batches (`resize`: several images per
    batch; `tile`: the tiles of one image), and each image's `seconds` is its
    share of its batch's time. Pixel metrics threshold the foreground
    probability at `threshold`; object metrics compare the store's instance map
    with the target's post-processing of the prediction (`params`: see
    `EvalOptions`). Foreground probabilities are written to `predictions_path`
    if given. `prefilter_sigma`, `input_scaling` and `layout` must be the
    training ones (`run.evaluate_from_spec` passes them from the spec).
    """
    if not ids:
        raise DataFormatError(f"{store.path}: the split to evaluate holds no images")
    options = EvalOptions(
        size,
        threshold,
        setup,
        policy,
        batch_size,
        params=params,
        progress=progress,
        prefilter_sigma=prefilter_sigma,
        input_scaling=input_scaling,
        layout=layout,
        tta=tta,
        loss=loss,
    )
    model.eval().to(setup.device)
    if predictions_path is None:
        return _evaluate(model, store, ids, None, options)
    with atomic_path(predictions_path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs["threshold"] = threshold
        return _evaluate(model, store, ids, h5, options)


def evaluate_images(model, store, ids, options: EvalOptions, image_of=None) -> pd.DataFrame:
    """Per-image metrics of a loaded model, each sample's image replaced by `image_of(sample)` if given.

    The batching and metrics of `evaluate_split`, without stored predictions:
    the robustness sweep calls it once per perturbation on one loaded model.
    """
    if not ids:
        raise DataFormatError(f"{store.path}: the split to evaluate holds no images")
    model.eval().to(options.setup.device)
    return _evaluate(model, store, ids, None, options, image_of)


def _evaluate(model, store, ids, h5, options: EvalOptions, image_of=None) -> pd.DataFrame:
    rows = []
    layout, params = options.layout, options.watershed
    tissues = _tissues(store)
    predictions = _predict_batches(model, store, ids, options, image_of)
    for sample, maps, seconds, batch_index in tqdm(
        predictions, total=len(ids), desc="evaluate", unit="img", disable=not options.progress
    ):
        truth = sample.mask.astype(bool)
        prob = foreground(maps[None], layout)[0]
        if prob.shape != truth.shape:
            raise DataFormatError(f"{sample.image_id}: prediction {prob.shape} and mask {truth.shape} differ in size")
        pred = prob > options.threshold
        counts = confusion_counts(pred, truth)
        labels = nuclei_of(maps, layout, params)
        row = {
            "image_id": sample.image_id,
            "loss": evaluation_loss(options.loss, prob, truth),
            **metrics_from_counts(*counts),
            "tp": counts[0],
            "fp": counts[1],
            "fn": counts[2],
            "tn": counts[3],
            **label_metrics(sample.instances, labels),
        }
        if sample.classes is not None:
            types = predicted_types(labels, maps, layout)
            row.update(pannuke_columns(sample, labels, types, tissues.get(str(sample.image_id))))
        rows.append({**row, "seconds": seconds, "warmup": batch_index < WARMUP_BATCHES})
        if h5 is not None:
            write_probability(h5, sample.image_id, prob)
    return pd.DataFrame(rows)


def timing_summary(per_image: pd.DataFrame, device: str) -> dict:
    """Median and spread of per-image inference time, warm-up images excluded."""
    seconds = per_image.loc[~per_image["warmup"], "seconds"]
    if seconds.empty:
        seconds = per_image["seconds"]
    return {
        "device": device,
        "images": int(len(seconds)),
        "median_s": float(seconds.median()),
        "p25_s": float(seconds.quantile(0.25)),
        "p75_s": float(seconds.quantile(0.75)),
        "mean_s": float(seconds.mean()),
    }


# ---------------------------------------------------------------- tuning on the validation split


def tuning_ids(val_ids: Sequence[str], limit: int, seed: int) -> list[str]:
    """At most `limit` validation ids, a sample seeded by `seed`, in their split order."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"postprocess.tune_images: {limit!r} is not valid; choose an integer >= 1")
    val_ids = list(val_ids)
    if len(val_ids) <= limit:
        return val_ids
    chosen = np.random.default_rng(seed).choice(len(val_ids), size=limit, replace=False)
    return [val_ids[i] for i in sorted(chosen)]


def tune_model(
    model: torch.nn.Module, store, val_ids: Sequence[str], options: EvalOptions, grid: Mapping | None = None
) -> TuningResult:
    """`postprocess.tune_postprocess` over `grid` (default: `DEFAULT_GRIDS` of the target) on `val_ids`' predictions.

    Only the images of `val_ids` are read (the caller passes validation ids, never test ones).
    """
    if not val_ids:
        raise DataFormatError(f"{store.path}: no validation images to tune the post-processing on")
    layout = options.layout
    model.eval().to(options.setup.device)
    predictions, instances = [], []
    for sample, maps, _, _ in tqdm(
        _predict_batches(model, store, list(val_ids), options),
        total=len(val_ids),
        desc="tune",
        unit="img",
        disable=not options.progress,
    ):
        predictions.append(maps[: layout.target_channels])
        instances.append(sample.instances)
    return tune_postprocess(predictions, instances, grid or DEFAULT_GRIDS[layout.target], target=layout.target)


def tuning_record(result: TuningResult, val_ids: Sequence[str], grid: Mapping, tta: str) -> dict:
    """The postprocess.json of a tuning run: chosen params, mean validation PQ, the sample, the grid, every trial."""
    keys = list(grid)
    return {
        "target": result.target,
        "params": params_to_dict(result.params),
        "mean_pq": result.mean_pq,
        "split": "val",
        "val_images": len(val_ids),
        "val_ids": list(val_ids),
        "grid": {key: list(values) for key, values in grid.items()},
        "trials": [
            {**{key: params_to_dict(params)[key] for key in keys}, "mean_pq": pq} for params, pq in result.trials
        ],
        "tta": tta,
    }
