"""Which trained cells the export stage packages, and its settings (torch-free: used to build the DAG).

`segmentation.<exp>.export` (schema: `export`) selects the cells (`models`: labels `arch/encoder/reg`,
default all) and names the test image of the package's test tensors and cover (`test_image`, default the
first test image), the weights' licence (`license`, an SPDX id; default CC-BY-NC-SA-4.0 for PanNuke-format
data, whose release licence is share-alike non-commercial, else CC-BY-4.0), `authors` and `cite`.
"""

from __future__ import annotations

from nucleiflow.config import ALL_IMAGES, ModelCell
from nucleiflow.errors import choices_error
from nucleiflow.paths import CROSS_EVAL, EVAL_DIR, EXPORT_ZIP
from nucleiflow.workflow.cells import dataset_microns_per_pixel, evaluate_on_targets, segmentation_cells

TEST_PER_IMAGE = f"{EVAL_DIR}/test_per_image.csv"

DEFAULT_LICENSE = "CC-BY-4.0"
# Datasets whose licence the weights must carry on: the PanNuke release is CC BY-NC-SA 4.0 (share-alike).
DATASET_LICENSES = {"pannuke": "CC-BY-NC-SA-4.0"}


def _enabled(exp: dict) -> dict | None:
    section = exp.get("export")
    return section if section and section.get("enabled", True) else None


def export_cells(config: dict, experiment: str | None = None) -> list[ModelCell]:
    """The trained cells with an export job, in config order (experiments without `export` have none)."""
    cells = []
    for name, exp in config.get("segmentation", {}).items():
        section = _enabled(exp)
        if (experiment is not None and name != experiment) or section is None:
            continue
        selected = section.get("models")
        cells += [cell for cell in segmentation_cells(config, name) if selected is None or cell.label in selected]
    return cells


def export_targets(config: dict) -> list[str]:
    """The zip of every exported cell (its job writes the folder and the card beside it)."""
    return [EXPORT_ZIP.format(**cell.wildcards) for cell in export_cells(config)]


def check_export(config: dict) -> None:
    """ConfigError for a `models` label that is not a cell of its experiment."""
    for name, exp in config.get("segmentation", {}).items():
        section = _enabled(exp)
        if section is None:
            continue
        labels = [cell.label for cell in segmentation_cells(config, name)]
        for label in section.get("models") or []:
            if label not in labels:
                raise choices_error(f"segmentation.{name}.export.models", label, labels)


def export_settings(config: dict, experiment: str) -> dict:
    """The experiment's `export` section with its defaults (any cell may be exported, configured or not)."""
    exp = config["segmentation"][experiment]
    section = dict(exp.get("export") or {})
    data_format = config["datasets"][exp["dataset"]]["format"]
    section.setdefault("license", DATASET_LICENSES.get(data_format, DEFAULT_LICENSE))
    section["dataset_format"] = data_format
    # The training data's resolution travels with the package: the slide stage reads slides at it.
    section["microns_per_pixel"] = dataset_microns_per_pixel(config, exp["dataset"])
    section.pop("models", None)
    section.pop("enabled", None)
    return section


def _cell_keys(wildcards) -> dict:
    return {key: getattr(wildcards, key) for key in ("dataset", "experiment", "arch", "encoder", "reg")}


def export_inputs(config: dict, wildcards) -> dict:
    """The per-image tables the card quotes: the cell's test split and its `evaluate_on` datasets, where computed."""
    keys = _cell_keys(wildcards)
    files = {}
    if "test" in config["segmentation"][keys["experiment"]]["evaluate_splits"]:
        files["test"] = TEST_PER_IMAGE.format(**keys)
    for t in evaluate_on_targets(config, keys["experiment"]):
        name = f"cross_{t['dataset']}_{t['manifest']}_{t['subset']}"
        files[name] = CROSS_EVAL.format(**keys, target=t["dataset"], manifest=t["manifest"], target_subset=t["subset"])
    return files


def card_evaluation(config: dict, wildcards) -> dict:
    """The card's `evaluation`: the test table and the command that makes it, and {"tested on": table} per target."""
    keys = _cell_keys(wildcards)
    test = (
        TEST_PER_IMAGE.format(**keys)
        if "test" in config["segmentation"][keys["experiment"]]["evaluate_splits"]
        else None
    )
    cross = {}
    for t in evaluate_on_targets(config, keys["experiment"]):
        where = t["subset"] if t["subset"] == ALL_IMAGES else f"{t['manifest']}/{t['subset']}"
        path = CROSS_EVAL.format(**keys, target=t["dataset"], manifest=t["manifest"], target_subset=t["subset"])
        cross[f"{t['dataset']} ({where})"] = path
    return {"path": test, "command": f"snakemake {test}" if test else "", "cross": cross}
