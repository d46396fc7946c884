"""Config checks beyond the JSON schema, and expansion of the experiment grid.

Used by rules/common.smk at start-up and tested directly. Everything here is
torch-free so that building the DAG stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass

from .catalog import ARCH_ENCODERS, CLASSIFIER_NAMES, SEGMENTATION_FORMATS
from .errors import ConfigError, choices_error


@dataclass(frozen=True)
class ModelCell:
    """One training job: experiment x model x regularization cell."""

    experiment: str
    dataset: str
    arch: str
    encoder: str
    reg: str

    @property
    def label(self) -> str:
        return f"{self.arch}/{self.encoder}/{self.reg}"

    @property
    def wildcards(self) -> dict:
        return {"dataset": self.dataset, "experiment": self.experiment,
                "arch": self.arch, "encoder": self.encoder, "reg": self.reg}


def schema_error_message(error) -> str:
    """One line from a jsonschema ValidationError: the key path, the bad value, what is valid."""
    path = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    return f"config {path}: {error.message}"


def segmentation_cells(config: dict, experiment: str | None = None) -> list[ModelCell]:
    """Every (experiment, arch, encoder, regularization) training job in config order."""
    cells = []
    for name, exp in config.get("segmentation", {}).items():
        if experiment is not None and name != experiment:
            continue
        for model in exp["models"]:
            for reg in model.get("regularization") or exp.get("regularization", ["none"]):
                cells.append(ModelCell(name, exp["dataset"], model["arch"], model.get("encoder", "none"), reg))
    return cells


def regularization_cell(config: dict, name: str) -> dict:
    """The named cell; "none" is built in (no extra blocks, no dropout, no L2)."""
    cell = {"extra_blocks": 0, "dropout": 0.0, "l2": 0.0}
    if name != "none":
        cell.update(config["regularization"][name])
    return cell


def check_config(config: dict) -> None:
    """Cross-reference checks; raises ConfigError naming the key, value and valid choices."""
    datasets = config["datasets"]
    for name, exp in config.get("segmentation", {}).items():
        key = f"segmentation.{name}"
        if exp["dataset"] not in datasets:
            raise choices_error(f"{key}.dataset", exp["dataset"], datasets)
        dataset = datasets[exp["dataset"]]
        if dataset["format"] not in SEGMENTATION_FORMATS:
            raise ConfigError(f"{key}.dataset: {exp['dataset']!r} has format {dataset['format']!r}, "
                              f"segmentation needs one of: {', '.join(SEGMENTATION_FORMATS)}")
        splits = dataset.get("splits", {})
        if exp["split"] not in splits:
            raise choices_error(f"{key}.split", exp["split"], splits)
        augmentation = exp.get("augmentation")
        if augmentation is not None and augmentation not in config.get("augmentation", {}):
            raise choices_error(f"{key}.augmentation", augmentation, config.get("augmentation", {}))
        valid_cells = ["none", *config.get("regularization", {})]
        for i, model in enumerate(exp["models"]):
            arch, encoder = model["arch"], model.get("encoder", "none")
            if arch not in ARCH_ENCODERS:
                raise choices_error(f"{key}.models[{i}].arch", arch, ARCH_ENCODERS)
            if encoder not in ARCH_ENCODERS[arch]:
                raise choices_error(f"{key}.models[{i}].encoder (for {arch})", encoder, ARCH_ENCODERS[arch])
            for reg in model.get("regularization") or exp.get("regularization", ["none"]):
                if reg not in valid_cells:
                    raise choices_error(f"{key}.models[{i}].regularization", reg, valid_cells)
        labels = [c.label for c in segmentation_cells(config, name)]
        if len(labels) != len(set(labels)):
            raise ConfigError(f"{key}.models: a model x regularization cell is listed twice")
    for name, exp in config.get("classification", {}).items():
        key = f"classification.{name}"
        if exp["dataset"] not in datasets:
            raise choices_error(f"{key}.dataset", exp["dataset"], datasets)
        if datasets[exp["dataset"]]["format"] != "class_folders":
            raise ConfigError(f"{key}.dataset: {exp['dataset']!r} is not in the class_folders format")
        for clf in exp.get("classifiers", CLASSIFIER_NAMES):
            if clf not in CLASSIFIER_NAMES:
                raise choices_error(f"{key}.classifiers", clf, CLASSIFIER_NAMES)


def check_local_sources(config: dict, produced_under: str | None = None) -> None:
    """Every local source (file:// URL or path) must exist before any job runs.

    Paths under `produced_under` are made by the workflow itself (the demo data)
    and are exempt.
    """
    from .download import resolve_local  # torch-free, stdlib only

    for dataset, entry in config["datasets"].items():
        for filename, source in entry["files"].items():
            local = resolve_local(source["url"])
            if local is None or local.exists():
                continue
            if produced_under and local.as_posix().startswith(produced_under.rstrip("/") + "/"):
                continue
            raise ConfigError(f"datasets.{dataset}.files.{filename}.url: {source['url']!r} does not exist")
