"""Nucleus vs micronucleus study: data layout, split, augmentation, features, classifiers, CNNs."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    f1_score,
    matthews_corrcoef,
    precision_score,
    recall_score,
)

from nucleiflow.classification import augment, classic, dataset, features, models, training
from nucleiflow.errors import ConfigError, DataFormatError

N_PER_CLASS = {"nucleus": 12, "micronucleus": 13}


def _blob_image(rng: np.random.Generator, micronucleus: bool) -> Image.Image:
    """A dark noisy crop with one big bright blob, plus small satellites for a micronucleus."""
    size = int(rng.integers(40, 91))
    yy, xx = np.mgrid[:size, :size]
    image = rng.normal(30, 8, (size, size))
    centre = size / 2 + rng.uniform(-3, 3, 2)
    radius = size * rng.uniform(0.22, 0.3)
    image[(yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2] = 200
    for _ in range(int(rng.integers(1, 4)) if micronucleus else 0):
        angle = rng.uniform(0, 2 * np.pi)
        at = centre + (radius + size * 0.12) * np.array([np.sin(angle), np.cos(angle)])
        image[(yy - at[0]) ** 2 + (xx - at[1]) ** 2 < (size * 0.05) ** 2] = 190
    gray = np.clip(image, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        return Image.fromarray(gray, mode="L")
    tint = np.array([1.0, 0.8, 0.9])
    return Image.fromarray((gray[..., None] * tint).astype(np.uint8), mode="RGB")


def _write_dataset(root, counts=N_PER_CLASS, seed=0):
    rng = np.random.default_rng(seed)
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            _blob_image(rng, name == "micronucleus").save(root / name / f"{name}_{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    return _write_dataset(tmp_path_factory.mktemp("nucrec"))


@pytest.fixture(scope="module")
def manifest(dataset_root):
    return dataset.read_class_folders(dataset_root)


@pytest.fixture(scope="module")
def split_manifest(manifest):
    split = dataset.split_classes(manifest, test_fraction=0.3, seed=7)
    return manifest.merge(split[["image_id", "split"]], on="image_id")


@pytest.fixture(scope="module")
def feature_sets(split_manifest):
    images = [dataset.load_image(p, 64) for p in split_manifest["path"]]
    X = features.extract_features(images)
    train = (split_manifest["split"] == "train").to_numpy()
    y = split_manifest["label"].to_numpy()
    return X[train], y[train], X[~train], y[~train]


# --- data: layout and validation ---------------------------------------------------------------


def test_read_class_folders_lists_every_image(manifest, dataset_root):
    assert list(manifest.columns) == ["image_id", "path", "label", "label_index"]
    assert manifest["label"].value_counts().to_dict() == N_PER_CLASS
    assert (manifest["label_index"] == manifest["label"].map(dataset.CLASS_NAMES.index)).all()
    assert manifest["image_id"].iloc[0] == "nucleus/nucleus_000.png"
    assert all((dataset_root / i).is_file() for i in manifest["image_id"])


def test_missing_class_folder_names_it_and_the_expected_ones(tmp_path):
    _write_dataset(tmp_path, {"nucleus": 2})
    with pytest.raises(DataFormatError, match=r"micronucleus.*expected class folders: nucleus, micronucleus"):
        dataset.read_class_folders(tmp_path)


def test_undecodable_image_is_named(tmp_path):
    _write_dataset(tmp_path, {"nucleus": 2, "micronucleus": 2})
    (tmp_path / "micronucleus" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataFormatError, match="broken.png"):
        dataset.read_class_folders(tmp_path)


def test_stray_non_image_file_is_named_and_hidden_files_are_skipped(tmp_path):
    _write_dataset(tmp_path, {"nucleus": 2, "micronucleus": 2})
    (tmp_path / "nucleus" / ".DS_Store").write_bytes(b"\0")
    assert len(dataset.read_class_folders(tmp_path)) == 4
    (tmp_path / "nucleus" / "notes.txt").write_text("scored by hand")
    with pytest.raises(DataFormatError, match="notes.txt"):
        dataset.read_class_folders(tmp_path)


def test_class_with_too_few_images_is_named(tmp_path):
    frame = dataset.read_class_folders(_write_dataset(tmp_path, {"nucleus": 5, "micronucleus": 1}))
    with pytest.raises(DataFormatError, match=r"'micronucleus' has 1 image"):
        dataset.split_classes(frame, seed=0)


def test_load_image_makes_square_rgb(manifest):
    grey = next(p for p in manifest["path"] if Image.open(p).mode == "L")
    image = dataset.load_image(grey, 48)
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8
    assert (image[..., 0] == image[..., 2]).all()


# --- split -----------------------------------------------------------------------------------


def test_split_is_stratified_disjoint_and_reproducible(manifest):
    split = dataset.split_classes(manifest, test_fraction=0.3, seed=3)
    assert list(split.columns) == ["image_id", "label", "split"]
    assert split["image_id"].is_unique and set(split["image_id"]) == set(manifest["image_id"])
    counts = split.groupby(["label", "split"]).size().unstack()
    for name, total in N_PER_CLASS.items():
        assert counts.loc[name, "test"] == round(0.3 * total)
        assert counts.loc[name, "train"] == total - round(0.3 * total)
    pd.testing.assert_frame_equal(split, dataset.split_classes(manifest, test_fraction=0.3, seed=3))
    assert not split.equals(dataset.split_classes(manifest, test_fraction=0.3, seed=4))


# --- offline augmentation --------------------------------------------------------------------


def test_augmentation_is_deterministic_balanced_and_keeps_originals(split_manifest, dataset_root, tmp_path):
    train = split_manifest[split_manifest["split"] == "train"]
    runs = [
        augment.augment_training_set(train, dataset_root, tmp_path / name, n_total=40, image_size=32, seed=1)
        for name in ("a", "b")
    ]
    first, second = runs
    assert list(first.columns) == ["image_id", "path", "label", "label_index", "source_image_id"]
    assert len(first) == 40 and len(list((tmp_path / "a").rglob("*.png"))) == 40
    assert first["label"].value_counts().to_dict() == {"nucleus": 20, "micronucleus": 20}
    originals = first[first["image_id"].str.contains("/orig_")]
    assert sorted(originals["source_image_id"]) == sorted(train["image_id"])
    assert set(first["source_image_id"]) <= set(train["image_id"])  # nothing from the test split
    pd.testing.assert_frame_equal(first.drop(columns="path"), second.drop(columns="path"))
    for image_id in first["image_id"]:
        a, b = (np.asarray(Image.open(tmp_path / run / image_id)) for run in ("a", "b"))
        assert a.shape == (32, 32, 3) and np.array_equal(a, b)
    changed = augment.augment_training_set(train, dataset_root, tmp_path / "c", 40, 32, seed=2)
    assert not all(
        np.array_equal(np.asarray(Image.open(tmp_path / "a" / i)), np.asarray(Image.open(tmp_path / "c" / i)))
        for i in changed["image_id"]
    )


def test_augmentation_rejects_n_total_below_originals(split_manifest, dataset_root, tmp_path):
    train = split_manifest[split_manifest["split"] == "train"]
    with pytest.raises(ConfigError, match="n_total"):
        augment.augment_training_set(train, dataset_root, tmp_path / "x", n_total=3, image_size=32, seed=0)


# --- features --------------------------------------------------------------------------------


def test_features_have_fixed_length_and_finite_values(split_manifest):
    rng = np.random.default_rng(0)
    images = [np.asarray(Image.open(p)) for p in split_manifest["path"][:6]]  # raw sizes, some 2-D
    images += [np.zeros((50, 70, 3), np.uint8), rng.integers(0, 256, (45, 45, 3), dtype=np.uint8)]
    X = features.extract_features(images)
    assert X.shape == (len(images), len(features.feature_names()))
    assert len(set(features.feature_names())) == X.shape[1]
    assert np.isfinite(X).all()
    assert features.extract_features([]).shape == (0, X.shape[1])
    assert "micronucle" in features.FEATURE_SET_DESCRIPTION


def test_satellite_count_separates_the_classes(split_manifest):
    X = features.extract_features([dataset.load_image(p, 64) for p in split_manifest["path"]])
    satellites = X[:, features.feature_names().index("shape_n_satellites")]
    is_micro = (split_manifest["label"] == "micronucleus").to_numpy()
    assert satellites[is_micro].mean() > satellites[~is_micro].mean() + 0.5


# --- classic classifiers ---------------------------------------------------------------------


def test_registry_holds_the_papers_eleven_classifiers():
    assert len(classic.CLASSIFIERS) == 11
    assert {"SVM", "QDA", "Voting", "Histogram Gradient Boosting"} <= set(classic.CLASSIFIERS)


def test_every_classifier_runs_and_metrics_are_in_range(feature_sets):
    X_train, y_train, X_test, y_test = feature_sets
    start = time.perf_counter()
    results = classic.evaluate_classifiers(*feature_sets, n_jobs=2, seed=0)
    print(f"11-classifier grid: {time.perf_counter() - start:.2f} s")
    assert list(results.columns) == classic.RESULT_COLUMNS
    assert list(results["classifier"]) == list(classic.CLASSIFIERS)
    assert (results["fit_seconds"] >= 0).all()
    assert results["accuracy"].max() > 0.7  # the satellite features make this task easy
    # Each row holds scikit-learn's scores of that classifier's own test predictions (seeded: refitting repeats them).
    for name in ("Decision Tree", "K-Nearest Neighbours", "Gaussian Naive Bayes", "Logistic Regression"):
        predicted = classic.build_classifier(name, seed=0).fit(X_train, y_train).predict(X_test)
        row = results.set_index("classifier").loc[name]
        assert row[["accuracy", "precision", "recall", "f1", "mcc", "kappa"]].to_dict() == pytest.approx(
            _sklearn_scores(y_test, predicted)
        ), name


def _sklearn_scores(y_true, y_pred) -> dict[str, float]:
    return {
        "accuracy": accuracy_score(y_true, y_pred),
        "precision": precision_score(y_true, y_pred, average="weighted", zero_division=0),
        "recall": recall_score(y_true, y_pred, average="weighted", zero_division=0),
        "f1": f1_score(y_true, y_pred, average="weighted", zero_division=0),
        "mcc": matthews_corrcoef(y_true, y_pred),
        "kappa": cohen_kappa_score(y_true, y_pred),
    }


# Three classes with supports 4, 3 and 3; every class has its own precision and recall.
FIXED_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
FIXED_PRED = np.array([0, 0, 1, 2, 1, 1, 0, 2, 2, 1])


def test_scores_of_fixed_predictions_are_the_weighted_ones_by_hand_and_by_scikit_learn():
    scores = classic.score_predictions(FIXED_TRUE, FIXED_PRED)
    assert scores == pytest.approx(_sklearn_scores(FIXED_TRUE, FIXED_PRED))
    # By hand from the confusion matrix [[2, 1, 1], [1, 2, 0], [0, 1, 2]] (rows: true class):
    # precision per class 2/3, 2/4, 2/3; recall 2/4, 2/3, 2/3; weights 0.4, 0.3, 0.3.
    precision, recall = [2 / 3, 2 / 4, 2 / 3], [2 / 4, 2 / 3, 2 / 3]
    f1 = [2 * p * r / (p + r) for p, r in zip(precision, recall)]
    weights = [0.4, 0.3, 0.3]
    observed, chance = 0.6, (4 * 3 + 3 * 4 + 3 * 3) / 100  # accuracy; expected agreement of the marginals
    cov = 6 * 10 - (3 * 4 + 4 * 3 + 3 * 3)  # Gorodkin's multiclass MCC: c*s - sum(p_k*t_k) ...
    mcc = cov / np.sqrt((100 - (3**2 + 4**2 + 3**2)) * (100 - (4**2 + 3**2 + 3**2)))  # ... over both spreads
    assert scores == pytest.approx(
        {
            "accuracy": 0.6,
            "precision": np.dot(weights, precision),
            "recall": np.dot(weights, recall),
            "f1": np.dot(weights, f1),
            "mcc": mcc,
            "kappa": (observed - chance) / (1 - chance),
        }
    )
    assert scores["precision"] != pytest.approx(np.mean(precision))  # weighted, not the plain mean


def test_unknown_classifier_lists_valid_names(feature_sets):
    with pytest.raises(ConfigError, match="Random Forest"):
        classic.evaluate_classifiers(*feature_sets, names=["Random Forrest"])


def test_qda_on_collinear_features_raises_no_warning():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(60, 6))
    X = np.hstack([base, base * 2.0, base[:, :3] + base[:, 3:]])  # exactly collinear columns
    y = np.repeat([0, 1], 30)
    X[y == 1] += 0.8
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = classic.build_classifier("QDA", seed=0).fit(X, y)
        assert model.predict_proba(X).shape == (60, 2)
    # More features than samples per class: still fitted, on fewer components than the smallest class.
    wide = rng.normal(size=(20, 200))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        classic.build_classifier("QDA").fit(wide, np.repeat([0, 1], 10))


# --- CNNs ------------------------------------------------------------------------------------


def test_small_cnn_trains_two_epochs_and_reports_per_epoch_metrics(split_manifest):
    train = split_manifest[split_manifest["split"] == "train"]
    test = split_manifest[split_manifest["split"] == "test"]
    model = models.build_classifier("small_cnn", seed=0)
    kwargs = {"epochs": 2, "batch_size": 8, "lr": 1e-3, "image_size": 32, "seed": 0, "progress": False}
    history = training.train_classifier(model, train, test, **kwargs)
    assert list(history.columns) == training.HISTORY_COLUMNS
    assert history["epoch"].tolist() == [1, 2]
    assert np.isfinite(history[["train_loss", "val_loss"]].to_numpy()).all()
    rates = history.drop(columns=["epoch", "train_loss", "val_loss"])
    assert rates.stack().between(0, 1).all()
    again = training.train_classifier(models.build_classifier("small_cnn", seed=0), train, test, **kwargs)
    pd.testing.assert_frame_equal(history, again)  # seeded


def test_select_epochs_keeps_the_papers_table_epochs():
    history = pd.DataFrame({"epoch": range(1, 26), "val_loss": np.linspace(1, 0, 25)})
    assert training.select_epochs(history)["epoch"].tolist() == [1, 10, 20]


def test_auc_is_nan_when_only_one_class_is_present():
    metrics = training.epoch_metrics(np.array([1, 1, 1]), np.array([[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]]), 0.5)
    assert np.isnan(metrics["auc"]) and metrics["accuracy"] == pytest.approx(2 / 3)


def test_inception_resnet_v2_builds_without_weights_and_gives_two_logits():
    model = models.build_classifier("inception_resnet_v2", num_classes=2, pretrained=False).eval()
    size = models.INPUT_SIZES["inception_resnet_v2"]
    with torch.no_grad():
        logits = model(torch.zeros(2, 3, size, size))
    assert logits.shape == (2, 2)


def test_unknown_cnn_and_too_small_input_are_config_errors():
    with pytest.raises(ConfigError, match="small_cnn"):
        models.build_classifier("resnet9000")
    with pytest.raises(ConfigError, match="at least 75"):
        models.check_input_size("inception_resnet_v2", 64)
