"""Snakemake adapter: the experiment's "trained on A, tested on B" table and figure."""

import pandas as pd

from nucleiflow.io import write_table
from nucleiflow.log import setup_logging
from nucleiflow.reporting.figures import save_figure
from nucleiflow.segmentation.reports.predictions import cross_dataset_figure, cross_dataset_table

log = setup_logging(snakemake.log[0])
runs = [{**run, "per_image": pd.read_csv(path)} for run, path in zip(snakemake.params.runs, snakemake.input.per_image)]
table = cross_dataset_table(runs)
write_table(snakemake.output.table, table, caption=f"{snakemake.wildcards.experiment}: trained on A, tested on B")
save_figure(cross_dataset_figure(runs), snakemake.output.figure)
log.info("%d model x dataset pairs", len(table))
