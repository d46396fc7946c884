"""Snakemake adapter: score one trained model on another dataset's images."""

from nucleiflow.io import write_csv
from nucleiflow.log import setup_logging
from nucleiflow.segmentation.inference.predict import evaluate_on

log = setup_logging(snakemake.log[0])
per_image = evaluate_on(
    snakemake.params.spec,
    snakemake.input.model,
    snakemake.input.store,
    snakemake.input.manifest[0] if snakemake.input.manifest else None,
    snakemake.wildcards.target_subset,
    threads=snakemake.threads,
    postprocess=snakemake.params.postprocess,
    tuned_path=snakemake.input.tuned[0] if snakemake.input.tuned else None,
)
write_csv(snakemake.output[0], per_image)
log.info("%s: mean Dice %.4f over %d images", snakemake.wildcards.target, per_image["dice"].mean(), len(per_image))
