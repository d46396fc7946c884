"""Snakemake adapter: the PanNuke benchmark's bPQ/mPQ by tissue for every model of one experiment."""

from nucleiflow.log import setup_logging
from nucleiflow.segmentation.reports.instances import write_pannuke_pq_table

log = setup_logging(snakemake.log[0])
table = write_pannuke_pq_table(
    snakemake.input.per_image, snakemake.params.cells, snakemake.output.table, snakemake.wildcards.experiment
)
log.info(
    "PanNuke table: %d models, %d rows, written to %s", len(snakemake.params.cells), len(table), snakemake.output.table
)
