"""Snakemake adapter: the eleven scikit-learn classifiers on one variant (base or augmented)."""
import pandas as pd

from nucleiflow.classification import study
from nucleiflow.classification.classic import evaluate_classifiers
from nucleiflow.classification.features import extract_features
from nucleiflow.io import write_csv
from nucleiflow.log import setup_logging

log = setup_logging(snakemake.log[0])
augmented = pd.read_csv(snakemake.input.augmented[0]) if snakemake.input.augmented else None
train, test = study.training_sets(snakemake.input.root, pd.read_csv(snakemake.input.split), augmented)
size = snakemake.params.image_size
X_train = extract_features(study.load_images(train, size))
X_test = extract_features(study.load_images(test, size))
results = evaluate_classifiers(X_train, train["label_index"].to_numpy(), X_test, test["label_index"].to_numpy(),
                               names=snakemake.params.classifiers, n_jobs=snakemake.threads, seed=snakemake.params.seed)
write_csv(snakemake.output[0], results)
log.info("%s: %d train / %d test images, grid fitted in %.1f s (sum over classifiers)",
         snakemake.wildcards.variant, len(train), len(test), results["fit_seconds"].sum())
