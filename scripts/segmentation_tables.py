"""Snakemake adapter: model-size, metric and timing tables of one segmentation experiment."""
import pandas as pd

from nucleiflow import segmentation_report as sr
from nucleiflow.io import write_table
from nucleiflow.log import setup_logging

log = setup_logging(snakemake.log[0])
cells, subsets = snakemake.params.cells, snakemake.params.subsets
per_image = sr.collect(list(snakemake.input.per_image), cells, subsets, pd.read_csv)
write_table(snakemake.output.sizes, sr.model_sizes(list(snakemake.input.infos), cells), "Model sizes")
write_table(snakemake.output.metrics, sr.metrics_table(sr.metrics_summary(per_image)),
            "Segmentation metrics per model and split (mean ± std over images; pooled over pixels)")
write_table(snakemake.output.timing,
            sr.timing_table(list(snakemake.input.timing), list(snakemake.input.infos), cells, subsets),
            "Inference and training time (measured)")
log.info("tables for %d models x %d splits", len(cells), len(subsets))
