"""Pixel metrics against scikit-learn, the 0/0 convention, and pooled summaries."""

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from nucleiflow.catalog import METRIC_DISPLAY_NAMES as DISPLAY_NAMES
from nucleiflow.errors import DataFormatError
from nucleiflow.segmentation.evaluation.metrics import (
    METRIC_NAMES,
    confusion_counts,
    metrics_from_counts,
    pixel_metrics,
    summarize,
)


def random_masks(seed, density, shape=(32, 40)):
    rng = np.random.default_rng(seed)
    target = rng.random(shape) < density
    # Predictions agree with the target on most pixels, like a trained model.
    flip = rng.random(shape) < 0.2
    return target ^ flip, target


def sklearn_metrics(pred, target):
    y_true, y_pred = target.ravel(), pred.ravel()
    return {
        "acc": skm.accuracy_score(y_true, y_pred),
        "dice": skm.f1_score(y_true, y_pred),
        "sensitivity": skm.recall_score(y_true, y_pred),
        "iou": skm.jaccard_score(y_true, y_pred),
        "precision": skm.precision_score(y_true, y_pred),
        "f1": skm.f1_score(y_true, y_pred),
        "specificity": skm.recall_score(y_true, y_pred, pos_label=False),
        "mcc": skm.matthews_corrcoef(y_true, y_pred),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("density", [0.05, 0.3, 0.5, 0.9])
def test_every_metric_matches_sklearn(seed, density):
    pred, target = random_masks(seed, density)
    ours = pixel_metrics(pred, target)
    for name, expected in sklearn_metrics(pred, target).items():
        assert ours[name] == pytest.approx(expected, abs=1e-12), name


def test_counts_add_up_and_accept_non_bool_masks():
    pred, target = random_masks(3, 0.4)
    tp, fp, fn, tn = confusion_counts(pred.astype(np.uint8) * 255, target.astype(np.int32))
    assert (tp, fp, fn, tn) == confusion_counts(pred, target)
    assert tp + fp + fn + tn == pred.size
    assert tp == np.sum(pred & target)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(5, 4\)"):
        confusion_counts(np.zeros((4, 5), bool), np.zeros((5, 4), bool))


def test_empty_target_and_empty_prediction_score_perfect():
    empty = np.zeros((8, 8), bool)
    m = pixel_metrics(empty, empty)
    for name in ("acc", "dice", "iou", "sensitivity", "precision", "f1", "specificity"):
        assert m[name] == 1.0, name
    # MCC's denominator is 0 for a constant mask; a perfect prediction scores 1.
    assert m["mcc"] == 1.0


def test_full_masks_match_perfectly():
    full = np.ones((8, 8), bool)
    m = pixel_metrics(full, full)
    assert all(m[name] == 1.0 for name in METRIC_NAMES)


def test_undefined_ratios_of_an_imperfect_prediction_are_zero():
    empty = np.zeros((4, 4), bool)
    spurious = empty.copy()
    spurious[0, 0] = True
    m = pixel_metrics(spurious, empty)  # no nuclei, one false positive
    assert m["sensitivity"] == 0.0 == skm.recall_score(empty.ravel(), spurious.ravel(), zero_division=0)
    assert m["dice"] == m["iou"] == m["precision"] == 0.0
    assert m["mcc"] == 0.0 == skm.matthews_corrcoef(empty.ravel(), spurious.ravel())
    assert m["acc"] == pytest.approx(15 / 16)


def test_all_wrong_prediction():
    target = np.zeros((6, 6), bool)
    target[:3] = True
    m = pixel_metrics(~target, target)
    for name in ("acc", "dice", "sensitivity", "iou", "precision", "f1", "specificity"):
        assert m[name] == 0.0, name
    assert m["mcc"] == pytest.approx(-1.0)


def test_f1_equals_dice():
    m = metrics_from_counts(tp=7, fp=3, fn=5, tn=100)
    assert m["f1"] == m["dice"] == pytest.approx(14 / 22)


def test_pixel_metrics_carries_counts_and_all_metrics():
    pred, target = random_masks(4, 0.3)
    record = pixel_metrics(pred, target)
    assert set(record) == {"tp", "fp", "fn", "tn", *METRIC_NAMES}


def test_every_metric_has_a_display_name():
    assert set(METRIC_NAMES) <= set(DISPLAY_NAMES)
    assert DISPLAY_NAMES["dice"] == "DCS" and DISPLAY_NAMES["sensitivity"] == "SN"


def hand_example():
    # Model A: a perfect small image and a poor large one; model B: one image.
    rows = [
        {"model": "A", "tp": 10, "fp": 0, "fn": 0, "tn": 90},
        {"model": "A", "tp": 10, "fp": 30, "fn": 60, "tn": 900},
        {"model": "B", "tp": 5, "fp": 5, "fn": 0, "tn": 90},
    ]
    return pd.DataFrame([{**r, **metrics_from_counts(r["tp"], r["fp"], r["fn"], r["tn"])} for r in rows])


def test_summarize_mean_differs_from_pooled_on_hand_example():
    summary = summarize(hand_example(), "model").set_index("model")
    a = summary.loc["A"]
    assert a["n_images"] == 2
    assert (a["tp"], a["fp"], a["fn"], a["tn"]) == (20, 30, 60, 990)
    # Mean over images: dice 1.0 and 20/110.
    assert a["dice_mean"] == pytest.approx((1.0 + 20 / 110) / 2)
    assert a["dice_std"] == pytest.approx(np.std([1.0, 20 / 110], ddof=1))
    # Pooled from summed counts: 2*20 / (2*20 + 30 + 60).
    assert a["dice_pooled"] == pytest.approx(40 / 130)
    assert a["iou_pooled"] == pytest.approx(20 / 110)
    assert a["acc_pooled"] == pytest.approx(1010 / 1100)
    assert np.isnan(summary.loc["B", "dice_std"])  # one image: no spread


def test_summarize_keeps_group_order_and_column_layout():
    summary = summarize(hand_example(), ["model"])
    assert list(summary["model"]) == ["A", "B"]
    assert list(summary.columns[:6]) == ["model", "n_images", "tp", "fp", "fn", "tn"]
    assert list(summary.columns[6:9]) == ["acc_mean", "acc_std", "acc_pooled"]


def test_summarize_whole_frame_and_extra_metrics():
    per_image = hand_example().assign(loss=[0.1, 0.5, 0.3])
    summary = summarize(per_image, metrics=["dice", "loss"])
    assert len(summary) == 1
    assert summary.loc[0, "n_images"] == 3
    assert summary.loc[0, "loss_mean"] == pytest.approx(0.3)
    assert "loss_pooled" not in summary  # not computable from counts
    assert summary.loc[0, "dice_pooled"] == pytest.approx(50 / (50 + 35 + 60))


def test_summarize_without_counts_is_a_readable_error():
    with pytest.raises(DataFormatError, match="tp"):
        summarize(hand_example().drop(columns="tp"), "model")
