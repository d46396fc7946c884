"""Snakemake adapter: one trained model on the test split under every perturbation x severity."""

from nucleiflow.io import write_csv
from nucleiflow.log import setup_logging
from nucleiflow.segmentation.analyses.robustness import sweep_from_spec

log = setup_logging(snakemake.log[0])
frame = sweep_from_spec(
    snakemake.params.spec,
    snakemake.input.model,
    snakemake.input.store,
    snakemake.input.split,
    snakemake.input.clean,
    snakemake.params.robustness,
    threads=snakemake.threads,
    postprocess=snakemake.params.postprocess,
    tuned_path=snakemake.input.tuned[0] if snakemake.input.tuned else None,
)
write_csv(snakemake.output[0], frame)
log.info(
    "robustness sweep: %d conditions over %d images",
    frame.groupby(["perturbation", "severity"], dropna=False).ngroups,
    frame["image_id"].nunique(),
)
