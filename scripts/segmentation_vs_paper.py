"""Snakemake adapter: every published number of the experiment's study beside ours."""

import pandas as pd

from nucleiflow.io import write_table
from nucleiflow.log import setup_logging
from nucleiflow.reporting import paper_index
from nucleiflow.segmentation.reports import experiment as sr

log = setup_logging(snakemake.log[0])
runs, subsets = snakemake.params.runs, snakemake.params.subsets
frame = sr.comparison_frame(sr.metrics_summary(sr.collect(runs, pd.read_csv)), runs)
table = sr.versus_paper(frame, snakemake.params.study, snakemake.params.dataset_split)
write_table(snakemake.output.table, table, f"Ours beside the published values ({snakemake.params.study} study)")
log.info("%d comparisons with the %s study", len(table), snakemake.params.study)
paper_index.write_index(
    snakemake.output.index,
    snakemake.params.study,
    snakemake.wildcards.experiment,
    snakemake.wildcards.dataset,
    evaluated=tuple(subsets),
    comparisons=tuple(snakemake.params.comparisons),
)
