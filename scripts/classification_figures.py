"""Snakemake adapter: classifier comparison, Figure 4 (the CNN runs per epoch), its averages and the paper index."""

import pandas as pd

from nucleiflow.classification import tables
from nucleiflow.io import write_table
from nucleiflow.log import setup_logging
from nucleiflow.reporting import figures, paper_index
from nucleiflow.workflow import classification as study

log = setup_logging(snakemake.log[0])
figures.use_style()
classic = tables.classic_table({variant: pd.read_csv(snakemake.input[variant]) for variant in study.VARIANTS})
figures.save_figure(figures.classifier_bars(classic, "accuracy"), snakemake.output.bars)
histories = {tables.history_run(path): pd.read_csv(path) for path in snakemake.input.histories}
runs = tables.runs_history(histories)
figures.save_figure(
    figures.metric_curves(runs, metrics=("accuracy", "precision", "recall", "auc"), model_col="run"),
    snakemake.output.figure4,
)
write_table(
    snakemake.output.average,
    tables.average_accuracy_vs_paper(histories, snakemake.params.study),
    "Figure 4 companion: mean training and validation accuracy over the epochs, ours beside the paper's averages",
)
note = "" if snakemake.params.study else "Not the paper's data (nucleus crops): no published numbers to compare with."
paper_index.write_index(
    snakemake.output.index,
    paper_index.CLASSIFICATION.key,
    snakemake.wildcards.experiment,
    snakemake.wildcards.dataset,
    note=note,
)
log.info("classification figures written: %d CNN run(s)", runs["run"].nunique())
