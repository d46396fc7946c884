"""Snakemake adapter: evaluate one trained model on one split."""

from nucleiflow.config import ModelSpec
from nucleiflow.io import write_csv, write_json
from nucleiflow.log import setup_logging
from nucleiflow.segmentation.run import evaluate_from_spec

log = setup_logging(snakemake.log[0])
per_image, timing = evaluate_from_spec(
    ModelSpec.from_dict(snakemake.params.spec),
    snakemake.input.model,
    snakemake.input.store,
    snakemake.input.split,
    snakemake.wildcards.subset,
    predictions_path=snakemake.output.predictions,
    threads=snakemake.threads,
    postprocess=snakemake.params.postprocess,
    tuned_path=snakemake.input.tuned[0] if snakemake.input.tuned else None,
)
write_csv(snakemake.output.per_image, per_image)
write_json(snakemake.output.timing, timing)
log.info(
    "%s: mean Dice %.4f, mean PQ %.4f over %d images",
    snakemake.wildcards.subset,
    per_image["dice"].mean(),
    per_image["pq"].mean(),
    len(per_image),
)
