"""Snakemake adapter: train one CNN (small CNN, or InceptionResNetV2) on one variant; a killed job resumes."""

import pandas as pd

from nucleiflow.classification import study
from nucleiflow.classification.training import run_cnn
from nucleiflow.log import setup_logging

log = setup_logging(snakemake.log[0])
name, variant = snakemake.wildcards.model, snakemake.wildcards.variant
class_names = snakemake.params.class_names
augmented = pd.read_csv(snakemake.input.augmented[0]) if snakemake.input.augmented else None
train, test = study.training_sets(snakemake.input.root, pd.read_csv(snakemake.input.split), augmented, class_names)
log.info("%s (%s)", name, variant)
history = run_cnn(
    name,
    snakemake.params.cnn,
    class_names,
    train,
    test,
    snakemake.output[0],
    seed=snakemake.params.seed,
    threads=snakemake.threads,
)
log.info("%s/%s: final val accuracy %.4f", name, variant, history["val_accuracy"].iloc[-1])
