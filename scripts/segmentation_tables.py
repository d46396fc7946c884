"""Snakemake adapter: the tables of one segmentation experiment (named after the paper's tables, see paper_index)."""

import pandas as pd

from nucleiflow.io import write_table
from nucleiflow.log import setup_logging
from nucleiflow.segmentation.reports import experiment as sr

log = setup_logging(snakemake.log[0])
runs, subsets = snakemake.params.runs, snakemake.params.subsets
per_image = sr.collect(runs, pd.read_csv)
summary = sr.metrics_summary(per_image)
out = snakemake.output
write_table(out.model_sizes, sr.model_sizes(runs), "Model sizes")
write_table(
    out.metrics,
    sr.metrics_table(summary),
    "Segmentation metrics per model and split (mean ± std over images; pooled over pixels)",
)
write_table(
    out.object_metrics, sr.object_table(summary), "Object-level metrics per model and split (mean ± std over images)"
)
write_table(
    out.per_image,
    sr.per_image_table(per_image, snakemake.params.per_image_rows, sr.named_images(snakemake.params.study)),
    f"Per-image metrics of selected {subsets[-1]} images",
)
write_table(
    out.timing,
    sr.timing_table(runs),
    "Inference and training time (measured; images timed: the evaluated images after the first batch, a warm-up)",
)
log.info("tables for %d models x %d splits", len(sr.model_runs(runs)), len(subsets))
