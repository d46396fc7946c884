"""Object metrics on hand-made label maps whose AJI, PQ and DSB mAP are worked out by hand."""

import numpy as np
import pytest

from nucleiflow.errors import DataFormatError
from nucleiflow.segmentation.evaluation.instances import (
    OBJECT_METRIC_NAMES,
    aggregated_jaccard_index,
    dsb_average_precision,
    match_pairs,
    object_metrics,
    pairwise_iou,
    panoptic_quality,
)
from nucleiflow.segmentation.representation.labels import instances_from_binary

SHAPE = (40, 50)


def boxes(*corners, shape=SHAPE):
    """Label map with object k+1 filling rows r0:r1, cols c0:c1 of corners[k]."""
    labels = np.zeros(shape, dtype=np.int32)
    for label, (r0, r1, c0, c1) in enumerate(corners, start=1):
        labels[r0:r1, c0:c1] = label
    return labels


def discs(centres, radius, shape=SHAPE):
    rows, cols = np.indices(shape)
    labels = np.zeros(shape, dtype=np.int32)
    for label, (r, c) in enumerate(centres, start=1):
        labels[(rows - r) ** 2 + (cols - c) ** 2 <= radius**2] = label
    return labels


def scene():
    """Four separate objects and an imperfect prediction of them (one missed, one extra)."""
    true = boxes((2, 12, 2, 12), (2, 10, 20, 34), (20, 35, 5, 15), (22, 30, 30, 45))
    pred = boxes((3, 12, 2, 11), (2, 11, 22, 34), (24, 31, 28, 44), (36, 40, 0, 6))
    return true, pred


def test_identical_maps_score_one():
    true, _ = scene()
    scores = object_metrics(true, true.copy())
    assert all(scores[name] == pytest.approx(1.0) for name in OBJECT_METRIC_NAMES)
    assert (scores["n_true"], scores["n_pred"], scores["object_tp"], scores["object_fp"], scores["object_fn"]) == (
        4,
        4,
        4,
        0,
        0,
    )


def test_empty_maps_score_one_and_a_missing_object_scores_zero():
    empty = np.zeros(SHAPE, dtype=np.int32)
    one = boxes((5, 15, 5, 15))
    assert object_metrics(empty, empty) == {
        "aji": 1.0,
        "pq": 1.0,
        "dq": 1.0,
        "sq": 1.0,
        "map": 1.0,
        "n_true": 0,
        "n_pred": 0,
        "object_tp": 0,
        "object_fp": 0,
        "object_fn": 0,
    }
    for true, pred in ((one, empty), (empty, one)):
        scores = object_metrics(true, pred)
        assert all(scores[name] == 0.0 for name in OBJECT_METRIC_NAMES)
    assert panoptic_quality(one, empty) == {"dq": 0.0, "sq": 0.0, "pq": 0.0, "tp": 0, "fp": 0, "fn": 1}
    assert pairwise_iou(one, empty).shape == (1, 0)


def test_square_shifted_by_half_its_width():
    # 10x10 squares overlapping on 10x5 pixels: IoU = 50 / (100 + 100 - 50) = 1/3.
    true, pred = boxes((5, 15, 5, 15)), boxes((5, 15, 10, 20))
    np.testing.assert_allclose(pairwise_iou(true, pred), [[1 / 3]])
    assert aggregated_jaccard_index(true, pred) == pytest.approx(50 / 150)
    # IoU below 0.5: no match, so one false positive and one false negative.
    assert panoptic_quality(true, pred) == {"dq": 0.0, "sq": 0.0, "pq": 0.0, "tp": 0, "fp": 1, "fn": 1}
    assert dsb_average_precision(true, pred)["map"] == 0.0


def test_prediction_inside_the_object():
    # 12x12 object, prediction its 12x10 left part: IoU = 120/144 = 5/6.
    true, pred = boxes((0, 12, 0, 12)), boxes((0, 12, 0, 10))
    assert aggregated_jaccard_index(true, pred) == pytest.approx(120 / 144)
    pq = panoptic_quality(true, pred)
    assert (pq["tp"], pq["fp"], pq["fn"]) == (1, 0, 0)
    assert pq["dq"] == 1.0 and pq["sq"] == pytest.approx(5 / 6) and pq["pq"] == pytest.approx(5 / 6)
    ap = dsb_average_precision(true, pred)
    # 5/6 exceeds the thresholds 0.5 ... 0.8 (seven of ten), not 0.85 ... 0.95.
    assert list(ap["per_threshold"].values()) == [1.0] * 7 + [0.0] * 3
    assert list(ap["per_threshold"]) == pytest.approx([0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95])
    assert ap["map"] == pytest.approx(0.7)


def test_one_object_predicted_as_two_pieces():
    # 10x12 object (120 px) split into a 10x8 piece (IoU 80/120 = 2/3) and a 10x4 piece (IoU 40/120 = 1/3).
    true = boxes((0, 10, 0, 12))
    pred = boxes((0, 10, 0, 8), (0, 10, 8, 12))
    # The larger piece is paired (80 / 120); the unpaired piece's 40 px join the union.
    assert aggregated_jaccard_index(true, pred) == pytest.approx(80 / (120 + 40))
    pq = panoptic_quality(true, pred)
    assert (pq["tp"], pq["fp"], pq["fn"]) == (1, 1, 0)
    assert pq["dq"] == pytest.approx(1 / 1.5) and pq["sq"] == pytest.approx(2 / 3)
    assert pq["pq"] == pytest.approx(4 / 9)
    # Thresholds 0.5 ... 0.65 give TP 1, FP 1, FN 0 -> 1/2; 0.7 ... 0.95 give 0 / 3.
    assert dsb_average_precision(true, pred)["map"] == pytest.approx(4 * 0.5 / 10)


def test_two_objects_predicted_as_one():
    # Two adjacent 10x10 objects, one 10x20 prediction: each IoU is exactly 100/200 = 0.5.
    true = boxes((0, 10, 0, 10), (0, 10, 10, 20))
    pred = boxes((0, 10, 0, 20))
    # Both objects pair with the same prediction: (100 + 100) / (200 + 200).
    assert aggregated_jaccard_index(true, pred) == pytest.approx(0.5)
    # IoU must exceed 0.5, so nothing matches.
    assert panoptic_quality(true, pred)["tp"] == 0
    # Below 0.5 matches stay one-to-one: the prediction takes one object only.
    low = panoptic_quality(true, pred, iou_threshold=0.4)
    assert (low["tp"], low["fp"], low["fn"]) == (1, 0, 1)
    assert low["sq"] == pytest.approx(0.5)


def test_label_numbering_does_not_matter():
    true, pred = scene()
    permuted_true, permuted_pred = np.zeros_like(true), np.zeros_like(pred)
    for old, new in zip(range(1, 5), (70, 3, 1000, 12)):
        permuted_true[true == old] = new
    for old, new in zip(range(1, 5), (9, 2, 500, 41)):
        permuted_pred[pred == old] = new
    assert object_metrics(permuted_true, permuted_pred) == pytest.approx(object_metrics(true, pred))


def reference_iou(true, pred):
    """Brute force: one mask per pair."""
    true_ids, pred_ids = np.unique(true[true > 0]), np.unique(pred[pred > 0])
    iou = np.zeros((len(true_ids), len(pred_ids)))
    for i, t in enumerate(true_ids):
        for j, p in enumerate(pred_ids):
            a, b = true == t, pred == p
            iou[i, j] = (a & b).sum() / (a | b).sum()
    return iou


def reference_aji(true, pred):
    """Kumar et al. 2017, written as the paper's loop over true objects."""
    intersection = union = 0
    used = set()
    for t in np.unique(true[true > 0]):
        g = true == t
        candidates = [p for p in np.unique(pred[g]) if p > 0]
        if not candidates:
            union += g.sum()
            continue
        best = max(candidates, key=lambda p: ((g & (pred == p)).sum() / (g | (pred == p)).sum(), -p))
        s = pred == best
        intersection += (g & s).sum()
        union += (g | s).sum()
        used.add(best)
    union += sum((pred == p).sum() for p in np.unique(pred[pred > 0]) if p not in used)
    return intersection / union


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iou_and_aji_match_brute_force_on_random_maps(seed):
    rng = np.random.default_rng(seed)
    true = instances_from_binary(rng.random(SHAPE) < 0.3)
    noisy = (true > 0) ^ (rng.random(SHAPE) < 0.1)  # a prediction that mostly agrees
    pred = instances_from_binary(noisy) * 3  # non-contiguous ids
    iou = reference_iou(true, pred)
    np.testing.assert_allclose(pairwise_iou(true, pred), iou)
    assert aggregated_jaccard_index(true, pred) == pytest.approx(reference_aji(true, pred))
    matched = iou[iou > 0.5]
    pq = panoptic_quality(true, pred)
    assert pq["tp"] == len(matched) > 0
    assert pq["sq"] == pytest.approx(matched.mean())


def test_matches_above_half_are_unique():
    true, pred = scene()
    true_index, pred_index = match_pairs(pairwise_iou(true, pred), 0.5)
    assert len(set(true_index)) == len(true_index) and len(set(pred_index)) == len(pred_index)


def test_binary_prediction_becomes_connected_components():
    true, _ = scene()
    scores = object_metrics(true, true > 0)
    assert scores["aji"] == 1.0 and scores["pq"] == 1.0 and scores["n_pred"] == 4


def test_watershed_splits_touching_discs():
    touching = discs([(20, 15), (20, 32)], radius=10) > 0
    assert instances_from_binary(touching).max() == 1
    split = instances_from_binary(touching, watershed=True, min_distance=5)
    assert split.dtype == np.int32 and split.max() == 2
    # Each half is close to its disc.
    assert panoptic_quality(discs([(20, 15), (20, 32)], radius=10), split)["tp"] == 2


def test_min_size_removes_small_objects_and_renumbers():
    mask = boxes((0, 10, 0, 10), (20, 22, 20, 22), (30, 38, 30, 38)) > 0
    labels = instances_from_binary(mask, min_size=5)
    assert sorted(np.unique(labels)) == [0, 1, 2]
    assert not labels[20:22, 20:22].any()


def test_diagonal_pixels_are_one_object():
    mask = np.eye(5, dtype=bool)
    assert instances_from_binary(mask).max() == 1


def test_bad_inputs_raise_one_line_errors():
    one = boxes((0, 5, 0, 5))
    with pytest.raises(DataFormatError, match="shape"):
        pairwise_iou(one, one[:-1])
    with pytest.raises(DataFormatError, match="negative"):
        pairwise_iou(one, -one)
    with pytest.raises(DataFormatError, match="non-integer"):
        pairwise_iou(one, one * 0.5)
    with pytest.raises(DataFormatError, match="binary predictions only"):
        object_metrics(one, one * 2, watershed=True)
