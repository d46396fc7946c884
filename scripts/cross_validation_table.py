"""Snakemake adapter: one cross-validation experiment's table (folds, mean ± std, published results) and figure."""

from nucleiflow.log import setup_logging
from nucleiflow.segmentation.reports.instances import write_cross_validation

log = setup_logging(snakemake.log[0])
table = write_cross_validation(
    snakemake.input.per_image,
    snakemake.params.cells,
    {key: snakemake.output[key] for key in ("table", "folds", "figure")},
    snakemake.wildcards.experiment,
    snakemake.params.published,
)
log.info(
    "cross-validation %s: %d table rows written to %s",
    snakemake.wildcards.experiment,
    len(table),
    snakemake.output.table,
)
