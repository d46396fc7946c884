"""Snakemake adapter: exploratory data analysis of one store (per-image table, summary table, figure)."""

from nucleiflow import eda
from nucleiflow.io import write_csv, write_table
from nucleiflow.log import setup_logging
from nucleiflow.reporting.figures import save_figure, use_style
from nucleiflow.store import Store

log = setup_logging(snakemake.log[0])
tables = eda.measure_store(Store(snakemake.input[0]))
write_csv(snakemake.output.per_image, tables.per_image)
summary = eda.summary_table(tables.per_image)
write_table(
    snakemake.output.summary[0], summary, caption=f"{snakemake.wildcards.dataset}: images and nuclei by modality"
)
use_style()
save_figure(eda.eda_figure(tables.per_image, tables.nuclei), snakemake.output.figure)
log.info("EDA of %s: %d images, %d nuclei", snakemake.wildcards.dataset, len(tables.per_image), len(tables.nuclei))
