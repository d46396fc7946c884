"""Snakemake adapter: filters, Grad-CAM, LRP and LRP statistics of one trained model."""

from nucleiflow.log import setup_logging
from nucleiflow.segmentation.analyses.explain import explain_cell

log = setup_logging(snakemake.log[0])
table = explain_cell(
    snakemake.params.spec,
    snakemake.input.model,
    snakemake.input.store,
    snakemake.input.split,
    snakemake.params.settings,
    {key: snakemake.output[key] for key in ("filters", "gradcam", "lrp", "table")},
    threads=snakemake.threads,
)
log.info("LRP statistics over %d images written to %s", len(table) - 2, snakemake.output.table)
