"""The workflow's final targets (`rule all`): one `<stage>_targets(config) -> list[str]` per stage.

Every function takes the schema-validated config with its folds expanded (`cells.expand_folds`) and returns
paths relative to the working directory. Segmentation outputs are named after the paper of their experiment
(`reporting.paper_index`).
"""

from __future__ import annotations

from nucleiflow.catalog import NAMED_CLASS_FORMATS, SEGMENTATION_FORMATS
from nucleiflow.paths import (
    CLS_DIR,
    COMPARISON_DIR,
    CROSS_FIGURE,
    CROSS_TABLE,
    CV_FIGURE,
    CV_TABLE,
    EDA_DIR,
    FIGURE,
    INFER_FIGURE,
    INFER_TABLE,
    PANNUKE_PQ_TABLE,
    ROBUSTNESS_FIGURE,
    ROBUSTNESS_TABLE,
    SEG_DIR,
    TABLE,
    TYPED_PQ_TABLE,
)
from nucleiflow.reporting.paper_index import figure_names, table_names
from nucleiflow.workflow.cells import cross_validation_dataset, cross_validation_groups, pannuke_pq_experiments
from nucleiflow.workflow.classification import report_targets
from nucleiflow.workflow.explain import explain_targets
from nucleiflow.workflow.export import export_targets

EDA_OUTPUTS = ("per_image.csv", "summary.csv", "eda.png")


def eda_targets(config: dict) -> list[str]:
    """The exploratory analysis of every segmentation dataset."""
    return [
        f"{EDA_DIR}/{name}".format(dataset=dataset)
        for dataset, entry in config["datasets"].items()
        if entry["format"] in SEGMENTATION_FORMATS
        for name in EDA_OUTPUTS
    ]


def segmentation_targets(config: dict) -> list[str]:
    """Every experiment's tables and figures, named after its paper, and its comparison with the paper."""
    targets = []
    for name, exp in config.get("segmentation", {}).items():
        base = SEG_DIR.format(dataset=exp["dataset"], experiment=name)
        targets += [f"{base}/{TABLE.format(name=t)}" for t in table_names(exp["published"]).values()]
        targets += [f"{base}/{FIGURE.format(name=f)}" for f in figure_names(exp["published"]).values()]
        if exp["published"]:
            targets += [f"{base}/{TABLE.format(name='vs_paper')}", f"{base}/paper_index.md"]
    return targets


def predict_targets(config: dict) -> list[str]:
    """Each inference's summary (your own images), each experiment's cross-dataset table and figure."""
    targets = []
    for name in config.get("inference", {}):
        targets += [INFER_TABLE.format(name=name), INFER_FIGURE.format(name=name)]
    for name, exp in config.get("segmentation", {}).items():
        if exp.get("evaluate_on"):
            base = {"dataset": exp["dataset"], "experiment": name}
            targets += [CROSS_TABLE.format(**base), CROSS_FIGURE.format(**base)]
    return targets


def comparison_targets(config: dict) -> list[str]:
    """The table of every comparison of experiments."""
    return [f"{COMPARISON_DIR}/table.csv".format(comparison=name) for name in config.get("comparisons", {})]


def classification_targets(config: dict) -> list[str]:
    """Tables I-II, one Table III-VI per configured CNN run, class counts, classifier comparison, Figure 4."""
    targets = []
    for name, exp in config.get("classification", {}).items():
        base = CLS_DIR.format(dataset=exp["dataset"], experiment=name)
        targets += [f"{base}/{target}" for target in report_targets(exp["cnn"]["models"])]
    return targets


def robustness_targets(config: dict) -> list[str]:
    """The degradation figure and AUC table of every experiment with a `robustness` section."""
    targets = []
    for name, exp in config.get("segmentation", {}).items():
        if exp.get("robustness"):
            wildcards = {"dataset": exp["dataset"], "experiment": name}
            targets += [ROBUSTNESS_FIGURE.format(**wildcards), ROBUSTNESS_TABLE.format(**wildcards)]
    return targets


def instance_targets(config: dict) -> list[str]:
    """The PanNuke table of every PanNuke experiment; the table and figure of every cross-validation."""
    targets = [
        PANNUKE_PQ_TABLE.format(dataset=config["segmentation"][name]["dataset"], experiment=name)
        for name in pannuke_pq_experiments(config)
    ]
    for name in cross_validation_groups(config):
        wildcards = {"dataset": cross_validation_dataset(config, name), "experiment": name}
        targets += [CV_TABLE.format(**wildcards), CV_FIGURE.format(**wildcards)]
    return targets


def typed_pq_experiments(config: dict) -> list[str]:
    """Experiments on data with named nucleus types that evaluate their test split (rule typed_pq_table)."""
    return [
        name
        for name, exp in config.get("segmentation", {}).items()
        if config["datasets"][exp["dataset"]]["format"] in NAMED_CLASS_FORMATS and "test" in exp["evaluate_splits"]
    ]


def typed_pq_targets(config: dict) -> list[str]:
    """PQ per named nucleus type and mPQ (CoNSeP's .mat, QuPath exports)."""
    return [
        TYPED_PQ_TABLE.format(dataset=config["segmentation"][name]["dataset"], experiment=name)
        for name in typed_pq_experiments(config)
    ]


STAGE_TARGETS = (
    eda_targets,
    segmentation_targets,
    predict_targets,
    comparison_targets,
    classification_targets,
    robustness_targets,
    explain_targets,
    instance_targets,
    typed_pq_targets,
    export_targets,
)


def final_targets(config: dict) -> list[str]:
    """Every stage's final targets, in the order of STAGE_TARGETS."""
    return [target for stage in STAGE_TARGETS for target in stage(config)]
