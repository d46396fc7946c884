"""Object-level (instance) metrics for nuclei: AJI, panoptic quality and the DSB 2018 mAP.

numpy, scipy and scikit-image only (no torch), like `metrics`.

Inputs are label maps: int arrays (H, W), 0 background, 1..n objects; ids need
not be contiguous or ordered (results do not depend on the numbering). Every
metric is built from one joint histogram of (true id, predicted id) pixel pairs
(`overlaps`), so no per-pair masks are ever made, and only overlapping pairs
are kept, so no n_true x n_pred matrix either (except `pairwise_iou` itself and
PQ matching below IoU 0.5).

Definitions
-----------
* AJI (Kumar et al. 2017, IEEE TMI; as HoVer-Net's `get_fast_aji` used for
  PanNuke): each true object is paired with the prediction of highest IoU
  (ties: lowest predicted id; a prediction may be paired more than once);
  AJI = sum of paired intersections / (sum of paired unions + areas of true
  objects overlapping no prediction + areas of predictions paired with none).
* PQ (Kirillov et al. 2019, binary PQ of the PanNuke paper): a true and a
  predicted object match when IoU > `iou_threshold` (0.5: matches are then
  unique); DQ = TP / (TP + FP/2 + FN/2), SQ = mean IoU of the matches, PQ = DQ * SQ.
* DSB 2018 mAP (Kaggle Data Science Bowl 2018): at each threshold t of
  0.5, 0.55, ..., 0.95, TP = matches with IoU > t, precision(t) =
  TP / (TP + FP + FN); the image score is the mean over thresholds.

Convention for empty images (the same as `metrics`): when both maps hold no
object the prediction is perfect and AJI = PQ = DQ = SQ = mAP = 1.0; when only
one of them is empty every score is 0.0. SQ is 0.0 when nothing matches.
(HoVer-Net's implementation returns 0 for two empty maps because of a 1e-6 in
its denominators; `object_metrics` reports `n_true` so such images can be
dropped before averaging where a study did so.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from nucleiflow.errors import DataFormatError
from nucleiflow.segmentation.representation.labels import as_label_map, instances_from_binary

OBJECT_METRIC_NAMES = ("aji", "pq", "dq", "sq", "map")  # their table labels: catalog.METRIC_DISPLAY_NAMES

DSB_THRESHOLDS = np.arange(0.5, 1.0, 0.05)

# ---------------------------------------------------------------- overlaps


@dataclass(frozen=True)
class Overlaps:
    """Object areas and the pixel counts of every overlapping (true, predicted) pair.

    Objects are indexed 0..n-1 in the order of `true_ids` / `pred_ids` (sorted
    ids). Only pairs that share pixels are stored, so memory grows with the
    image, not with n_true * n_pred (a noisy prediction can hold thousands of specks).
    """

    true_ids: np.ndarray
    pred_ids: np.ndarray
    true_area: np.ndarray
    pred_area: np.ndarray
    pair_true: np.ndarray  # index of the true object of each overlapping pair
    pair_pred: np.ndarray  # index of its predicted object
    pair_intersection: np.ndarray

    @property
    def pair_union(self) -> np.ndarray:
        return self.true_area[self.pair_true] + self.pred_area[self.pair_pred] - self.pair_intersection

    @property
    def pair_iou(self) -> np.ndarray:
        return self.pair_intersection / self.pair_union  # union >= intersection > 0 for stored pairs

    def iou_matrix(self) -> np.ndarray:
        iou = np.zeros((len(self.true_ids), len(self.pred_ids)))
        iou[self.pair_true, self.pair_pred] = self.pair_iou
        return iou


def _dense_ids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(object ids, map with 0 for background and i + 1 for the i-th object id)."""
    ids, dense = np.unique(labels, return_inverse=True)
    dense = dense.reshape(labels.shape)
    if ids.size == 0 or ids[0] != 0:  # no background pixel: shift so index 0 stays background
        return ids, dense + 1
    return ids[1:], dense


def overlaps(true_labels, pred_labels) -> Overlaps:
    """Areas and pairwise intersections from a joint histogram of the two label maps."""
    true = as_label_map(true_labels, "true label map")
    pred = as_label_map(pred_labels, "predicted label map")
    if true.shape != pred.shape:
        raise DataFormatError(f"predicted label map shape {pred.shape} does not match true shape {true.shape}")
    true_ids, true_dense = _dense_ids(true)
    pred_ids, pred_dense = _dense_ids(pred)
    n_pred_codes = len(pred_ids) + 1
    # Joint histogram over the pixels both maps cover: one code per (true, pred) pair.
    both = (true_dense > 0) & (pred_dense > 0)
    codes = true_dense[both].astype(np.int64) * n_pred_codes + pred_dense[both]
    pair_codes, pair_counts = np.unique(codes, return_counts=True)
    pair_true, pair_pred = np.divmod(pair_codes, n_pred_codes)
    return Overlaps(
        true_ids=true_ids,
        pred_ids=pred_ids,
        true_area=np.bincount(true_dense.ravel(), minlength=len(true_ids) + 1)[1:],
        pred_area=np.bincount(pred_dense.ravel(), minlength=n_pred_codes)[1:],
        pair_true=pair_true - 1,
        pair_pred=pair_pred - 1,
        pair_intersection=pair_counts,
    )


def pairwise_iou(true_labels, pred_labels) -> np.ndarray:
    """(n_true, n_pred) IoU matrix; rows and columns follow the sorted object ids."""
    return overlaps(true_labels, pred_labels).iou_matrix()


def match_pairs(iou: np.ndarray, iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(true indices, pred indices) of one-to-one matches with IoU > `iou_threshold` in an IoU matrix.

    Above 0.5 a match is unique by construction (each object can overlap at
    most one other by more than half their union); below it the pairing of
    maximal total IoU is used (Hungarian assignment, as HoVer-Net does).
    """
    if iou_threshold >= 0.5:
        return np.nonzero(iou > iou_threshold)
    true_index, pred_index = linear_sum_assignment(-iou)
    keep = iou[true_index, pred_index] > iou_threshold
    return true_index[keep], pred_index[keep]


def _matched_ious(overlap: Overlaps, iou_threshold: float) -> np.ndarray:
    """IoUs of the one-to-one matches above `iou_threshold`."""
    if iou_threshold >= 0.5:  # unique anyway: no matrix needed
        iou = overlap.pair_iou
        return iou[iou > iou_threshold]
    iou = overlap.iou_matrix()
    return iou[match_pairs(iou, iou_threshold)]


# ---------------------------------------------------------------- metrics from overlaps


def _counts(overlap: Overlaps) -> tuple[int, int]:
    return len(overlap.true_ids), len(overlap.pred_ids)


def _aji(overlap: Overlaps) -> float:
    n_true, n_pred = _counts(overlap)
    if n_true == 0 and n_pred == 0:
        return 1.0
    if n_true == 0 or n_pred == 0:
        return 0.0
    # Best pair per true object: highest IoU, ties to the lowest predicted id.
    order = np.lexsort((overlap.pair_pred, -overlap.pair_iou, overlap.pair_true))
    best = order[np.unique(overlap.pair_true[order], return_index=True)[1]]
    paired_true, paired_pred = overlap.pair_true[best], overlap.pair_pred[best]
    intersection = overlap.pair_intersection[best].sum()
    union = overlap.pair_union[best].sum()
    # True objects overlapping nothing and predictions nobody paired count in the union only.
    union += overlap.true_area.sum() - overlap.true_area[paired_true].sum()
    unused_pred = np.ones(n_pred, dtype=bool)
    unused_pred[paired_pred] = False
    union += overlap.pred_area[unused_pred].sum()
    return float(intersection / union)


def _panoptic_quality(overlap: Overlaps, iou_threshold: float) -> dict:
    n_true, n_pred = _counts(overlap)
    if n_true == 0 and n_pred == 0:
        return {"dq": 1.0, "sq": 1.0, "pq": 1.0, "tp": 0, "fp": 0, "fn": 0}
    matched = _matched_ious(overlap, iou_threshold)
    tp = len(matched)
    fp, fn = n_pred - tp, n_true - tp
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    sq = float(matched.mean()) if tp else 0.0
    return {"dq": float(dq), "sq": sq, "pq": float(dq * sq), "tp": tp, "fp": fp, "fn": fn}


def _precision_at(overlap: Overlaps, threshold: float) -> float:
    n_true, n_pred = _counts(overlap)
    if n_true == 0 and n_pred == 0:
        return 1.0
    tp = len(_matched_ious(overlap, threshold))
    return tp / (n_true + n_pred - tp)  # TP + FP + FN


def _dsb_average_precision(overlap: Overlaps, thresholds) -> dict:
    thresholds = np.asarray(thresholds, dtype=float)
    if thresholds.ndim != 1 or thresholds.size == 0:
        raise DataFormatError(f"IoU thresholds must be a non-empty 1-D sequence; got {thresholds!r}")
    per_threshold = {round(float(t), 4): _precision_at(overlap, float(t)) for t in thresholds}
    return {"map": float(np.mean(list(per_threshold.values()))), "per_threshold": per_threshold}


# ---------------------------------------------------------------- public metrics


def aggregated_jaccard_index(true_labels, pred_labels) -> float:
    """AJI of Kumar et al. 2017 (see the module docstring; two empty maps score 1.0)."""
    return _aji(overlaps(true_labels, pred_labels))


def panoptic_quality(true_labels, pred_labels, iou_threshold: float = 0.5) -> dict:
    """Binary PQ as in PanNuke: dict(dq, sq, pq, tp, fp, fn) with matches at IoU > `iou_threshold`."""
    return _panoptic_quality(overlaps(true_labels, pred_labels), iou_threshold)


def dsb_average_precision(true_labels, pred_labels, thresholds=DSB_THRESHOLDS) -> dict:
    """DSB 2018 image score: dict(map, per_threshold={t: TP / (TP + FP + FN)})."""
    return _dsb_average_precision(overlaps(true_labels, pred_labels), thresholds)


def _is_binary(array: np.ndarray) -> bool:
    return array.dtype == bool or (array.size > 0 and array.min() >= 0 and array.max() <= 1)


def object_metrics(
    true_labels, pred_binary_or_labels, *, iou_threshold: float = 0.5, thresholds=DSB_THRESHOLDS, **instance_options
) -> dict:
    """One image's object metrics: aji, pq, dq, sq, map plus n_true, n_pred and the PQ counts.

    A boolean or 0/1 prediction is a binary mask and is first turned into
    instances with `instances_from_binary(**instance_options)`; anything else
    is taken as a label map. (So a label map whose only id is 1 is read as a
    mask: disconnected pieces of it become separate objects. `label_metrics`
    takes a label map as it is.) The counts are named `object_tp/fp/fn` so
    they cannot collide with the pixel counts of `metrics.pixel_metrics` in
    one per-image record.
    """
    pred = np.asarray(pred_binary_or_labels)
    if _is_binary(pred):
        pred = instances_from_binary(pred, **instance_options)
    elif instance_options:
        raise DataFormatError(f"instance options {sorted(instance_options)} apply to binary predictions only")
    return label_metrics(true_labels, pred, iou_threshold=iou_threshold, thresholds=thresholds)


def label_metrics(true_labels, pred_labels, *, iou_threshold: float = 0.5, thresholds=DSB_THRESHOLDS) -> dict:
    """`object_metrics` of a predicted label map taken as it is (never re-labelled as a binary mask)."""
    overlap = overlaps(true_labels, pred_labels)
    pq = _panoptic_quality(overlap, iou_threshold)
    return {
        "aji": _aji(overlap),
        "pq": pq["pq"],
        "dq": pq["dq"],
        "sq": pq["sq"],
        "map": _dsb_average_precision(overlap, thresholds)["map"],
        "n_true": len(overlap.true_ids),
        "n_pred": len(overlap.pred_ids),
        "object_tp": pq["tp"],
        "object_fp": pq["fp"],
        "object_fn": pq["fn"],
    }
