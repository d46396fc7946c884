"""Snakemake adapter: fetch one release file (resumable, verified)."""
from nucleiflow.download import fetch
from nucleiflow.log import setup_logging

log = setup_logging(snakemake.log[0])
path = fetch(snakemake.params.url, snakemake.output[0], snakemake.params.sha256)
log.info("%s -> %s (sha256 %s)", snakemake.params.url, path, snakemake.params.sha256 or "not configured")
