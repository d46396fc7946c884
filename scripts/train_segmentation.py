"""Snakemake adapter: train one experiment x model x regularization cell (resumes if killed)."""

from pathlib import Path

from nucleiflow.config import ModelSpec
from nucleiflow.log import setup_logging
from nucleiflow.segmentation.run import train_from_spec

log = setup_logging(snakemake.log[0])
info = train_from_spec(
    ModelSpec.from_dict(snakemake.params.spec),
    snakemake.input.store,
    snakemake.input.split,
    snakemake.input.pipeline[0] if snakemake.input.pipeline else None,
    Path(snakemake.output.model).parent,
    threads=snakemake.threads,
)
log.info("best epoch %d, val Dice %.4f, %.1f s", info["best_epoch"], info["best_val_dice"], info["train_seconds"])
