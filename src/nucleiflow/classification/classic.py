"""The paper's eleven scikit-learn classifiers and their evaluation grid.

Every classifier is a Pipeline that starts with a StandardScaler, so features
on different scales (pixel grey levels, counts, GLCM contrast) weigh alike in
distance- and margin-based models and the trees are unaffected. Estimators
are single-threaded; parallelism is across classifiers (`evaluate_classifiers`).

The classifiers run in threads, not processes: their fits spend their time in
compiled code that releases the GIL (trees, libsvm, BLAS, OpenMP), so threads
run them side by side, without the seconds each fresh worker process needs to
import scikit-learn and receive the feature matrices - on the demo data that
start-up took longer than the whole grid. Each fit is held to one BLAS/OpenMP
thread, so n_jobs classifiers use n_jobs cores and never oversubscribe them
(Histogram Gradient Boosting would otherwise start one OpenMP thread per core
in every worker).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
from joblib import Parallel, delayed, parallel_config
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
from sklearn.ensemble import (
    AdaBoostClassifier,
    ExtraTreesClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    VotingClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    f1_score,
    matthews_corrcoef,
    precision_score,
    recall_score,
)
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier
from threadpoolctl import threadpool_limits

from nucleiflow.errors import choices_error

log = logging.getLogger(__name__)

RESULT_COLUMNS = ["classifier", "accuracy", "precision", "recall", "f1", "mcc", "kappa", "fit_seconds"]
# Our choices, as every hyperparameter here: the paper names the classifiers only (Section III-B). QDA runs
# after a PCA to at most 20 dimensions with reg_param 0.1; the soft Voting classifier averages these members.
QDA_MAX_COMPONENTS = 20
QDA_REG_PARAM = 0.1
VOTING_MEMBERS = ("Logistic Regression", "Random Forest", "SVM")


class ClassCappedPCA(TransformerMixin, BaseEstimator):
    """PCA to at most `max_components` dimensions and fewer than the smallest class.

    QDA estimates one covariance matrix per class; with more dimensions than
    samples in a class that matrix is singular (scikit-learn >= 1.8 raises
    LinAlgError, older versions warn "Variables are collinear"). Projecting to
    fewer dimensions than the smallest class has samples, onto directions of
    real variance, keeps every class covariance full rank; QDA's `reg_param`
    then keeps the small eigenvalues away from zero. The cap needs the labels,
    which a Pipeline passes to every step's fit.
    """

    def __init__(self, max_components: int = QDA_MAX_COMPONENTS, random_state=None):
        self.max_components = max_components
        self.random_state = random_state

    def fit(self, X, y=None):
        limit = min(self.max_components, X.shape[0], X.shape[1])
        if y is not None:
            limit = min(limit, int(np.unique(y, return_counts=True)[1].min()) - 1)
        self.pca_ = PCA(n_components=max(limit, 1), random_state=self.random_state).fit(X)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        return self.pca_.transform(X)


def _scaled(estimator) -> Pipeline:
    return make_pipeline(StandardScaler(), estimator)


def _qda(seed: int) -> Pipeline:
    return make_pipeline(
        StandardScaler(),
        ClassCappedPCA(random_state=seed),
        QuadraticDiscriminantAnalysis(reg_param=QDA_REG_PARAM),
    )


def _svm(seed: int) -> Pipeline:
    # Our choice (the paper names the SVM only): an RBF SVC with probabilities for
    # soft voting, by Platt scaling fitted on internal 5-fold cross-validated
    # decision values, as SVC(probability=True) does; scikit-learn 1.9 deprecates
    # that flag in favour of this exact equivalent (ensemble=False: one SVC on all data).
    return _scaled(CalibratedClassifierCV(SVC(random_state=seed), method="sigmoid", ensemble=False))


def _voting(seed: int) -> Pipeline:
    # Soft voting averages probabilities, so every member must have predict_proba.
    # Members are the registry pipelines (their scalers are no-ops after the outer one).
    members = [(name, CLASSIFIERS[name](seed)) for name in VOTING_MEMBERS]
    return _scaled(VotingClassifier(members, voting="soft"))


# One builder per catalog.CLASSIFIER_NAMES, in its order (workflow_tests/test_catalog.py checks).
CLASSIFIERS: dict[str, Callable[[int], Pipeline]] = {
    "Decision Tree": lambda seed: _scaled(DecisionTreeClassifier(random_state=seed)),
    "SVM": _svm,
    "QDA": _qda,
    "K-Nearest Neighbours": lambda seed: _scaled(KNeighborsClassifier(n_neighbors=5)),
    "AdaBoost": lambda seed: _scaled(AdaBoostClassifier(random_state=seed)),
    "Gaussian Naive Bayes": lambda seed: _scaled(GaussianNB()),
    "Logistic Regression": lambda seed: _scaled(LogisticRegression(max_iter=2000, random_state=seed)),
    "Random Forest": lambda seed: _scaled(RandomForestClassifier(random_state=seed)),
    "Extra Trees": lambda seed: _scaled(ExtraTreesClassifier(random_state=seed)),
    "Voting": _voting,
    "Histogram Gradient Boosting": lambda seed: _scaled(HistGradientBoostingClassifier(random_state=seed)),
}


def build_classifier(name: str, seed: int = 0) -> Pipeline:
    """A fresh, unfitted classifier pipeline from CLASSIFIERS."""
    if name not in CLASSIFIERS:
        raise choices_error("classifier", name, CLASSIFIERS)
    return CLASSIFIERS[name](seed)


def evaluate_classifiers(X_train, y_train, X_test, y_test, names=None, n_jobs: int = 1, seed: int = 0) -> pd.DataFrame:
    """Fit each classifier on the training set and score it on the test set.

    Returns one row per classifier (in `names` order, default all eleven) with
    ``classifier, accuracy, precision, recall, f1, mcc, kappa, fit_seconds``;
    precision, recall and F1 are support-weighted over the classes. The
    classifiers are fitted in parallel over `n_jobs` threads, one core each.
    """
    names = list(CLASSIFIERS) if names is None else list(names)
    for name in names:
        if name not in CLASSIFIERS:
            raise choices_error("classifier", name, CLASSIFIERS)
    # BLAS limits are process-wide; OpenMP's are per thread, so each task sets its own.
    with threadpool_limits(limits=1), parallel_config(backend="threading"):
        rows = Parallel(n_jobs=n_jobs)(
            delayed(_fit_and_score)(name, X_train, y_train, X_test, y_test, seed) for name in names
        )
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def score_predictions(y_true, y_pred) -> dict[str, float]:
    """The grid's test metrics for one set of predictions."""
    return {
        "accuracy": accuracy_score(y_true, y_pred),
        "precision": precision_score(y_true, y_pred, average="weighted", zero_division=0),
        "recall": recall_score(y_true, y_pred, average="weighted", zero_division=0),
        "f1": f1_score(y_true, y_pred, average="weighted", zero_division=0),
        "mcc": matthews_corrcoef(y_true, y_pred),
        "kappa": cohen_kappa_score(y_true, y_pred),
    }


def _fit_and_score(name, X_train, y_train, X_test, y_test, seed) -> dict:
    model = build_classifier(name, seed)
    with threadpool_limits(limits=1, user_api="openmp"):
        start = time.perf_counter()
        model.fit(X_train, y_train)
        fit_seconds = time.perf_counter() - start
        scores = score_predictions(y_test, model.predict(X_test))
    log.info("%s: accuracy %.4f, fit %.2f s", name, scores["accuracy"], fit_seconds)
    return {"classifier": name, **scores, "fit_seconds": fit_seconds}
