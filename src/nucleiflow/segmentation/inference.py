"""Inference of a trained model on a split: per-image metrics, timing, stored predictions.

Predictions are made at the training size and their probabilities resized back
to each image's native size, so metrics compare against the original masks.
Inputs are prepared exactly as in training (`data.prepare_image`: the optional
Gaussian pre-filter at native size; `data.to_tensor`: the same input scaling).
Probabilities are stored (uint8, gzip) so figures never re-run a model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from nucleiflow.device import DeviceSetup
from nucleiflow.errors import DataFormatError, choices_error
from nucleiflow.io import atomic_path
from nucleiflow.segmentation.data import SIZE_POLICIES, pad_to, prepare_image, resize_pair, to_tensor
from nucleiflow.segmentation.instances import object_metrics
from nucleiflow.segmentation.metrics import confusion_counts, metrics_from_counts
from nucleiflow.segmentation.predictions import write_probability
from nucleiflow.store import Store

log = logging.getLogger(__name__)
WARMUP_BATCHES = 1  # the first batch pays for lazy initialisation (cuDNN autotuning, allocations)


@dataclass(frozen=True)
class EvalOptions:
    """How `evaluate_split` runs: input size, threshold, device, batching, post-processing, progress bar,
    and the input preparation the model was trained with (pre-filter sigma, input scaling)."""

    size: int
    threshold: float
    setup: DeviceSetup
    policy: str = "resize"
    batch_size: int = 8
    postprocess: dict = field(default_factory=dict)  # options of instance_metrics.instances_from_binary
    progress: bool = True
    prefilter_sigma: float = 0.0
    input_scaling: str = "imagenet"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def soft_dice_loss(prob: np.ndarray, truth: np.ndarray, smooth: float = 1.0) -> float:
    """The PanNuke paper's Dice loss on one image's probabilities (as in losses.DiceLoss)."""
    intersection = float((prob * truth).sum())
    return 1.0 - (2.0 * intersection + smooth) / (float(prob.sum()) + float(truth.sum()) + smooth)


@torch.no_grad()
def forward_probability(model: torch.nn.Module, batch: torch.Tensor, setup: DeviceSetup) -> np.ndarray:
    """Sigmoid probabilities (N, H, W) of a normalised (N, 3, H, W) batch."""
    x = batch.to(setup.device, non_blocking=True)
    if setup.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(setup.device.type, dtype=setup.amp_dtype or torch.float32, enabled=setup.amp_dtype is not None):
        logits = model(x)
    return torch.sigmoid(logits.float())[:, 0].cpu().numpy()


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
) -> np.ndarray:
    """Native-scale probability of one image from overlapping tiles, averaged where they overlap."""
    h, w = image.shape[:2]
    padded = pad_to(prepare_image(image, prefilter_sigma), size)
    origins = [(y, x) for y in tile_origins(padded.shape[0], size) for x in tile_origins(padded.shape[1], size)]
    total = np.zeros(padded.shape[:2], np.float32)
    hits = np.zeros(padded.shape[:2], np.float32)
    for start in range(0, len(origins), batch_size):
        chunk = origins[start : start + batch_size]
        batch = torch.stack([to_tensor(padded[y : y + size, x : x + size], input_scaling) for y, x in chunk])
        for (y, x), prob in zip(chunk, forward_probability(model, batch, setup)):
            total[y : y + size, x : x + size] += prob
            hits[y : y + size, x : x + size] += 1
    return (total / hits)[:h, :w]


def predict_resized(
    model: torch.nn.Module,
    images: list[np.ndarray],
    size: int,
    setup: DeviceSetup,
    *,
    prefilter_sigma: float = 0.0,
    input_scaling: str = "imagenet",
) -> list[np.ndarray]:
    """Probabilities of a batch of images resized to the training size, resized back to each native size."""
    batch = torch.stack(
        [
            to_tensor(resize_pair(prepare_image(image, prefilter_sigma), image[..., 0], size)[0], input_scaling)
            for image in images
        ]
    )
    probs = forward_probability(model, batch, setup)
    return [
        prob
        if prob.shape == image.shape[:2]
        else cv2.resize(prob, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
        for prob, image in zip(probs, images)
    ]


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
    postprocess: dict | None = None,
    policy: str = "resize",
    batch_size: int = 8,
    prefilter_sigma: float = 0.0,
    input_scaling: str = "imagenet",
) -> pd.DataFrame:
    """Per-image pixel and object metrics (and counts, seconds) for `ids`.

    Images go through the model in batches (`resize`: several images per
    batch; `tile`: the tiles of one image), and each image's `seconds` is its
    share of its batch's time. Object metrics compare the store's instance map
    with the connected components of the thresholded prediction (`postprocess`:
    options of instance_metrics.instances_from_binary, e.g. a watershed split).
    Probabilities are written to `predictions_path` if given. `prefilter_sigma`
    and `input_scaling` must be the training ones (`run.evaluate_from_spec`
    passes them from the spec).
    """
    if not ids:
        raise DataFormatError(f"{store.path}: the split to evaluate holds no images")
    if policy not in SIZE_POLICIES:
        raise choices_error("training.size_policy", policy, SIZE_POLICIES)
    model.eval().to(setup.device)
    options = EvalOptions(
        size,
        threshold,
        setup,
        policy,
        batch_size,
        postprocess=postprocess or {},
        progress=progress,
        prefilter_sigma=prefilter_sigma,
        input_scaling=input_scaling,
    )
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


def _predict_batches(model, store, ids, options: EvalOptions, image_of=None):
    """Yield (sample, probability, seconds per image, batch index) in id order."""
    size, setup, policy, batch_size = options.size, options.setup, options.policy, options.batch_size
    per_batch = 1 if policy == "tile" else batch_size
    prepare = {"prefilter_sigma": options.prefilter_sigma, "input_scaling": options.input_scaling}
    for index, start in enumerate(range(0, len(ids), per_batch)):
        samples = [store[image_id] for image_id in ids[start : start + per_batch]]
        images = [image_of(s) if image_of else s.image for s in samples]
        _sync(setup.device)
        started = time.perf_counter()
        if policy == "tile":
            probs = [predict_tiled(model, images[0], size, setup, batch_size, **prepare)]
        else:
            probs = predict_resized(model, images, size, setup, **prepare)
        _sync(setup.device)
        seconds = (time.perf_counter() - started) / len(samples)
        for sample, prob in zip(samples, probs):
            yield sample, prob, seconds, index


def _evaluate(model, store, ids, h5, options: EvalOptions, image_of=None) -> pd.DataFrame:
    rows = []
    predictions = _predict_batches(model, store, ids, options, image_of)
    for sample, prob, seconds, batch_index in tqdm(
        predictions, total=len(ids), desc="evaluate", unit="img", disable=not options.progress
    ):
        truth = sample.mask.astype(bool)
        if prob.shape != truth.shape:
            raise DataFormatError(f"{sample.image_id}: prediction {prob.shape} and mask {truth.shape} differ in size")
        pred = prob > options.threshold
        counts = confusion_counts(pred, truth)
        rows.append(
            {
                "image_id": sample.image_id,
                "loss": soft_dice_loss(prob, truth),
                **metrics_from_counts(*counts),
                "tp": counts[0],
                "fp": counts[1],
                "fn": counts[2],
                "tn": counts[3],
                **object_metrics(sample.instances, pred, **options.postprocess),
                "seconds": seconds,
                "warmup": batch_index < WARMUP_BATCHES,
            }
        )
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
