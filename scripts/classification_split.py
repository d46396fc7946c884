"""Snakemake adapter: validate the class folders (counts to the log) and split them train/test, stratified."""

from nucleiflow.classification.study import make_split
from nucleiflow.io import write_csv
from nucleiflow.log import setup_logging

log = setup_logging(snakemake.log[0])
split = make_split(
    snakemake.input.root, snakemake.params.test_fraction, snakemake.params.seed, snakemake.params.class_names
)
write_csv(snakemake.output[0], split)
log.info("split: %s", split.groupby(["split", "label"]).size().to_dict())
