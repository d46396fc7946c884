"""Snakemake adapter: Tables I-II (classic ML) and III-VI (CNN per epoch)."""
from pathlib import Path

import pandas as pd

from nucleiflow.classification.study import classic_table, cnn_epoch_table
from nucleiflow.io import write_table
from nucleiflow.log import setup_logging

log = setup_logging(snakemake.log[0])
classic = {Path(p).stem: pd.read_csv(p) for p in snakemake.input.classic}
histories = {tuple(Path(p).name.removesuffix("_history.csv").rsplit("_", 1)): pd.read_csv(p)
             for p in snakemake.input.histories}
write_table(snakemake.output.classic, classic_table(classic),
            "Classic machine learning on base and augmented training data (test split)")
write_table(snakemake.output.cnn, cnn_epoch_table(histories, snakemake.params.report_epochs),
            "CNN training and validation metrics at selected epochs")
log.info("classification tables written")
