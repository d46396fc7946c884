"""PanNuke's benchmark metrics: binary PQ (bPQ) and multi-class PQ (mPQ) per tissue, and nucleus types.

numpy only on top of `instances` (no torch).

Source
------
Gamper et al. 2020, "PanNuke Dataset Extension, Insights and Baselines"
(arXiv:2003.10778), Section 4, and its official evaluation script,
TissueImageAnalytics/PanNuke-metrics (`run.py`, `utils.get_fast_pq`, which is
HoVer-Net's PQ, Graham et al. 2019). Implemented exactly as that script
computes them:

* PQ of one image (and of one class in one image): true and predicted nuclei
  match when IoU > 0.5 (unique matches); DQ = TP / (TP + FP/2 + FN/2),
  SQ = mean IoU of the matches, PQ = DQ * SQ (`instances.panoptic_quality`).
* bPQ: every nucleus regardless of type. Per image PQ; an image whose ground
  truth holds no nucleus is skipped (NaN in the script, then `nanmean`), even
  if nuclei were predicted there. Per tissue: mean over its images. bPQ: mean
  over tissues.
* mPQ: per image and class c, PQ between the true nuclei of type c and the
  predicted nuclei of type c; the class is skipped in that image when its
  ground truth holds no nucleus of type c (so predictions of a class absent
  from an image's ground truth cost nothing in mPQ; in bPQ they are FPs unless
  the image holds no true nucleus at all). Image mPQ: mean over the classes not skipped
  (an image with no nucleus at all is skipped). Per tissue: mean over its
  images; mPQ: mean over tissues. A tissue whose every image was skipped is
  left out of the mean over tissues.
* Per class PQ (the benchmark's "Neoplastic PQ" etc.): mean over all images,
  of every tissue, of the image's PQ for that class, skipping images without it.

Differences from the script, all below rounding: SQ is the exact mean IoU (the
script divides by TP + 1e-6). A predicted nucleus whose type map votes only
background gets type 0: it counts in bPQ and in no class (the release format
cannot hold an untyped nucleus).

Nucleus types (`nucleus_types`) come from a class map (H, W) by majority vote
of its non-background pixels within each nucleus, as HoVer-Net types a
predicted nucleus from its type branch (ties: lowest class id; no typed pixel:
type 0). PanNuke's ground-truth class maps hold one class per nucleus, so the
vote returns it unchanged.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from nucleiflow.errors import DataFormatError
from nucleiflow.segmentation.evaluation.instances import panoptic_quality
from nucleiflow.segmentation.representation.labels import as_label_map

PANNUKE_CLASS_IDS = (1, 2, 3, 4, 5)  # the store's PanNuke class ids: neoplastic .. epithelial


def class_pq_column(class_id: int) -> str:
    """The per-image column of one class's PQ (`image_scores`)."""
    return f"pq_class_{int(class_id)}"


# The benchmark's per-image columns, as evaluation writes them and the PanNuke tables read them.
PANNUKE_COLUMNS = ("tissue", "bpq", "mpq", *(class_pq_column(c) for c in PANNUKE_CLASS_IDS))


# ---------------------------------------------------------------- nucleus types


def nucleus_types(instances, class_map) -> dict[int, int]:
    """{nucleus id: type} by majority vote of the non-zero classes of `class_map` within each nucleus.

    `class_map` is an int (H, W) class per pixel (0 background), or (C, H, W)
    class probabilities, whose argmax per pixel is taken first.
    """
    labels = as_label_map(instances, "instance map")
    classes = np.asarray(class_map)
    if classes.ndim == 3:
        classes = classes.argmax(axis=0)
    classes = as_label_map(classes, "class map")
    if classes.shape != labels.shape:
        raise DataFormatError(f"class map shape {classes.shape} does not match instance map shape {labels.shape}")
    ids = np.unique(labels)
    ids = ids[ids > 0]
    # One joint histogram of (nucleus, class) over typed nucleus pixels.
    typed = (labels > 0) & (classes > 0)
    n_classes = int(classes.max()) + 1
    dense = np.searchsorted(ids, labels[typed])
    votes = np.zeros((len(ids), n_classes), dtype=np.int64)
    np.add.at(votes, (dense, classes[typed]), 1)
    # argmax returns the first maximum: ties go to the lowest class id, and a nucleus without a typed pixel
    # (a row of zeros) gets 0.
    winners = votes.argmax(axis=1)
    return {int(i): int(t) for i, t in zip(ids, winners)}


def _types(instances: np.ndarray, types, what: str) -> dict[int, int]:
    if isinstance(types, Mapping):
        return {int(k): int(v) for k, v in types.items()}
    types = np.asarray(types)
    if types.ndim not in (2, 3):
        raise DataFormatError(f"{what} must be a class map (H, W), probabilities (C, H, W) or {{id: type}}")
    return nucleus_types(instances, types)


def nuclei_of_type(instances, types: Mapping[int, int], class_id: int) -> np.ndarray:
    """The instance map keeping only the nuclei whose type is `class_id`."""
    labels = as_label_map(instances, "instance map")
    keep = [nucleus for nucleus, kind in types.items() if kind == class_id]
    return np.where(np.isin(labels, keep), labels, 0)


# ---------------------------------------------------------------- per image


@dataclass(frozen=True)
class PQCounts:
    """Matching counts of one image (or one class in one image) and the sum of matched IoUs."""

    n_true: int
    tp: int
    fp: int
    fn: int
    iou_sum: float

    @property
    def pq(self) -> float:
        """PQ = sum IoU / (TP + FP/2 + FN/2); NaN where the ground truth is empty (PanNuke skips it)."""
        if self.n_true == 0:
            return float("nan")
        return self.iou_sum / (self.tp + 0.5 * self.fp + 0.5 * self.fn)


def pq_counts(true_labels, pred_labels, iou_threshold: float = 0.5) -> PQCounts:
    """`PQCounts` of two label maps, matches at IoU > `iou_threshold`."""
    result = panoptic_quality(true_labels, pred_labels, iou_threshold)
    n_true = result["tp"] + result["fn"]
    return PQCounts(n_true, result["tp"], result["fp"], result["fn"], result["sq"] * result["tp"])


def _nanmean(values) -> float:
    values = np.asarray(list(values), dtype=float)
    if values.size == 0 or np.isnan(values).all():
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(values))


def image_counts(
    true_instances,
    true_types,
    pred_instances,
    pred_types,
    *,
    class_ids: Sequence[int] = PANNUKE_CLASS_IDS,
    iou_threshold: float = 0.5,
    what: str = "",
) -> tuple[PQCounts, dict[int, PQCounts]]:
    """One image's binary `PQCounts` and its counts per class.

    Types are a class map (H, W), class probabilities (C, H, W) or {nucleus id: type}.

    `pred_types` None (a model without a type head) types every predicted nucleus 0: bPQ is scored, every
    class PQ then has no true positive.
    """
    suffix = f" {what}" if what else ""
    truth = as_label_map(true_instances, f"true instance map{suffix}")
    pred = as_label_map(pred_instances, f"predicted instance map{suffix}")
    truth_types = _types(truth, true_types, f"true types{suffix}")
    if pred_types is None:
        predicted_types = {int(i): 0 for i in np.unique(pred) if i > 0}
    else:
        predicted_types = _types(pred, pred_types, f"predicted types{suffix}")
    binary = pq_counts(truth, pred, iou_threshold)
    per_class = {
        int(c): pq_counts(
            nuclei_of_type(truth, truth_types, c), nuclei_of_type(pred, predicted_types, c), iou_threshold
        )
        for c in class_ids
    }
    return binary, per_class


def image_scores(counts: tuple[PQCounts, Mapping[int, PQCounts]]) -> dict:
    """{bpq, mpq, pq_class_<c>} of one image from `image_counts` (NaN: skipped, as the benchmark script does)."""
    binary, per_class = counts
    return {
        "bpq": binary.pq,
        "mpq": _nanmean(c.pq for c in per_class.values()),
        **{class_pq_column(c): counts.pq for c, counts in per_class.items()},
    }


def tissue_summary(per_image, *, tissue: str = "tissue") -> dict:
    """PanNuke's bPQ and mPQ from per-image `image_scores` columns and a tissue column.

    Returns {"tissue_bpq": {tissue: value}, "tissue_mpq": {...}, "bpq": mean over tissues, "mpq": ...}:
    per tissue the mean over its images (skipped images are NaN), then the mean over tissues, as the
    official script does.
    """
    tissues = list(dict.fromkeys(str(t) for t in per_image[tissue]))
    names = per_image[tissue].astype(str)
    tissue_bpq = {t: _nanmean(per_image.loc[names == t, "bpq"]) for t in tissues}
    tissue_mpq = {t: _nanmean(per_image.loc[names == t, "mpq"]) for t in tissues}
    return {
        "tissue_bpq": tissue_bpq,
        "tissue_mpq": tissue_mpq,
        "bpq": _nanmean(tissue_bpq.values()),
        "mpq": _nanmean(tissue_mpq.values()),
    }
