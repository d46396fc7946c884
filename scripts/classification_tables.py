"""Snakemake adapter for two rules: Tables I-II with the class counts (classification_tables) and one
per-epoch CNN table, Table III-VI (cnn_epoch_table); each beside the published values."""

import pandas as pd

from nucleiflow.classification import tables
from nucleiflow.io import write_table
from nucleiflow.log import setup_logging
from nucleiflow.workflow import classification as study


def classic_tables(sm, log):
    """Table I (base) and II (augmented), their companions, and the images per class."""
    params, output = sm.params, sm.output
    for variant in study.VARIANTS:
        results = pd.read_csv(sm.input[variant])
        caption = tables.classic_caption(variant)
        write_table(output[variant], tables.classic_paper_table(results), caption)
        write_table(
            output[f"{variant}_vs_paper"],
            tables.classic_vs_paper(results, variant, params.study),
            f"{caption}: accuracy beside the published values",
        )
    counts = tables.class_counts_table(pd.read_csv(sm.input.split), pd.read_csv(sm.input.manifest), params.class_names)
    write_table(output.counts, counts, "Images per class in the training and test splits")
    log.info("Tables I-II and class counts written")


def cnn_table(sm, log):
    """Table III-VI of one CNN run and its companion."""
    model, variant = sm.wildcards.model, sm.wildcards.variant
    history = pd.read_csv(sm.input.history)
    caption = tables.cnn_caption(model, variant)
    write_table(sm.output.table, tables.cnn_run_table(history, sm.params.report_epochs), caption)
    write_table(
        sm.output.vs_paper,
        tables.cnn_vs_paper(history, model, variant, sm.params.report_epochs, sm.params.study),
        f"{caption}: the last reported epoch beside the published values. {tables.CNN_METRICS_NOTE}",
    )
    log.info("%s written", study.cnn_table_name(model, variant))


WRITERS = {"classification_tables": classic_tables, "cnn_epoch_table": cnn_table}

WRITERS[snakemake.rule](snakemake, setup_logging(snakemake.log[0]))
