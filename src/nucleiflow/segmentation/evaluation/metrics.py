"""Pixel metrics for binary segmentation masks, per image and pooled.

numpy and pandas only (no torch), so evaluation scripts and tests stay light.

Convention for undefined ratios (a zero denominator, e.g. an image without
nuclei): the value is 1.0 when the prediction is perfect (no false positives
and no false negatives) and 0.0 otherwise. So an empty ground truth with an
empty prediction scores dice = iou = sensitivity = precision = f1 = 1.0, and
MCC, whose denominator is 0 whenever either mask is constant, is 0.0 (as in
scikit-learn) unless the prediction is perfect, then 1.0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from nucleiflow.errors import require_columns

# Fixed display order for tables and figures.
# Their labels in tables and figures (the papers' names) are catalog.METRIC_DISPLAY_NAMES.
METRIC_NAMES = ("acc", "dice", "sensitivity", "iou", "precision", "f1", "specificity", "mcc")

COUNT_NAMES = ("tp", "fp", "fn", "tn")


def confusion_counts(pred, target) -> tuple[int, int, int, int]:
    """Return (tp, fp, fn, tn) pixel counts of boolean masks `pred` and `target`."""
    pred = np.asarray(pred, dtype=bool)
    target = np.asarray(target, dtype=bool)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} does not match target shape {target.shape}")
    tp = int(np.count_nonzero(pred & target))
    fp = int(np.count_nonzero(pred & ~target))
    fn = int(np.count_nonzero(~pred & target))
    tn = pred.size - tp - fp - fn
    return tp, fp, fn, tn


def _ratio(numerator: float, denominator: float, perfect: bool) -> float:
    """numerator / denominator, with the module's convention for a zero denominator."""
    if denominator == 0:
        return 1.0 if perfect else 0.0
    return float(numerator / denominator)


def _mcc(tp: int, fp: int, fn: int, tn: int, perfect: bool) -> float:
    # Square roots taken separately so the product of four large counts cannot overflow.
    denominator = math.sqrt(tp + fp) * math.sqrt(tp + fn) * math.sqrt(tn + fp) * math.sqrt(tn + fn)
    return _ratio(float(tp) * tn - float(fp) * fn, denominator, perfect)


def metrics_from_counts(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """All metrics of METRIC_NAMES from confusion counts (see the module docstring for 0/0)."""
    perfect = fp == 0 and fn == 0
    dice = _ratio(2 * tp, 2 * tp + fp + fn, perfect)
    return {
        "acc": _ratio(tp + tn, tp + fp + fn + tn, perfect),
        "dice": dice,
        "sensitivity": _ratio(tp, tp + fn, perfect),
        "iou": _ratio(tp, tp + fp + fn, perfect),
        "precision": _ratio(tp, tp + fp, perfect),
        "f1": dice,  # F1 of the foreground class is the Dice coefficient for binary masks
        "specificity": _ratio(tn, tn + fp, perfect),
        "mcc": _mcc(tp, fp, fn, tn, perfect),
    }


def pixel_metrics(pred, target) -> dict[str, float]:
    """Per-image record: the counts `tp, fp, fn, tn` plus every metric of METRIC_NAMES.

    The counts are kept so that `summarize` can pool images afterwards.
    """
    counts = confusion_counts(pred, target)
    return {**dict(zip(COUNT_NAMES, counts)), **metrics_from_counts(*counts)}


def _pooled_metrics(counts: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Dataset-level metrics from the summed counts of each group (one row per group)."""
    rows = [metrics_from_counts(*(int(v) for v in row)) for row in counts[list(COUNT_NAMES)].itertuples(index=False)]
    pooled = pd.DataFrame(rows, index=counts.index)
    return pooled[[m for m in metrics if m in METRIC_NAMES]].add_suffix("_pooled")


def summarize(
    per_image: pd.DataFrame, group_cols: str | Sequence[str] = (), metrics: Sequence[str] | None = None
) -> pd.DataFrame:
    """Summarise per-image metrics per group.

    Returns one row per group (in order of first appearance) with the group
    columns, `n_images`, the summed counts `tp, fp, fn, tn`, and for each
    metric `<m>_mean` and `<m>_std` over images (sample std, ddof=1, so NaN
    for a single image) and `<m>_pooled` computed from the summed counts.
    `metrics` defaults to the METRIC_NAMES present; others (e.g. `loss`) get
    mean and std only. Empty `group_cols` summarises the whole frame.
    """
    group_cols = [group_cols] if isinstance(group_cols, str) else list(group_cols)
    if metrics is None:
        metrics = [m for m in METRIC_NAMES if m in per_image.columns]
    require_columns(per_image, [*group_cols, *COUNT_NAMES, *metrics], "per-image metrics table")
    # A constant key lets the whole-frame case share the grouped code path.
    keys = group_cols or (lambda _: 0)
    grouped = per_image.groupby(keys, sort=False)
    counts = grouped[list(COUNT_NAMES)].sum()
    parts = [
        grouped.size().rename("n_images"),
        counts,
        grouped[list(metrics)].mean().add_suffix("_mean"),
        grouped[list(metrics)].std().add_suffix("_std"),
        _pooled_metrics(counts, metrics),
    ]
    summary = pd.concat(parts, axis=1)
    ordered = ["n_images", *COUNT_NAMES] + [
        f"{m}_{s}" for m in metrics for s in ("mean", "std", "pooled") if f"{m}_{s}" in summary
    ]
    summary = summary[ordered]
    return summary.reset_index() if group_cols else summary.reset_index(drop=True)
