"""Inference of a trained model on a split: per-image metrics, timing, stored predictions.

Predictions are made at the training size and their probabilities resized back
to each image's native size, so metrics compare against the original masks.
Probabilities are stored (uint8, gzip) so figures never re-run a model.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .data import fit_size, to_tensor
from .device import DeviceSetup
from .errors import DataFormatError
from .instance_metrics import object_metrics
from .io import atomic_path
from .metrics import confusion_counts, metrics_from_counts
from .predictions import write_probability
from .store import Store

log = logging.getLogger(__name__)
WARMUP_IMAGES = 2


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def soft_dice_loss(prob: np.ndarray, truth: np.ndarray, smooth: float = 1.0) -> float:
    """The PanNuke paper's Dice loss on one image's probabilities (as in losses.DiceLoss)."""
    intersection = float((prob * truth).sum())
    return 1.0 - (2.0 * intersection + smooth) / (float(prob.sum()) + float(truth.sum()) + smooth)


@torch.no_grad()
def predict_probability(model: torch.nn.Module, image: np.ndarray, size: int, setup: DeviceSetup) -> np.ndarray:
    """Foreground probability (float32, native H x W) for one RGB uint8 image."""
    h, w = image.shape[:2]
    resized, _ = fit_size(image, np.zeros((h, w), np.uint8), size, "resize", None)
    x = to_tensor(resized)[None].to(setup.device)
    if setup.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(setup.device.type, dtype=setup.amp_dtype or torch.float32, enabled=setup.amp_dtype is not None):
        logits = model(x)
    prob = torch.sigmoid(logits.float())[0, 0].cpu().numpy()
    if prob.shape != (h, w):
        prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
    return prob


def evaluate_split(model: torch.nn.Module, store: Store, ids: list[str], *, size: int, threshold: float,
                   setup: DeviceSetup, predictions_path: str | Path | None = None, progress: bool = True,
                   postprocess: dict | None = None) -> pd.DataFrame:
    """Per-image pixel and object metrics (and counts, seconds) for `ids`.

    Object metrics compare the store's instance map with the connected
    components of the thresholded prediction (`postprocess`: options of
    instance_metrics.instances_from_binary, e.g. a watershed split).
    Probabilities are written to `predictions_path` if given.
    """
    if not ids:
        raise DataFormatError(f"{store.path}: the split to evaluate holds no images")
    model.eval().to(setup.device)
    options = (size, threshold, setup, postprocess or {}, progress)
    if predictions_path is None:
        return _evaluate(model, store, ids, None, *options)
    with atomic_path(predictions_path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs["threshold"] = threshold
        return _evaluate(model, store, ids, h5, *options)


def _evaluate(model, store, ids, h5, size, threshold, setup, postprocess, progress) -> pd.DataFrame:
    rows = []
    for i, image_id in enumerate(tqdm(ids, desc="evaluate", unit="img", disable=not progress)):
        sample = store[image_id]
        _sync(setup.device)
        started = time.perf_counter()
        prob = predict_probability(model, sample.image, size, setup)
        _sync(setup.device)
        seconds = time.perf_counter() - started
        truth = sample.mask.astype(bool)
        if prob.shape != truth.shape:
            raise DataFormatError(f"{image_id}: prediction {prob.shape} and mask {truth.shape} differ in size")
        pred = prob > threshold
        counts = confusion_counts(pred, truth)
        rows.append({"image_id": image_id, "loss": soft_dice_loss(prob, truth), **metrics_from_counts(*counts),
                     "tp": counts[0], "fp": counts[1], "fn": counts[2], "tn": counts[3],
                     **object_metrics(sample.instances, pred, **postprocess),
                     "seconds": seconds, "warmup": i < WARMUP_IMAGES})
        if h5 is not None:
            write_probability(h5, image_id, prob)
    return pd.DataFrame(rows)


def timing_summary(per_image: pd.DataFrame, device: str) -> dict:
    """Median and spread of per-image inference time, warm-up images excluded."""
    seconds = per_image.loc[~per_image["warmup"], "seconds"]
    if seconds.empty:
        seconds = per_image["seconds"]
    return {"device": device, "images": int(len(seconds)), "median_s": float(seconds.median()),
            "p25_s": float(seconds.quantile(0.25)), "p75_s": float(seconds.quantile(0.75)),
            "mean_s": float(seconds.mean())}
