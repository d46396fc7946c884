"""Evaluation of a trained model on a split: per-image metrics, timing, stored predictions, post-processing tuning.

Every model goes through its `predictor.Predictor` (maps of the images at
their native size, by the model's size policy, input preparation and
test-time augmentation; nuclei from the target's post-processing with the
settings of its `InferenceConfig`), so what is scored here is exactly what
prediction on new images gives.

Pixel metrics and the stored probability (predictions.h5, uint8) use the
foreground probability (`heads.foreground`) at the training threshold. Nuclei
come from the target's post-processing (`postprocess.postprocess`) with one
`WatershedParams`: tuned on the validation split (`tune_model`, written as the
model's postprocess.json by `tuning_record`) or the experiment's fixed settings
(`postprocess.configured_params`: for a binary model, connected components or a
distance watershed, our choice: the four papers do not say how they separate
nuclei); `predictor.InferenceConfig.from_spec` decides which, and says so in the log.

PanNuke stores (samples with a class map) add the benchmark's per-image
columns (`pannuke_metrics.PANNUKE_COLUMNS`: tissue, bpq, mpq, pq_class_1..5;
Gamper et al. 2020). mPQ and the class PQs need predicted nucleus types, so they are NaN for
a model without a type head (scoring its untyped nuclei would give 0 in every
class present, a number about the missing head rather than the segmentation);
bPQ is scored for every model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from nucleiflow.errors import ConfigError, DataFormatError
from nucleiflow.io import atomic_path
from nucleiflow.segmentation.evaluation.instances import label_metrics
from nucleiflow.segmentation.evaluation.metrics import confusion_counts, metrics_from_counts
from nucleiflow.segmentation.evaluation.pannuke_metrics import image_counts, image_scores
from nucleiflow.segmentation.inference.predictions import write_probability
from nucleiflow.segmentation.inference.predictor import Predictor
from nucleiflow.segmentation.representation.postprocess import (
    DEFAULT_GRIDS,
    TuningResult,
    params_to_dict,
    tune_postprocess,
)
from nucleiflow.segmentation.training.losses import evaluation_loss
from nucleiflow.store import Store

log = logging.getLogger(__name__)
WARMUP_BATCHES = 1  # the first batch pays for lazy initialisation (cuDNN autotuning, allocations)
# The PanNuke benchmark's per-image columns, added for stores with nucleus classes (names other stages read).


def _sync(device: torch.device) -> None:
    if device.type == "cuda":  # kernels run asynchronously: wait for them before reading the clock
        torch.cuda.synchronize(device)


def _predict_batches(predictor: Predictor, store, ids, image_of=None):
    """Yield (sample, maps (C, H, W) at native size, seconds per image, batch index) in id order."""
    step = predictor.config.images_per_batch
    for index, start in enumerate(range(0, len(ids), step)):
        samples = [store[image_id] for image_id in ids[start : start + step]]
        images = [image_of(s) if image_of else s.image for s in samples]
        _sync(predictor.device)
        started = time.perf_counter()
        maps = predictor.predict_maps_batch(images)
        _sync(predictor.device)
        seconds = (time.perf_counter() - started) / len(samples)
        yield from ((sample, sample_maps, seconds, index) for sample, sample_maps in zip(samples, maps))


# ---------------------------------------------------------------- from maps to nuclei and scores


def pannuke_columns(sample, labels: np.ndarray, types: dict[int, int] | None, tissue) -> dict:
    """The PanNuke benchmark's columns of one image (`pannuke_metrics.PANNUKE_COLUMNS`; NaNs: module docstring)."""
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
    predictor: Predictor,
    store: Store,
    ids: Sequence[str],
    *,
    predictions_path: str | Path | None = None,
    progress: bool = True,
    image_of: Callable | None = None,
) -> pd.DataFrame:
    """Per-image pixel and object metrics (and counts, seconds) of a predictor on `ids` of a store.

    Args:
        predictor: the model and its `InferenceConfig` (size policy, batching, threshold, watershed, TTA).
        store: the labelled images.
        ids: the image ids to score, in order.
        predictions_path: where to write the foreground probabilities (predictions.h5); None: nowhere.
        progress: show a progress bar.
        image_of: each sample's image replaced by `image_of(sample)` (the robustness sweep's perturbations).

    Returns:
        One row per image: image_id, loss (the model's training loss, `losses.evaluation_loss`), the pixel
        metrics of the foreground probability at the config's threshold with their counts, the object
        metrics of the predicted nuclei, the PanNuke columns for a store with nucleus classes, `seconds`
        (the image's share of its batch's time) and `warmup` (whether its batch paid for lazy
        initialisation).
    """
    if not ids:
        raise DataFormatError(f"{store.path}: the split to evaluate holds no images")
    if predictions_path is None:
        return _evaluate(predictor, store, list(ids), None, progress, image_of)
    with atomic_path(predictions_path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs["threshold"] = predictor.config.threshold
        return _evaluate(predictor, store, list(ids), h5, progress, image_of)


def _evaluate(predictor: Predictor, store, ids, h5, progress: bool, image_of=None) -> pd.DataFrame:
    rows = []
    threshold = predictor.config.threshold
    tissues = _tissues(store)
    predictions = _predict_batches(predictor, store, ids, image_of)
    for sample, maps, seconds, batch_index in tqdm(
        predictions, total=len(ids), desc="evaluate", unit="img", disable=not progress
    ):
        truth = sample.mask.astype(bool)
        prob = predictor.foreground_probability(maps)
        if prob.shape != truth.shape:
            raise DataFormatError(f"{sample.image_id}: prediction {prob.shape} and mask {truth.shape} differ in size")
        counts = confusion_counts(prob > threshold, truth)
        labels, types = predictor.nuclei_from_maps(maps)
        row = {
            "image_id": sample.image_id,
            "loss": evaluation_loss(predictor.config.loss, prob, truth),
            **metrics_from_counts(*counts),
            "tp": counts[0],
            "fp": counts[1],
            "fn": counts[2],
            "tn": counts[3],
            **label_metrics(sample.instances, labels),
        }
        if sample.classes is not None:
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
    predictor: Predictor, store, val_ids: Sequence[str], grid: Mapping | None = None, *, progress: bool = True
) -> TuningResult:
    """`postprocess.tune_postprocess` over `grid` (default: `DEFAULT_GRIDS` of the target) on `val_ids`' maps.

    Only the images of `val_ids` are read (the caller passes validation ids, never test ones); the maps
    are the predictor's, test-time augmentation included.
    """
    if not val_ids:
        raise DataFormatError(f"{store.path}: no validation images to tune the post-processing on")
    layout = predictor.config.layout
    predictions, instances = [], []
    for sample, maps, _, _ in tqdm(
        _predict_batches(predictor, store, list(val_ids)),
        total=len(val_ids),
        desc="tune",
        unit="img",
        disable=not progress,
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
