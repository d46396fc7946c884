"""Snakemake adapter: fetch one release file (resumable, verified), or link a verified local copy."""

from nucleiflow.download import fetch, link_verified, sha256sum
from nucleiflow.log import setup_logging

log = setup_logging(snakemake.log[0])
params, output = snakemake.params, snakemake.output[0]
if params.source:
    link_verified(params.source, output, params.sha256)
    log.info("linked %s -> %s", params.source, output)
else:
    fetch(params.url, output, params.sha256)
    log.info("fetched %s -> %s", params.url, output)
if params.sha256:
    log.info("sha256 verified: %s", params.sha256)
else:
    log.warning("no sha256 configured for %s; its sha256 is %s (pin it in the config)", output, sha256sum(output))
