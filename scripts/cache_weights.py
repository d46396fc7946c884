"""Snakemake adapter for rules/weights.smk (runs on the login node: it needs internet).

* rule cache_encoder_weights: download one (arch, encoder)'s pretrained weights into
  the Hugging Face cache and write its marker (files + SHA-256).
* rule cache_weights (the target): gather every marker into one index.
"""

from nucleiflow.io import read_json, write_json
from nucleiflow.log import setup_logging
from nucleiflow.pretrained import cache_encoder_weights, write_weights_marker
from nucleiflow.workflow.weights import PretrainedModel

log = setup_logging(snakemake.log[0])

if snakemake.rule == "cache_weights":
    markers = {path: read_json(path) for path in snakemake.input.markers}
    write_json(snakemake.output.index, markers)
    log.info("%d pretrained weight sets cached", len(markers))
else:
    model = PretrainedModel(snakemake.wildcards.arch, snakemake.wildcards.encoder, snakemake.params.weights)
    files = cache_encoder_weights(model.arch, model.encoder, model.weights)
    marker = write_weights_marker(snakemake.output.marker, model, files)
    for entry in marker["files"]:
        log.info("%s: %s (%d bytes, sha256 %s)", model.label, entry["path"], entry["bytes"], entry["sha256"])
