# Config validation and the small input functions that map wildcards to files.
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The package lives in src/. Jobs import it through the scripts/nucleiflow link
# (Snakemake puts a script's folder on its path), so every conda env finds it too.
SRC = str(Path(workflow.basedir) / "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)

from nucleiflow.catalog import SEGMENTATION_FORMATS
from nucleiflow.classification.study import report_targets as classification_targets
from nucleiflow.config import (
    cell_augmentation,
    check_config,
    check_local_sources,
    cross_validation_groups,
    expand_folds,
    is_folder_entry,
    model_spec as cell_spec,
    robustness_targets,
    schema_error_message,
    segmentation_cells,
)
from nucleiflow.errors import ConfigError
from nucleiflow.paths import (
    CLS_DIR,
    CNN_HISTORY,
    COMPARISON_DIR,
    COMPARISONS_DIR,
    DEMO_DIR,
    DOWNLOAD,
    DOWNLOAD_DIR,
    EDA_DIR,
    EVAL_DIR,
    FIGURE,
    MODEL_DIR,
    PIPELINE,
    PIPELINE_PREVIEW,
    SEG_DIR,
    SPLIT,
    STORE,
    STORE_SUMMARY,
    TABLE,
    UNPACKED,
    WEIGHTS_DIR,
    WEIGHTS_MARKER,
    bench_path,
    log_path,
)
from nucleiflow.pretrained import check_offline_weights, cnn_weights_inputs, segmentation_weights_inputs
from nucleiflow.threads import device_threads
from nucleiflow.reporting.paper_index import (
    GENERIC,
    SEGMENTATION_PAPERS,
    figure_names,
    paper_key,
    table_names,
)
from nucleiflow.download import resolve_local

try:
    validate(config, "../schemas/config.schema.yaml")
    expand_folds(config)
    check_config(config)
    check_local_sources(config, produced_under=DEMO_DIR if config.get("demo_data") else None)
    check_offline_weights(config)
except WorkflowError as err:
    cause = err.__cause__ or err.__context__  # the jsonschema ValidationError
    if not hasattr(cause, "absolute_path"):
        raise
    raise WorkflowError(schema_error_message(cause)) from None
except ConfigError as err:
    raise WorkflowError(str(err)) from None


DATASETS = config["datasets"]
SEGMENTATION = config.get("segmentation", {})
CROSS_VALIDATION = cross_validation_groups(config)
CLASSIFICATION = config.get("classification", {})
DEMO = config.get("demo_data")
SUBSETS = ("train", "val", "test")


wildcard_constraints:
    dataset=r"[a-z0-9_]+",
    experiment=r"[A-Za-z0-9_]+",
    split=r"[A-Za-z0-9_]+",
    pipeline=r"[A-Za-z0-9_]+",
    arch=r"[a-z0-9_]+",
    encoder=r"[a-z0-9_\-]+",
    reg=r"[A-Za-z0-9_]+",
    subset=r"train|val|test",
    filename=r"[A-Za-z0-9_.\-]+",
    archive=r"[A-Za-z0-9_.\-]+",
    variant=r"base|augmented",
    model=r"[a-z0-9_]+",
    comparison=r"[A-Za-z0-9_]+",


# --- input functions ---------------------------------------------------------
def file_entry(wildcards):
    return DATASETS[wildcards.dataset]["files"][wildcards.filename]


def download_source(wildcards):
    """A local source (`source:`, a file:// URL or a path) is an input, so a rule can make it."""
    entry = file_entry(wildcards)
    local = entry.get("source") or resolve_local(entry["url"])
    return [str(local)] if local is not None else []


def converter_input(dataset, name, entry):
    """What the converter reads for one file: a folder in place, a .csv as downloaded, else the unpacked archive."""
    if is_folder_entry(name):  # image_folders: a local folder, never copied
        return str(resolve_local(entry["url"]))
    if name.endswith(".csv"):  # DSB2018's stage-1 solution
        return DOWNLOAD.format(dataset=dataset, filename=name)
    return UNPACKED.format(dataset=dataset, archive=Path(name).stem)


def unpacked_dirs(wildcards):
    """The converter's inputs, one per file of the dataset."""
    files = DATASETS[wildcards.dataset]["files"]
    return [converter_input(wildcards.dataset, name, entry) for name, entry in files.items()]


def split_spec(wildcards):
    return DATASETS[wildcards.dataset]["splits"][wildcards.split]


def experiment(wildcards):
    return SEGMENTATION[wildcards.experiment]


def experiment_split(wildcards):
    return SPLIT.format(dataset=wildcards.dataset, split=experiment(wildcards)["split"])


def experiment_pipeline(wildcards):
    """The cell's augmentation pipeline (its regularization cell's `augmentation`, else the experiment's)."""
    name = cell_augmentation(config, wildcards.experiment, wildcards.reg)
    return [PIPELINE.format(dataset=wildcards.dataset, pipeline=name)] if name else []


def model_spec(wildcards):
    """Everything that defines a trained model (a plain dict, as Snakemake compares params for re-runs)."""
    cell = {key: getattr(wildcards, key) for key in ("dataset", "experiment", "arch", "encoder", "reg")}
    return cell_spec(config, **cell).to_dict()


def cells_of(wildcards):
    return segmentation_cells(config, wildcards.experiment)


def expand_cells(pattern, wildcards, **extra):
    return [pattern.format(**cell.wildcards, **extra) for cell in cells_of(wildcards)]


def evaluation_files(wildcards, kind):
    subsets = experiment(wildcards)["evaluate_splits"]
    return [
        f"{EVAL_DIR}/{{subset}}_{kind}".format(**cell.wildcards, subset=subset)
        for cell in cells_of(wildcards)
        for subset in subsets
    ]


def comparison_inputs(wildcards):
    """Per-image files of every model of every compared experiment, on the compared split."""
    comparison = config["comparisons"][wildcards.comparison]
    files = []
    for name in comparison["experiments"]:
        for cell in segmentation_cells(config, name):
            files.append(f"{EVAL_DIR}/{comparison['split']}_per_image.csv".format(**cell.wildcards))
    return files


def comparison_cells(wildcards):
    comparison = config["comparisons"][wildcards.comparison]
    return [cell.wildcards for name in comparison["experiments"] for cell in segmentation_cells(config, name)]


def classification(wildcards):
    return CLASSIFICATION[wildcards.experiment]


def class_root(wildcards):
    """The class folders: nuclei cropped from the dataset's store (`crops`), else the unpacked release."""
    if "crops" in classification(wildcards):
        return f"{CLS_DIR}/crops".format(**wildcards)
    (root,) = unpacked_dirs(wildcards)
    return root


def augmented_manifest(wildcards):
    """The augmented training set for the "augmented" variant, nothing for "base"."""
    if wildcards.variant == "augmented":
        return [f"{CLS_DIR}/augmented/manifest.csv".format(**wildcards)]
    return []


def cnn_histories(wildcards):
    cnn = classification(wildcards)["cnn"]
    return [
        CNN_HISTORY.format(**wildcards, model=model, variant=variant)
        for model in cnn["models"]
        for variant in ("base", "augmented")
    ]


# --- report items ----------------------------------------------------------------
def seg_table(name, caption):
    return report(
        f"{SEG_DIR}/tables/{name}.csv",
        caption=f"../report/{caption}.rst",
        category="Segmentation",
        subcategory="{experiment}",
        labels={"experiment": "{experiment}", "table": name},
    )


def seg_figure(name, caption=None):
    return report(
        f"{SEG_DIR}/figures/{name}.png",
        caption=f"../report/{caption or name}.rst",
        category="Segmentation",
        subcategory="{experiment}",
        labels={"experiment": "{experiment}", "figure": name},
    )


def cls_report(path, caption, kind):
    return report(
        path,
        caption=f"../report/{caption}.rst",
        category="Classification",
        subcategory="{experiment}",
        labels={"experiment": "{experiment}", kind: caption},
    )


# --- targets -------------------------------------------------------------------
# Segmentation outputs are named after the paper of the experiment (nucleiflow.reporting.paper_index).
PAPER_KEYS = (GENERIC, *SEGMENTATION_PAPERS)


def experiments_of_paper(paper):
    """Regex of the experiments named after `paper` (one that matches nothing when there are none)."""
    names = [n for n, e in SEGMENTATION.items() if paper_key(e.get("published")) == paper]
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


def experiment_comparisons(wildcards):
    return [n for n, c in config.get("comparisons", {}).items() if wildcards.experiment in c["experiments"]]


EDA_OUTPUTS = ("per_image.csv", "summary.csv", "eda.png")


def all_targets():
    targets = []
    for name, dataset in DATASETS.items():
        if dataset["format"] in SEGMENTATION_FORMATS:
            targets += [f"{EDA_DIR}/{f}".format(dataset=name) for f in EDA_OUTPUTS]
    for name, exp in SEGMENTATION.items():
        base = SEG_DIR.format(dataset=exp["dataset"], experiment=name)
        targets += [f"{base}/{TABLE.format(name=t)}" for t in table_names(exp["published"]).values()]
        targets += [f"{base}/{FIGURE.format(name=f)}" for f in figure_names(exp["published"]).values()]
        if exp["published"]:
            targets += [f"{base}/{TABLE.format(name='vs_paper')}", f"{base}/paper_index.md"]
    targets += predict_targets()  # rules/predict.smk: inference summaries, cross-dataset tables
    for name in config.get("comparisons", {}):
        targets.append(f"{COMPARISON_DIR}/table.csv".format(comparison=name))
    for name, exp in CLASSIFICATION.items():
        base = CLS_DIR.format(dataset=exp["dataset"], experiment=name)
        # Tables I-II, one Table III-VI per configured CNN run, class counts, classifier comparison, Figure 4
        targets += [f"{base}/{target}" for target in classification_targets(exp["cnn"]["models"])]
    targets += robustness_targets(config)
    targets += explain_targets(config)  # rules/explain.smk
    targets += instance_targets()  # rules/instances.smk
    return targets
