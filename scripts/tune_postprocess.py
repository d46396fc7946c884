"""Snakemake adapter: tune one trained model's post-processing on the validation split (postprocess.json)."""

from nucleiflow.io import write_json
from nucleiflow.log import setup_logging
from nucleiflow.segmentation.run import tune_from_spec

log = setup_logging(snakemake.log[0])
record = tune_from_spec(
    snakemake.params.spec,
    snakemake.input.model,
    snakemake.input.store,
    snakemake.input.split,
    snakemake.params.postprocess,
    threads=snakemake.threads,
)
write_json(snakemake.output[0], record)
log.info(
    "%s: %s, mean validation PQ %.4f over %d images -> %s",
    record["target"],
    record["params"],
    record["mean_pq"],
    record["val_images"],
    snakemake.output[0],
)
