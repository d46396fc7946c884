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

from nucleiflow.errors import ConfigError
from nucleiflow.slides.config import check_slides
from nucleiflow.paths import (
    CLS_DIR,
    CNN_HISTORY,
    COMPARISON_DIR,
    COMPARISONS_DIR,
    DEMO_DIR,
    DOWNLOAD,
    DOWNLOAD_CHECKSUM,
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
from nucleiflow.pretrained import check_offline_weights
from nucleiflow.reporting.paper_index import GENERIC, SEGMENTATION_PAPERS, figure_names, table_names
from nucleiflow.workflow.cells import cross_validation_groups, expand_folds
from nucleiflow.workflow.checks import check_config, check_local_sources, converter_options, schema_error_message
from nucleiflow.workflow.inputs import Inputs
from nucleiflow.workflow.targets import final_targets
from nucleiflow.workflow.weights import cnn_weights_inputs, segmentation_weights_inputs
from nucleiflow.threads import device_threads

try:
    validate(config, "../schemas/config.schema.yaml")
    expand_folds(config)
    check_config(config)
    check_local_sources(config, produced_under=DEMO_DIR if config.get("demo_data") else None)
    check_slides(config, produced_under=DEMO_DIR if config.get("demo_data") else None)
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


# --- input functions (nucleiflow.workflow.inputs) -------------------------------
INPUTS = Inputs(config, ancient=ancient)
file_entry = INPUTS.file_entry
held_source = INPUTS.held_source
local_url = INPUTS.local_url
download_archive = INPUTS.download_archive
held_checksums = INPUTS.held_checksums
unpacked_dirs = INPUTS.unpacked_dirs
split_spec = INPUTS.split_spec
experiment = INPUTS.experiment
experiment_split = INPUTS.experiment_split
experiment_pipeline = INPUTS.experiment_pipeline
model_spec = INPUTS.model_spec
cells_of = INPUTS.cells_of
expand_cells = INPUTS.expand_cells
evaluation_runs = INPUTS.evaluation_runs
run_files = INPUTS.run_files
comparison_inputs = INPUTS.comparison_inputs
comparison_cells = INPUTS.comparison_cells
experiment_comparisons = INPUTS.experiment_comparisons
experiments_of_paper = INPUTS.experiments_of_paper
classification = INPUTS.classification
class_root = INPUTS.class_root
augmented_manifest = INPUTS.augmented_manifest
cnn_histories = INPUTS.cnn_histories


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


# --- targets (nucleiflow.workflow.targets) ----------------------------------------
# Segmentation outputs are named after the paper of the experiment (nucleiflow.reporting.paper_index).
PAPER_KEYS = (GENERIC, *SEGMENTATION_PAPERS)


def all_targets():
    # Slides are found by reading their paths (globs, slide names: nucleiflow.slides.config), so their
    # targets come from rules/slides_common.smk rather than from the torch-free workflow package.
    return final_targets(config) + slides_targets()
