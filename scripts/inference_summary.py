"""Snakemake adapter: the summary table and figure of one predicted image set."""

import pandas as pd

from nucleiflow.io import write_table
from nucleiflow.log import setup_logging
from nucleiflow.reporting.figures import save_figure
from nucleiflow.segmentation.reports.predictions import summary_figure, summary_table

log = setup_logging(snakemake.log[0])
name = snakemake.wildcards.name
images = pd.read_csv(snakemake.input.images, dtype={"image_id": str})
nuclei = pd.read_csv(snakemake.input.nuclei, dtype={"image_id": str})
write_table(snakemake.output.table, summary_table(images, nuclei), caption=f"Nuclei found in {name}")
save_figure(summary_figure(images, nuclei, title=f"{name}: {snakemake.params.model}"), snakemake.output.figure)
log.info("%s: %d images, %d nuclei", name, len(images), len(nuclei))
