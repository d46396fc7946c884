"""Per-epoch CNN metrics against scikit-learn on fixed predictions."""

import numpy as np
import pytest
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from nucleiflow.classification.training import epoch_metrics


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture
def three_classes():
    """Fixed labels with unequal supports (5, 10, 15) and probabilities that are informative but imperfect."""
    rng = np.random.default_rng(4)
    labels = np.repeat([0, 1, 2], [5, 10, 15])
    logits = rng.normal(size=(30, 3))
    logits[np.arange(30), labels] += 1.0
    return labels, _softmax(logits)


def test_multiclass_auc_is_scikit_learns_weighted_one_vs_rest(three_classes):
    labels, probabilities = three_classes
    metrics = epoch_metrics(labels, probabilities, loss=0.25)
    expected = roc_auc_score(labels, probabilities, multi_class="ovr", average="weighted")
    assert metrics["auc"] == pytest.approx(expected, rel=1e-12)
    # ... which differs from the unweighted mean here, so the weighting is what is checked.
    assert abs(expected - roc_auc_score(labels, probabilities, multi_class="ovr", average="macro")) > 1e-3
    predictions = probabilities.argmax(axis=1)
    assert metrics["class_precision"] == pytest.approx(precision_score(labels, predictions, average="weighted"))
    assert metrics["class_recall"] == pytest.approx(recall_score(labels, predictions, average="weighted"))
    assert metrics["accuracy"] == pytest.approx((predictions == labels).mean()) and metrics["loss"] == 0.25


def test_multiclass_auc_weighs_only_the_classes_present(three_classes):
    labels, probabilities = three_classes
    keep = labels != 1  # class 1 absent from this pass: no positives, no AUC of its own
    labels, probabilities = labels[keep], probabilities[keep]
    per_class = [roc_auc_score(labels == c, probabilities[:, c]) for c in (0, 2)]
    expected = (5 * per_class[0] + 15 * per_class[1]) / 20
    assert epoch_metrics(labels, probabilities, loss=0.0)["auc"] == pytest.approx(expected, rel=1e-12)


def test_binary_auc_and_class_precision_and_recall_are_those_of_the_positive_class():
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    positive = np.array([0.1, 0.6, 0.3, 0.8, 0.4, 0.9, 0.7, 0.2])
    metrics = epoch_metrics(labels, np.stack([1 - positive, positive], axis=1), loss=0.0)
    assert metrics["auc"] == pytest.approx(roc_auc_score(labels, positive)) == pytest.approx(15 / 16)
    # predicted positive: 0.6, 0.8, 0.9, 0.7 -> 3 of 4 right; 3 of the 4 positives found
    assert metrics["class_precision"] == pytest.approx(0.75) and metrics["class_recall"] == pytest.approx(0.75)


def test_precision_and_recall_are_keras_on_the_one_hot_output_and_equal_accuracy_with_two_classes():
    # The classification study's Tables III-VI: precision = recall = accuracy in every cell, which is
    # Keras' Precision()/Recall() on a one-hot two-column softmax output (micro over both columns).
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    positive = np.array([0.1, 0.6, 0.3, 0.8, 0.4, 0.9, 0.7, 0.2])
    metrics = epoch_metrics(labels, np.stack([1 - positive, positive], axis=1), loss=0.0)
    assert metrics["accuracy"] == pytest.approx(5 / 8)
    assert metrics["precision"] == pytest.approx(5 / 8) and metrics["recall"] == pytest.approx(5 / 8)
    # The positive class alone: 3 of 4 predicted positives right, 3 of 5 positives found.
    assert metrics["class_precision"] == pytest.approx(3 / 4) and metrics["class_recall"] == pytest.approx(3 / 5)


def test_keras_precision_counts_every_class_column_at_the_half_threshold():
    # Three classes: an image whose largest probability is below 0.5 predicts no column (a false negative
    # only), so Keras' micro precision and recall differ from accuracy there.
    labels = np.array([0, 1, 2, 2])
    probabilities = np.array([[0.8, 0.1, 0.1], [0.4, 0.3, 0.3], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2]])
    metrics = epoch_metrics(labels, probabilities, loss=0.0)
    # predicted cells: (0,0) right, (2,2) right, (3,0) wrong; true cells 4 -> tp 2, fp 1, fn 2
    assert metrics["precision"] == pytest.approx(2 / 3) and metrics["recall"] == pytest.approx(2 / 4)
    assert metrics["accuracy"] == pytest.approx(2 / 4)
