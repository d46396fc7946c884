"""Snakemake adapter: the eleven scikit-learn classifiers on one variant (base or augmented), in parallel."""

import time

import pandas as pd

from nucleiflow.classification import study
from nucleiflow.classification.classic import evaluate_classifiers
from nucleiflow.classification.features import extract_features
from nucleiflow.io import write_csv
from nucleiflow.log import setup_logging

log = setup_logging(snakemake.log[0])
augmented = pd.read_csv(snakemake.input.augmented[0]) if snakemake.input.augmented else None
train, test = study.training_sets(
    snakemake.input.root, pd.read_csv(snakemake.input.split), augmented, snakemake.params.class_names
)
size = snakemake.params.image_size
start = time.perf_counter()
X_train = extract_features(study.load_images(train, size))
X_test = extract_features(study.load_images(test, size))
features_seconds = time.perf_counter() - start
start = time.perf_counter()
results = evaluate_classifiers(
    X_train,
    train["label_index"].to_numpy(),
    X_test,
    test["label_index"].to_numpy(),
    names=snakemake.params.classifiers,
    n_jobs=snakemake.threads,
    seed=snakemake.params.seed,
)
grid_seconds = time.perf_counter() - start
write_csv(snakemake.output[0], results)
log.info(
    "%s: %d train / %d test images; features %.1f s, grid %.1f s wall on %d thread(s) "
    "(%.1f s fit time summed over classifiers)",
    snakemake.wildcards.variant,
    len(train),
    len(test),
    features_seconds,
    grid_seconds,
    snakemake.threads,
    results["fit_seconds"].sum(),
)
