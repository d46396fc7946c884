"""Snakemake adapter: one table and one bar chart across segmentation experiments."""

import pandas as pd

from nucleiflow.catalog import model_label
from nucleiflow.io import write_table
from nucleiflow.log import setup_logging
from nucleiflow.reporting import figures
from nucleiflow.segmentation.reports.experiment import compare_experiments

log = setup_logging(snakemake.log[0])
cells, metrics = snakemake.params.cells, snakemake.params.metrics
per_image = pd.concat(
    [
        pd.read_csv(path).assign(experiment=c["experiment"], model=model_label(c["arch"], c["encoder"], c["reg"]))
        for path, c in zip(snakemake.input, cells)
    ],
    ignore_index=True,
)
summary, table = compare_experiments(per_image, metrics)
write_table(snakemake.output.table, table, f"Comparison {snakemake.wildcards.comparison} (mean ± std over images)")
figures.use_style()
figures.save_figure(figures.metric_bars(summary, metrics[0], split_col="experiment"), snakemake.output.figure)
log.info("compared %d models over %d experiments", len(cells), per_image["experiment"].nunique())
