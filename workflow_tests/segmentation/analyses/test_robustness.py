"""Robustness sweep: perturbations (identity at 0, monotone, seeded), re-use of the clean evaluation, AUCs."""

import numpy as np
import pandas as pd
import pytest

from nucleiflow.segmentation.analyses import robustness as rb
from nucleiflow.segmentation.reports import robustness as rr
from nucleiflow.segmentation.training.augment import build_pipeline

SEVERITIES = {
    "gaussian_noise": [5, 15, 40],
    "gaussian_blur": [0.5, 1.5, 4.0],
    "jpeg": [20, 60, 95],
    "brightness_contrast": [0.1, 0.3, 0.6],
    "stain": [0.1, 0.3, 0.6],
}


def he_image(nucleus=(90, 50, 140), background=(235, 170, 205)):
    """An H&E-like image: pink background, purple textured nuclei (the same layout for any colours)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96]
    img = np.empty((96, 96, 3), np.float64)
    img[:] = background
    for cy, cx in rng.integers(10, 86, size=(12, 2)):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] = nucleus
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def image():
    return he_image()


def mad(a, b):
    return float(np.abs(a.astype(float) - b.astype(float)).mean())


def test_perturbations_match_schema():
    import yaml

    with open("schemas/config.schema.yaml") as handle:
        schema = yaml.safe_load(handle)
    robustness = schema["properties"]["segmentation"]["additionalProperties"]["properties"]["robustness"]
    names = robustness["properties"]["perturbations"]["items"]["properties"]["name"]["enum"]
    assert set(names) == set(rb.PERTURBATIONS) == set(SEVERITIES) == set(rr.SEVERITY_LABELS)


@pytest.mark.parametrize("name", list(SEVERITIES))
def test_severity_zero_is_identity(image, name):
    assert np.array_equal(rb.perturb(image, name, 0, seed=1, image_id="a"), image)


@pytest.mark.parametrize("name", list(SEVERITIES))
def test_effect_grows_with_severity(image, name):
    effects = [mad(rb.perturb(image, name, s, seed=1, image_id="a"), image) for s in SEVERITIES[name]]
    assert effects[0] > 0
    assert effects == sorted(effects) and len(set(effects)) == len(effects), effects


@pytest.mark.parametrize("name", list(SEVERITIES))
def test_perturbation_keeps_shape_and_dtype(image, name):
    out = rb.perturb(image, name, SEVERITIES[name][1], seed=1, image_id="a")
    assert out.shape == image.shape and out.dtype == np.uint8


@pytest.mark.parametrize("name", ["gaussian_noise", "brightness_contrast", "stain"])
def test_seeded_results_reproducible_and_depend_on_the_seed(image, name):
    severity = SEVERITIES[name][1]
    first = rb.perturb(image, name, severity, seed=3, image_id="img1")
    assert np.array_equal(first, rb.perturb(image.copy(), name, severity, seed=3, image_id="img1"))
    others = [
        rb.perturb(image, name, severity, seed=4, image_id="img1"),
        rb.perturb(image, name, severity, seed=3, image_id="img2"),
    ]
    if name == "gaussian_noise":  # the other perturbations draw only a couple of signs: may coincide
        assert all(not np.array_equal(first, other) for other in others)
    assert rb.perturbation_seed(3, "img1", name, severity) != rb.perturbation_seed(3, "img1", name, severity * 2)


def test_stain_without_tissue_falls_back_to_preset_vectors():
    dark = np.zeros((32, 32, 3), np.uint8)
    dark[8:16, 8:16] = 200  # a fluorescence-like image: one "stain"
    vectors = rb.stain_vectors(dark)
    assert vectors.shape == (2, 3) and np.all(np.isfinite(vectors))
    assert rb.perturb(dark, "stain", 0.5, seed=0, image_id="x").shape == dark.shape


def test_stain_normaliser_moves_colours_towards_the_reference(image):
    reference = he_image(nucleus=(150, 60, 170), background=(240, 190, 225))  # a paler, pinker staining
    normalised = rb.StainNormaliser(reference)(image)
    assert normalised.shape == image.shape and normalised.dtype == np.uint8
    target = reference.mean(axis=(0, 1))
    assert mad(normalised.mean(axis=(0, 1)), target) < mad(image.mean(axis=(0, 1)), target)


class _Sample:
    def __init__(self, image_id, image):
        self.image_id, self.image = image_id, image


def test_sweep_reuses_the_clean_evaluation_for_severity_zero(image):
    samples = [_Sample("a", image), _Sample("b", image[::-1].copy())]
    calls = []

    def evaluate(image_of):
        calls.append([image_of(s) for s in samples])
        return pd.DataFrame({"image_id": [s.image_id for s in samples], "dice": [0.5, 0.4]})

    clean = pd.DataFrame({"image_id": ["a", "b"], "dice": [0.9, 0.8]})
    spec = {
        "perturbations": [
            {"name": "gaussian_noise", "severities": [0, 10, 20]},
            {"name": "jpeg", "severities": [50]},
        ]
    }
    frame = rb.sweep(evaluate, clean, spec, seed=1, normaliser=lambda img: img)
    assert len(calls) == 3 + 1  # noise 10, 20, jpeg 50, normalised; never severity 0
    assert all(not np.array_equal(batch[0], image) for batch in calls[:3])
    zero = frame[frame["severity"] == 0]
    assert sorted(zero["perturbation"].unique()) == ["gaussian_noise", "jpeg"]
    assert zero.groupby("perturbation")["dice"].apply(list).to_dict() == {
        "gaussian_noise": [0.9, 0.8],
        "jpeg": [0.9, 0.8],
    }
    assert frame.loc[frame["perturbation"] == rr.NORMALISED, "severity"].isna().all()
    # identical perturbed images on a second call (every model sees the same inputs)
    again = []
    rb.sweep(lambda f: again.append([f(s) for s in samples]) or evaluate(f), clean, spec, seed=1)
    assert all(np.array_equal(x, y) for a, b in zip(calls[:3], again[:3]) for x, y in zip(a, b))


def test_normalised_auc_on_hand_made_curves():
    assert rr.normalised_auc([0, 10], [0.8, 0.8]) == pytest.approx(0.8)  # no degradation: the clean value
    assert rr.normalised_auc([0, 1, 2], [1.0, 0.5, 0.0]) == pytest.approx(0.5)
    assert rr.normalised_auc([2, 0, 1], [0.0, 1.0, 0.5]) == pytest.approx(0.5)  # order does not matter
    assert rr.normalised_auc([0, 1, 3], [1.0, 1.0, 0.0]) == pytest.approx((1.0 + 1.0) / 3)
    with pytest.raises(Exception, match="two distinct severities"):
        rr.normalised_auc([0], [1.0])


def test_auc_table_ranks_models_by_accuracy_and_robustness():
    rows = []
    # model A: better clean, collapses under noise; model B: worse clean, flat
    for model, curve in {"A": [0.9, 0.5, 0.1], "B": [0.8, 0.75, 0.7]}.items():
        for severity, value in zip([0, 10, 20], curve):
            for image_id, offset in (("x", 0.05), ("y", -0.05)):
                rows.append(
                    {
                        "model": model,
                        "perturbation": "gaussian_noise",
                        "severity": severity,
                        "image_id": image_id,
                        "dice": value + offset,
                    }
                )
        rows.append({"model": model, "perturbation": rr.NORMALISED, "severity": np.nan, "image_id": "x", "dice": 0.6})
    table = rr.auc_table(pd.DataFrame(rows), ["dice"]).set_index("model")
    assert table.loc["A", "clean"] == pytest.approx(0.9)
    assert table.loc["A", "auc_gaussian_noise"] == pytest.approx((0.7 + 0.3) / 2)
    assert table.loc["B", "auc_gaussian_noise"] == pytest.approx((0.775 + 0.725) / 2)
    assert table.loc["A", "auc_mean"] == table.loc["A", "auc_gaussian_noise"]
    assert table.loc["A", rr.NORMALISED] == pytest.approx(0.6)
    assert (table.loc["A", "rank_clean"], table.loc["A", "rank_robust"]) == (1, 2)
    assert (table.loc["B", "rank_clean"], table.loc["B", "rank_robust"]) == (2, 1)


def test_degradation_figure_has_a_panel_per_perturbation_and_metric():
    rows = [
        {"model": m, "perturbation": p, "severity": s, "image_id": "x", "dice": 0.5, "aji": 0.4}
        for m in ("A", "B")
        for p in ("gaussian_noise", "jpeg")
        for s in (0, 10)
    ]
    rows += [
        {"model": "A", "perturbation": rr.NORMALISED, "severity": np.nan, "image_id": "x", "dice": 0.6, "aji": 0.5}
    ]
    fig = rr.degradation_figure(pd.DataFrame(rows), ["dice", "aji"])
    assert len(fig.axes) == 2 * 3


def test_training_augmentation_builds_the_same_perturbations():
    import albumentations as A

    names = {
        type(t).__name__
        for t in build_pipeline({"gauss_noise": 0.5, "jpeg": 0.5, "he_stain": 0.5, "gaussian_blur": 0.5})
    }
    assert {"GaussNoise", "ImageCompression", "HEStain", "GaussianBlur"} <= names
    assert not {"GaussNoise", "ImageCompression", "HEStain"} & {type(t).__name__ for t in build_pipeline({})}
    assert isinstance(build_pipeline({"he_stain": 1.0}), A.Compose)
