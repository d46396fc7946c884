"""Snakemake adapter: fetch one release file (resumable, verified), or link a verified local copy."""

from nucleiflow.download import fetch, link_verified, write_checksum
from nucleiflow.log import setup_logging

log = setup_logging(snakemake.log[0])
params, output = snakemake.params, snakemake.output.file
if params.source:
    link_verified(params.source, output, params.sha256)
    log.info("linked %s -> %s", params.source, output)
else:
    fetch(params.url, output, params.sha256)
    log.info("fetched %s -> %s", params.url, output)
sha256 = write_checksum(output, snakemake.output.checksum, params.sha256)
if params.sha256:
    log.info("sha256 verified: %s", params.sha256)
else:
    log.warning("no sha256 configured for %s; its sha256 is %s (pin it in the config)", output, sha256)
