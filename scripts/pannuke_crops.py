"""Snakemake adapter: nucleus crops cut from the PanNuke store, as class folders for the classification study."""

from nucleiflow.classification.pannuke_crops import write_crops
from nucleiflow.log import setup_logging

log = setup_logging(snakemake.log[0])
crops = snakemake.params.crops
manifest = write_crops(snakemake.input.store, snakemake.output[0], seed=snakemake.params.seed, **crops)
log.info("%d crops written to %s", len(manifest), snakemake.output[0])
