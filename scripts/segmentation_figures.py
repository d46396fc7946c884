"""Snakemake adapter: metric curves, bar comparisons, prediction overlays and contours."""

import pandas as pd

from nucleiflow.log import setup_logging
from nucleiflow.segmentation import report as sr

log = setup_logging(snakemake.log[0])
cells, subsets = snakemake.params.cells, snakemake.params.subsets
per_image = sr.collect(list(snakemake.input.per_image), cells, subsets, pd.read_csv)
examples, predictions = sr.prediction_examples(
    snakemake.input.store,
    list(snakemake.input.predictions),
    cells,
    subsets,
    sr.example_ids(per_image, snakemake.params.examples),
    snakemake.params.threshold,
)
sr.write_figures(
    sr.histories(list(snakemake.input.histories), cells),
    sr.metrics_summary(per_image),
    examples,
    predictions,
    dict(snakemake.output.items()),
)
sr.save_inference_time(per_image, snakemake.output.inference)
log.info("figures written: %s", ", ".join(snakemake.output))
