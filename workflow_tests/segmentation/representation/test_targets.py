"""Instance-aware targets, their watershed post-processing, tuning and PanNuke's bPQ/mPQ.

Round trips run on clean synthetic masks (touching discs included); the bPQ and
mPQ cases are worked out by hand in the comments.
"""

import inspect
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from conftest import touching_discs as discs
from scipy import ndimage

from nucleiflow import catalog
from nucleiflow.errors import ConfigError, DataFormatError
from nucleiflow.segmentation.evaluation.instances import panoptic_quality
from nucleiflow.segmentation.evaluation.pannuke_metrics import (
    PANNUKE_COLUMNS,
    image_counts,
    image_scores,
    nucleus_types,
    tissue_summary,
)
from nucleiflow.segmentation.representation import postprocess, targets
from nucleiflow.segmentation.representation.postprocess import (
    DEFAULT_GRIDS,
    DEFAULT_PARAMS,
    FLOODS,
    WatershedParams,
    hv_energy,
    instances_from_contour,
    instances_from_hv,
    opencv_sobel_kernels,
    params_from_dict,
    params_to_dict,
    tune_postprocess,
)
from nucleiflow.segmentation.representation.targets import contour_target, hv_target, make_target

# Touching pairs, a touching row of three, isolated nuclei and one cut by the image edge.
SCENES = [
    discs([(15, 15), (15, 27), (40, 40), (50, 12)], [7, 6, 9, 5]),
    discs([(30, 30), (30, 42), (42, 36), (10, 10), (10, 20), (10, 30)], [7, 6, 7, 5, 5, 5]),
    discs([(20, 50), (32, 50), (58, 3), (0, 10)], [6, 6, 6, 6]),
]
# Three nuclei meeting at one point: at such a junction the contour target does not say which nucleus a
# boundary pixel belongs to (relabelling it gives the same target), so only near-equality is possible there.
JUNCTION = discs([(20, 20), (20, 33), (32, 26), (50, 50), (0, 60)], [8, 7, 8, 6, 6])


def same_instances(a, b) -> bool:
    """True when two label maps hold the same objects, whatever their ids."""
    pairs = set(zip(np.asarray(a).ravel().tolist(), np.asarray(b).ravel().tolist()))
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def one_hot(contour):
    return np.stack([contour == k for k in range(3)]).astype(float)


CLEAN = WatershedParams(min_size=0, marker_min_size=0)


def test_registry_matches_catalog():
    assert tuple(targets.TARGETS) == catalog.INSTANCE_TARGETS
    assert tuple(targets.TARGET_CHANNELS) == catalog.INSTANCE_TARGETS
    assert tuple(postprocess.POSTPROCESSORS) == catalog.INSTANCE_TARGETS
    assert tuple(DEFAULT_PARAMS) == catalog.INSTANCE_TARGETS
    with pytest.raises(ConfigError, match="'dist'.*binary, contour, hv") as caught:
        make_target("dist", SCENES[0])
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="flood: 'edges'.*boundary, distance"):
        WatershedParams(flood="edges")
    with pytest.raises(ConfigError, match="min_size: -1"):
        WatershedParams(min_size=-1)


def test_binary_and_contour_targets_on_a_hand_made_pair():
    labels = np.zeros((5, 8), dtype=np.int32)
    labels[1:4, 1:4] = 1
    labels[1:4, 4:7] = 2  # touching nucleus 1 along a column
    assert make_target("binary", labels).sum() == 18
    contour = contour_target(labels)
    # Each 3 x 3 nucleus keeps only its centre as interior; everything else of it touches another label.
    expected = np.zeros((5, 8), dtype=np.uint8)
    expected[1:4, 1:7] = 2
    expected[2, 2] = expected[2, 5] = 1
    np.testing.assert_array_equal(contour, expected)
    # The image edge is no boundary: a nucleus filling a row edge to edge keeps an interior there.
    edge = np.zeros((4, 6), dtype=np.int32)
    edge[0:3, :] = 1
    np.testing.assert_array_equal(contour_target(edge)[0], [1, 1, 1, 1, 1, 1])
    with pytest.raises(ConfigError, match="contour width: 0"):
        contour_target(labels, width=0)


def test_hv_maps_sign_and_range_on_a_hand_made_nucleus():
    labels = np.zeros((9, 9), dtype=np.int32)
    labels[2:7, 1:8] = 3  # 5 rows x 7 cols, centre of mass at row 4, col 4; id need not be 1
    hv = hv_target(labels)
    assert hv.shape == (3, 9, 9) and hv.dtype == np.float32
    fg, h, v = hv
    np.testing.assert_array_equal(fg, labels > 0)
    # h: -1 at the leftmost column, +1 at the rightmost, 0 on the centre column, linear in between.
    np.testing.assert_allclose(h[4, 1:8], [-1, -2 / 3, -1 / 3, 0, 1 / 3, 2 / 3, 1], atol=1e-6)
    # v grows downwards (row index): -1 on the top row, +1 on the bottom row.
    np.testing.assert_allclose(v[2:7, 4], [-1, -0.5, 0, 0.5, 1], atol=1e-6)
    assert h[labels == 0].max() == v[labels == 0].max() == 0  # background stays 0
    # Per nucleus: each of several nuclei of different sizes spans exactly [-1, 1].
    for label in range(1, SCENES[0].max() + 1):
        for channel in (1, 2):
            values = hv_target(SCENES[0])[channel][SCENES[0] == label]
            assert values.min() == pytest.approx(-1) and values.max() == pytest.approx(1)


@pytest.mark.parametrize("scene", range(len(SCENES)))
def test_contour_round_trip(scene):
    labels = SCENES[scene]
    for width in (1, 2):
        prediction = one_hot(contour_target(labels, width=width))
        for flood in FLOODS:
            params = WatershedParams(flood=flood, min_size=0, marker_min_size=0)
            assert same_instances(labels, instances_from_contour(prediction, params)), (width, flood)


@pytest.mark.parametrize("scene", range(len(SCENES)))
def test_hv_round_trip(scene):
    labels = SCENES[scene]
    params = replace(DEFAULT_PARAMS["hv"], min_size=0)  # HoVer-Net's settings, smoothing included
    assert same_instances(labels, instances_from_hv(hv_target(labels), params))


@pytest.mark.parametrize("size", [3, 5, 21, 31])
def test_hv_energy_is_hovernets_with_opencvs_sobel(size):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(size)
    h, v = rng.normal(size=(2, 40, 52))

    def scaled(array):
        return (array - array.min()) / np.ptp(array)

    # HoVer-Net's released post-processing (models/hovernet/post_proc.py), with ksize as the parameter.
    reference = np.maximum(
        1 - scaled(cv2.Sobel(scaled(h), cv2.CV_64F, 1, 0, ksize=size)),
        1 - scaled(cv2.Sobel(scaled(v), cv2.CV_64F, 0, 1, ksize=size)),
    )
    np.testing.assert_allclose(hv_energy(h, v, sobel_sigma=0, sobel_size=size), reference, atol=1e-12)
    smoothing, derivative = opencv_sobel_kernels(size)
    assert smoothing.size == derivative.size == size and derivative.sum() == 0


def test_sobel_size_is_validated_and_old_settings_keep_the_3_x_3_kernel():
    with pytest.raises(ConfigError, match="sobel_size: 4 is not valid; choose an odd integer from 3 to 31"):
        WatershedParams(sobel_size=4)
    with pytest.raises(ConfigError, match="sobel_size: 33"):
        WatershedParams(sobel_size=33)
    saved = params_to_dict(DEFAULT_PARAMS["hv"])
    del saved["sobel_size"]  # a postprocess.json written before the field existed
    assert params_from_dict(saved).sobel_size == 3
    assert DEFAULT_GRIDS["hv"]["sobel_size"] == [3, 21]  # tuning tries HoVer-Net's released kernel


@pytest.mark.parametrize("scene", range(len(SCENES)))
def test_hv_round_trip_with_hovernets_released_sobel(scene):
    # HoVer-Net's code: a 21 x 21 Sobel, no Gaussian before it.
    params = replace(DEFAULT_PARAMS["hv"], min_size=0, sobel_size=21, sobel_sigma=0.0)
    assert same_instances(SCENES[scene], instances_from_hv(hv_target(SCENES[scene]), params))


def test_round_trips_at_a_triple_junction():
    # Both targets find every nucleus; the smoothing of the hv energy may move a dividing pixel or two.
    for prediction, target in ((one_hot(contour_target(JUNCTION)), "contour"), (hv_target(JUNCTION), "hv")):
        params = replace(DEFAULT_PARAMS[target], min_size=0, marker_min_size=0)
        result = panoptic_quality(JUNCTION, postprocess.postprocess(target, prediction, params))
        assert result["tp"] == JUNCTION.max() and result["fp"] == result["fn"] == 0, target
        assert result["sq"] > 0.99, target


def test_binary_target_alone_merges_touching_nuclei_that_contour_separates():
    # Why the instance targets exist: thresholding the foreground merges a touching pair.
    labels = SCENES[0]
    merged = postprocess.postprocess(
        "binary", make_target("binary", labels), WatershedParams(min_distance=0, min_size=0)
    )
    assert merged.max() == labels.max() - 1
    assert same_instances(labels, postprocess.postprocess("contour", one_hot(contour_target(labels)), CLEAN))


def blurry_contour(labels, rng):
    """Contour probabilities of a blurry model, plus faint background specks.

    Interior 0.65 (and 0.3 bleeding into the boundary), boundary 0.65 (0.1 inside): interior + boundary is
    0.75 on interiors and 0.95 on boundaries. Specks: 3 x 3 squares of interior 0.35 away from the nuclei.
    """
    contour = contour_target(labels)
    probs = np.zeros((3, *labels.shape))
    probs[1] = np.select([contour == 1, contour == 2], [0.65, 0.3])
    probs[2] = np.select([contour == 1, contour == 2], [0.1, 0.65])
    near_nuclei = ndimage.binary_dilation(labels > 0, iterations=3)
    for r, c in rng.integers(2, labels.shape[0] - 2, size=(40, 2)):
        if not near_nuclei[r - 2 : r + 3, c - 2 : c + 3].any():
            probs[1][r - 1 : r + 2, c - 1 : c + 2] = 0.35
    probs[0] = 1 - probs[1] - probs[2]
    return probs


def test_tuning_picks_the_known_best_setting():
    rng = np.random.default_rng(0)
    # A small nucleus (13 pixels) in each image, so that a large min_size costs a true object.
    val_labels = [np.where((scene == 0) & (discs([(60, 60)], [2]) > 0), scene.max() + 1, scene) for scene in SCENES[:2]]
    val_predictions = [blurry_contour(labels, rng) for labels in val_labels]
    grid = {"foreground_threshold": [0.2, 0.5, 0.8], "marker_threshold": [0.2, 0.5, 0.7], "min_size": [0, 20]}
    result = tune_postprocess(val_predictions, val_labels, grid, target="contour")
    # Mask 0.2 lets the specks in; 0.8 keeps only boundaries. Markers 0.2 take the boundary too and merge
    # touching nuclei; 0.7 finds none. min_size 20 drops the small nucleus. Only one setting recovers all.
    assert result.params == replace(
        DEFAULT_PARAMS["contour"], foreground_threshold=0.5, marker_threshold=0.5, min_size=0
    )
    assert result.mean_pq > 0.95
    assert sorted(pq for _, pq in result.trials)[-2] < result.mean_pq - 0.05  # a clear winner, not a tie
    assert len(result.trials) == 18
    with pytest.raises(ConfigError, match="'threshold'.*foreground_threshold"):
        tune_postprocess(val_predictions, val_labels, {"threshold": [0.5]}, target="contour")
    with pytest.raises(DataFormatError, match="got 2 and 1"):
        tune_postprocess(val_predictions, val_labels[:1], grid, target="contour")


def test_tuning_signature_takes_validation_data_only():
    parameters = inspect.signature(tune_postprocess).parameters
    assert list(parameters) == ["predictions_val", "instances_val", "grid", "target"]
    assert parameters["target"].kind is inspect.Parameter.KEYWORD_ONLY
    assert not [name for name in parameters if "test" in name]


# ---------------------------------------------------------------- PanNuke bPQ / mPQ


def boxes(*specs, shape=(20, 20)):
    """(instance map, class map) with nucleus k+1 filling rows r0:r1, cols c0:c1 of specs[k] with class cls."""
    labels = np.zeros(shape, dtype=np.int32)
    classes = np.zeros(shape, dtype=np.uint8)
    for label, (r0, r1, c0, c1, cls) in enumerate(specs, start=1):
        labels[r0:r1, c0:c1] = label
        classes[r0:r1, c0:c1] = cls
    return labels, classes


def benchmark_case():
    """Two tissues, four images; the numbers are worked out in test_pannuke_scores_by_hand."""
    truth, pred = [], []
    # Image 0 (tissue A): two class-1 nuclei found exactly; the class-2 nucleus found exactly but typed 3.
    truth.append(boxes((0, 5, 0, 5, 1), (0, 5, 10, 15, 1), (10, 16, 0, 6, 2)))
    pred.append(boxes((0, 5, 0, 5, 1), (0, 5, 10, 15, 1), (10, 16, 0, 6, 3)))
    # Image 1 (tissue A): one class-1 nucleus of 36 pixels, predicted as 24 of them (IoU 2/3); class 2 absent.
    truth.append(boxes((2, 8, 2, 8, 1)))
    pred.append(boxes((2, 8, 2, 6, 1)))
    # Image 2 (tissue B): one class-4 nucleus, nothing predicted.
    truth.append(boxes((5, 10, 5, 10, 4)))
    pred.append(boxes())
    # Image 3 (tissue B): no true nucleus, one predicted: skipped by both metrics.
    truth.append(boxes())
    pred.append(boxes((5, 10, 5, 10, 4)))
    tissues = ["A", "A", "B", "B"]
    return truth, pred, tissues


def score(truth, pred, tissues):
    """(per-image columns, PanNuke summary) as evaluation and the PanNuke table compute them."""
    rows = [
        {"tissue": tissue, **image_scores(image_counts(t[0], t[1], p[0], p[1]))}
        for t, p, tissue in zip(truth, pred, tissues)
    ]
    per_image = pd.DataFrame(rows, columns=list(PANNUKE_COLUMNS))
    return per_image, tissue_summary(per_image)


def test_pannuke_scores_by_hand():
    truth, pred, tissues = benchmark_case()
    per_image, summary = score(truth, pred, tissues)
    # bPQ per image: 1 (three exact matches), 2/3, 0, skipped. Tissue A 5/6, B 0; bPQ 5/12.
    assert list(per_image["bpq"][:3]) == pytest.approx([1, 2 / 3, 0])
    assert np.isnan(per_image["bpq"][3])
    assert summary["tissue_bpq"] == pytest.approx({"A": 5 / 6, "B": 0})
    assert summary["bpq"] == pytest.approx(5 / 12)
    # mPQ per image: image 0 class 1 = 1, class 2 = 0 (its nucleus was typed 3), class 3 skipped (no true
    # class-3 nucleus, so the mistyped prediction costs nothing there): 1/2. Image 1: class 1 only, 2/3.
    # Image 2: 0. Image 3 skipped. Tissue A (1/2 + 2/3) / 2 = 7/12, B 0; mPQ 7/24.
    assert summary["tissue_mpq"] == pytest.approx({"A": 7 / 12, "B": 0})
    assert summary["mpq"] == pytest.approx(7 / 24)
    # Per class over all images: class 1 (1 + 2/3) / 2, class 2 0, class 4 0; classes 3 and 5 never true.
    class_pq = per_image[[f"pq_class_{c}" for c in range(1, 6)]].mean()
    assert class_pq["pq_class_1"] == pytest.approx(5 / 6)
    assert class_pq["pq_class_2"] == class_pq["pq_class_4"] == 0
    assert np.isnan(class_pq["pq_class_3"]) and np.isnan(class_pq["pq_class_5"])


def test_perfect_and_empty_predictions():
    truth, _, tissues = benchmark_case()
    assert score(truth, truth, tissues)[1]["bpq"] == score(truth, truth, tissues)[1]["mpq"] == 1.0
    empty = score(truth, [boxes() for _ in truth], tissues)[1]
    assert empty["bpq"] == empty["mpq"] == 0.0


def test_nucleus_types_by_majority_vote():
    labels = np.zeros((6, 10), dtype=np.int32)
    labels[:, :5], labels[:, 5:9] = 1, 2
    classes = np.zeros((6, 10), dtype=np.uint8)
    classes[:4, :5], classes[4:, :5] = 2, 3  # nucleus 1: 20 pixels of class 2, 10 of class 3
    classes[:, 5:6] = 4  # nucleus 2: 6 pixels of class 4, the other 18 background: background never wins
    assert nucleus_types(labels, classes) == {1: 2, 2: 4}
    assert nucleus_types(labels, np.zeros_like(classes)) == {1: 0, 2: 0}  # untyped
    # Class probabilities (C, H, W) are voted on through their argmax.
    probs = np.stack([classes == k for k in range(5)]).astype(float)
    assert nucleus_types(labels, probs) == {1: 2, 2: 4}
