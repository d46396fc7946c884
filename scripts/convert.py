"""Snakemake adapter: convert a dataset's unpacked release into the common store."""

from nucleiflow.datasets import CONVERTERS
from nucleiflow.io import write_json
from nucleiflow.log import setup_logging

log = setup_logging(snakemake.log[0])
summary = CONVERTERS[snakemake.params.format](
    list(snakemake.input.releases), snakemake.output.store, **snakemake.params.options
)
write_json(snakemake.output.summary, summary)
log.info("store %s: %s", snakemake.output.store, summary)
