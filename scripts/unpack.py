"""Snakemake adapter: extract one archive safely (checked members, temp dir, rename)."""

from nucleiflow.archive import safe_extract_zip
from nucleiflow.log import setup_logging

log = setup_logging(snakemake.log[0])
safe_extract_zip(snakemake.input.archive, snakemake.output[0])
log.info("unpacked %s -> %s", snakemake.input.archive, snakemake.output[0])
