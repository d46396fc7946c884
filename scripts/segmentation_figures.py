"""Snakemake adapter: metric curves, bar comparisons, prediction overlays, contours and the paper-only figures."""

import pandas as pd

from nucleiflow.log import setup_logging
from nucleiflow.segmentation import report as sr

log = setup_logging(snakemake.log[0])
cells, subsets = snakemake.params.cells, snakemake.params.subsets
outputs = dict(snakemake.output.items())
per_image = sr.collect(list(snakemake.input.per_image), cells, subsets, pd.read_csv)
ids = sr.example_ids(per_image, snakemake.params.examples)
predictions_paths = list(snakemake.input.predictions)
examples, predictions = sr.prediction_examples(
    snakemake.input.store, predictions_paths, cells, subsets, ids, snakemake.params.threshold
)
sr.write_figures(
    sr.histories(list(snakemake.input.histories), cells), sr.metrics_summary(per_image), examples, predictions, outputs
)
sr.write_paper_figures(
    outputs,
    snakemake.input.store,
    ids,
    predictions_paths,
    cells,
    subsets,
    snakemake.params.threshold,
    train_predictions=list(snakemake.input.get("train_predictions", [])),
    named=sr.named_images(snakemake.params.study),
)
sr.save_inference_time(per_image, outputs["inference_time"])
log.info("figures written: %s", ", ".join(snakemake.output))
