"""Snakemake adapter: the experiment's degradation figure and robustness (AUC) table."""

from nucleiflow.io import write_table
from nucleiflow.log import setup_logging
from nucleiflow.reporting.figures import save_figure
from nucleiflow.segmentation.reports import robustness as rr

log = setup_logging(snakemake.log[0])
metrics = snakemake.params.metrics
per_image = rr.collect(list(snakemake.input), snakemake.params.cells)
table = rr.auc_table(per_image, metrics)
write_table(snakemake.output.table, table, caption="Robustness: area under each degradation curve / severity range")
save_figure(rr.degradation_figure(per_image, metrics), snakemake.output.figure)
log.info(
    "robustness of %d models: most robust %s",
    table["model"].nunique(),
    table.loc[table["rank_robust"] == 1, "model"].tolist(),
)
