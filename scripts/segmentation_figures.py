"""Snakemake adapter: metric curves, bar comparisons, prediction overlays, contours and the paper-only figures."""

import pandas as pd

from nucleiflow.log import setup_logging
from nucleiflow.segmentation.reports import experiment as sr

log = setup_logging(snakemake.log[0])
runs, threshold = snakemake.params.runs, snakemake.params.threshold
outputs = dict(snakemake.output.items())
per_image = sr.collect(runs, pd.read_csv)
ids = sr.example_ids(per_image, snakemake.params.examples)
examples, predictions = sr.prediction_examples(snakemake.input.store, runs, ids, threshold)
sr.write_figures(sr.histories(runs), sr.metrics_summary(per_image), examples, predictions, outputs)
sr.write_paper_figures(
    outputs,
    snakemake.input.store,
    ids,
    runs,
    threshold,
    train_predictions=list(snakemake.input.get("train_predictions", [])),
    named=sr.named_images(snakemake.params.study),
)
sr.save_inference_time(per_image, outputs["inference_time"])
log.info("figures written: %s", ", ".join(snakemake.output))
