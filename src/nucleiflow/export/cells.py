"""Which trained cells the export stage packages, and its settings (torch-free: used to build the DAG).

`segmentation.<exp>.export` (schema: `export`) selects the cells (`models`: labels `arch/encoder/reg`,
default all) and names the test image of the package's test tensors and cover (`test_image`, default the
first test image), the weights' licence (`license`, an SPDX id; default CC-BY-NC-SA-4.0 for PanNuke-format
data, whose release licence is share-alike non-commercial, else CC-BY-4.0), `authors` and `cite`.
"""

from __future__ import annotations

from nucleiflow.config import ModelCell, segmentation_cells
from nucleiflow.errors import choices_error
from nucleiflow.paths import EXPORT_ZIP

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
    section.pop("models", None)
    section.pop("enabled", None)
    return section
