"""Snakemake adapter: classifier comparison (base vs augmented) and Figure 4 (the CNN runs per epoch)."""

import pandas as pd

from nucleiflow.classification import study, tables
from nucleiflow.log import setup_logging
from nucleiflow.reporting import figures

log = setup_logging(snakemake.log[0])
figures.use_style()
classic = tables.classic_table({variant: pd.read_csv(snakemake.input[variant]) for variant in study.VARIANTS})
figures.save_figure(figures.classifier_bars(classic, "accuracy"), snakemake.output.bars)
histories = {tables.history_run(path): pd.read_csv(path) for path in snakemake.input.histories}
runs = tables.runs_history(histories)
figures.save_figure(
    figures.metric_curves(runs, metrics=("accuracy", "loss"), model_col="run"), snakemake.output.figure4
)
log.info("classification figures written: %d CNN run(s)", runs["run"].nunique())
