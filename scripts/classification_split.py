"""Snakemake adapter: stratified train/test split of the class folders."""
from nucleiflow.classification.study import make_split
from nucleiflow.io import write_csv
from nucleiflow.log import setup_logging

log = setup_logging(snakemake.log[0])
split = make_split(snakemake.input[0], snakemake.params.test_fraction, snakemake.params.seed)
write_csv(snakemake.output[0], split)
log.info("split: %s", split.groupby(["split", "label"]).size().to_dict())
