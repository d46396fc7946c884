"""Snakemake adapter: classifier comparison (base vs augmented) and CNN curves (Figure 4)."""
from pathlib import Path

import pandas as pd

from nucleiflow import figures
from nucleiflow.classification.study import classic_table
from nucleiflow.log import setup_logging

log = setup_logging(snakemake.log[0])
figures.use_style()
classic = classic_table({Path(p).stem: pd.read_csv(p) for p in snakemake.input.classic})
figures.save_figure(figures.classifier_bars(classic, "accuracy"), snakemake.output.bars)
runs = pd.concat([pd.read_csv(p).assign(run=Path(p).name.removesuffix("_history.csv").replace("_", " "))
                  for p in snakemake.input.histories], ignore_index=True)
figures.save_figure(figures.epoch_curves(runs, "accuracy"), snakemake.output.curves)
log.info("classification figures written")
