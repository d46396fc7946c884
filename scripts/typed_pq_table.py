"""Snakemake adapter: PQ, AJI, DQ, SQ, per-class PQ by type name and mPQ for every model of one experiment."""

from nucleiflow.log import setup_logging
from nucleiflow.segmentation.reports.typed_pq import write_typed_pq_table

log = setup_logging(snakemake.log[0])
table = write_typed_pq_table(
    snakemake.input.per_image,
    snakemake.params.cells,
    snakemake.input.store,
    snakemake.output.table,
    snakemake.wildcards.experiment,
)
log.info("typed PQ table: %d models, written to %s", len(table), snakemake.output.table)
