"""The config checks beyond the JSON schema: one-line ConfigErrors naming the key, the value and what is valid.

`check_config` runs at workflow start-up (rules/common.smk) after schema validation and `cells.expand_folds`;
`check_local_sources` before any job reads a local file.
"""

from __future__ import annotations

from pathlib import Path

from nucleiflow.catalog import (
    ARCH_ENCODERS,
    CLASSIFIER_NAMES,
    FOLDER_FORMATS,
    FOLDER_IMAGE_SUFFIXES,
    METRIC_DISPLAY_NAMES,
    NAMED_CLASS_FORMATS,
    NO_ENCODER,
    SEGMENTATION_FORMATS,
    TYPE_HEAD_CLASSES,
    TYPED_FORMATS,
)
from nucleiflow.config import ALL_IMAGES, NO_REGULARIZATION, TrainingSettings
from nucleiflow.download import resolve_local
from nucleiflow.errors import ConfigError, choices_error
from nucleiflow.workflow.cells import (
    evaluate_on_targets,
    expand_folds,
    inference_cell,
    inference_package,
    regularization_cell,
    segmentation_cells,
)
from nucleiflow.workflow.explain import check_explain

COMPARABLE_METRICS = tuple(METRIC_DISPLAY_NAMES)  # the per-image metrics a comparison or sweep may show


def schema_error_message(error) -> str:
    """One line from a jsonschema ValidationError: the key path, the bad value, what is valid."""
    path = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    return f"config {path}: {error.message}"


def check_robustness(config: dict, name: str) -> None:
    """`segmentation.<name>.robustness`: the sweep runs on the test split; a perturbation is listed once."""
    spec = config["segmentation"][name].get("robustness")
    if not spec:
        return
    key = f"segmentation.{name}.robustness"
    if "test" not in config["segmentation"][name]["evaluate_splits"]:
        raise ConfigError(f"{key}: the sweep runs on the test split; add test to segmentation.{name}.evaluate_splits")
    names = [p["name"] for p in spec["perturbations"]]
    if len(names) != len(set(names)):
        raise ConfigError(f"{key}.perturbations: a perturbation is listed twice ({', '.join(names)})")
    for metric in spec.get("metrics", []):
        if metric not in COMPARABLE_METRICS:
            raise choices_error(f"{key}.metrics", metric, COMPARABLE_METRICS)


def check_targets(config: dict, name: str) -> None:
    """`training.target` / `type_head` against the dataset and the mask preprocessing."""
    exp = config["segmentation"][name]
    key = f"segmentation.{name}.training"
    training = TrainingSettings.from_section(exp["training"], key)
    target = training.target
    if target != "binary" and training.mask_preprocessing != "none":
        raise ConfigError(
            f"{key}.mask_preprocessing: {training['mask_preprocessing']!r} makes a binary mask; "
            f"target {target!r} is derived from the instance maps (use mask_preprocessing: none)"
        )
    dataset = config["datasets"][exp["dataset"]]
    dataset_format = dataset["format"]
    if training.type_head and dataset_format not in TYPED_FORMATS:
        raise ConfigError(
            f"{key}.type_head: dataset {exp['dataset']!r} (format {dataset_format!r}) has no nucleus types; "
            f"a type head needs a dataset of format {' or '.join(TYPED_FORMATS)}"
        )
    n_named = len(dataset.get("classes") or ())
    if training.type_head and n_named >= TYPE_HEAD_CLASSES:
        raise ConfigError(
            f"datasets.{exp['dataset']}.classes: {n_named} nucleus types; the type head takes at most "
            f"{TYPE_HEAD_CLASSES - 1} (plus background)"
        )


def check_config(config: dict) -> None:
    """Cross-reference checks; raises ConfigError naming the key, value and valid choices.

    Cross-validation experiments are expanded into their folds first (`cells.expand_folds`, in place).
    """
    expand_folds(config)
    datasets = config["datasets"]
    for name, dataset in datasets.items():
        if dataset.get("classes") and dataset["format"] not in NAMED_CLASS_FORMATS:
            raise ConfigError(
                f"datasets.{name}.classes: format {dataset['format']!r} has no named nucleus types; "
                f"classes apply to format {' or '.join(NAMED_CLASS_FORMATS)}"
            )
    for name, exp in config.get("segmentation", {}).items():
        key = f"segmentation.{name}"
        if exp["dataset"] not in datasets:
            raise choices_error(f"{key}.dataset", exp["dataset"], datasets)
        dataset = datasets[exp["dataset"]]
        if dataset["format"] not in SEGMENTATION_FORMATS:
            raise ConfigError(
                f"{key}.dataset: {exp['dataset']!r} has format {dataset['format']!r}, "
                f"segmentation needs one of: {', '.join(SEGMENTATION_FORMATS)}"
            )
        splits = dataset.get("splits", {})
        if exp["split"] not in splits:
            raise choices_error(f"{key}.split", exp["split"], splits)
        augmentation = exp.get("augmentation")
        if augmentation is not None and augmentation not in config.get("augmentation", {}):
            raise choices_error(f"{key}.augmentation", augmentation, config.get("augmentation", {}))
        for reg, cell in config.get("regularization", {}).items():
            if cell.get("augmentation") and cell["augmentation"] not in config.get("augmentation", {}):
                pipelines = config.get("augmentation", {})
                raise choices_error(f"regularization.{reg}.augmentation", cell["augmentation"], pipelines)
        valid_cells = [NO_REGULARIZATION, *config.get("regularization", {})]
        check_robustness(config, name)
        check_targets(config, name)
        weights = exp["training"].get("encoder_weights")
        for i, model in enumerate(exp["models"]):
            arch, encoder = model["arch"], model.get("encoder", NO_ENCODER)
            if arch not in ARCH_ENCODERS:
                raise choices_error(f"{key}.models[{i}].arch", arch, ARCH_ENCODERS)
            if encoder not in ARCH_ENCODERS[arch]:
                raise choices_error(f"{key}.models[{i}].encoder (for {arch})", encoder, ARCH_ENCODERS[arch])
            if weights and encoder == NO_ENCODER:
                # The training job would refuse it (pretrained.check_weights_available), hours into a run.
                raise ConfigError(
                    f"{key}.training.encoder_weights: {weights!r} needs a pretrained encoder, and models[{i}] "
                    f"({arch}) has none; set encoder_weights: null, or train {arch} in an experiment without it"
                )
            for reg in model.get("regularization") or exp.get("regularization", [NO_REGULARIZATION]):
                if reg not in valid_cells:
                    raise choices_error(f"{key}.models[{i}].regularization", reg, valid_cells)
                if regularization_cell(config, reg)["decoder_dropout"] and ARCH_ENCODERS[arch] == (NO_ENCODER,):
                    raise ConfigError(
                        f"{key}.models[{i}]: regularization cell {reg!r} sets decoder_dropout, "
                        f"which only unet and deeplabv3plus support (not {arch})"
                    )
        labels = [c.label for c in segmentation_cells(config, name)]
        if len(labels) != len(set(labels)):
            raise ConfigError(f"{key}.models: a model x regularization cell is listed twice")
    segmentation = config.get("segmentation", {})
    for name, comparison in config.get("comparisons", {}).items():
        key = f"comparisons.{name}"
        for experiment in comparison["experiments"]:
            if experiment not in segmentation:
                raise choices_error(f"{key}.experiments", experiment, segmentation)
            if comparison["split"] not in segmentation[experiment]["evaluate_splits"]:
                raise ConfigError(
                    f"{key}.split: {comparison['split']!r} is not evaluated by experiment {experiment!r} "
                    f"(its evaluate_splits: {segmentation[experiment]['evaluate_splits']})"
                )
        for metric in comparison["metrics"]:
            if metric not in COMPARABLE_METRICS:
                raise choices_error(f"{key}.metrics", metric, COMPARABLE_METRICS)
    check_prediction_config(config)
    check_explain(config)
    for name, exp in config.get("classification", {}).items():
        key = f"classification.{name}"
        if exp["dataset"] not in datasets:
            raise choices_error(f"{key}.dataset", exp["dataset"], datasets)
        _check_classification_source(key, exp, datasets[exp["dataset"]]["format"])
        for clf in exp.get("classifiers", CLASSIFIER_NAMES):
            if clf not in CLASSIFIER_NAMES:
                raise choices_error(f"{key}.classifiers", clf, CLASSIFIER_NAMES)


def _check_classification_source(key: str, exp: dict, dataset_format: str) -> None:
    """A class_folders release, or `crops` cut from a segmentation store (five_class needs PanNuke's classes)."""
    crops = exp.get("crops")
    if crops is None and dataset_format != "class_folders":
        raise ConfigError(
            f"{key}.dataset: {exp['dataset']!r} has format {dataset_format!r}; use a class_folders "
            "dataset, or add crops: {task: binary|five_class} to cut nuclei from its store"
        )
    if crops is not None and dataset_format not in SEGMENTATION_FORMATS:
        raise ConfigError(
            f"{key}.crops: {exp['dataset']!r} has format {dataset_format!r}; crops are cut from a "
            f"store of format {' or '.join(SEGMENTATION_FORMATS)}"
        )
    if crops is not None and crops["task"] == "five_class" and dataset_format != "pannuke":
        raise ConfigError(
            f"{key}.crops.task: five_class needs PanNuke's nucleus classes, {exp['dataset']!r} has "
            f"format {dataset_format!r}; use binary"
        )


def check_local_sources(config: dict, produced_under: str | None = None) -> None:
    """Every local source (file:// URL or path) must exist before any job runs.

    Paths under `produced_under` are made by the workflow itself (the demo data)
    and are exempt.
    """
    for dataset, entry in config["datasets"].items():
        for filename, file in entry["files"].items():
            key = f"datasets.{dataset}.files.{filename}"
            if file.get("source"):
                if not Path(file["source"]).is_file():
                    raise ConfigError(f"{key}.source: {file['source']!r} does not exist")
                continue
            local = resolve_local(file["url"])
            if local is None or local.exists():
                continue
            if produced_under and local.as_posix().startswith(produced_under.rstrip("/") + "/"):
                continue
            raise ConfigError(f"{key}.url: {file['url']!r} does not exist")
    for name, entry in config.get("inference", {}).items():
        folder = Path(entry["images"])
        if entry["images"] in config["datasets"]:
            continue
        if produced_under and folder.as_posix().startswith(produced_under.rstrip("/") + "/"):
            continue
        if not folder.is_dir():
            raise ConfigError(
                f"inference.{name}.images: {entry['images']!r} is neither a dataset nor an existing folder"
            )
        if not folder_images(folder):
            raise ConfigError(
                f"inference.{name}.images: {entry['images']!r} holds no image "
                f"(valid: {', '.join(FOLDER_IMAGE_SUFFIXES)} files, in the folder itself or in its images/)"
            )


def folder_images(folder: Path) -> list[Path]:
    """The image files an inference folder offers: its own, or those of its images/ (or one wrapping folder's)."""
    candidates = [folder, folder / "images"]
    children = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(children) == 1:
        candidates.append(children[0] / "images")
    return [
        path
        for candidate in candidates
        if candidate.is_dir()
        for path in sorted(candidate.iterdir())
        if path.is_file() and path.suffix.lower() in FOLDER_IMAGE_SUFFIXES
    ]


def converter_options(dataset: dict) -> dict:
    """Keyword arguments of a dataset's converter beyond its inputs: the type names a config gives (`classes`)."""
    return {"class_names": list(dataset["classes"])} if dataset.get("classes") else {}


def is_folder_entry(filename: str) -> bool:
    """A `files:` entry read in place as a folder (image_folders), not an archive to download and unpack."""
    return not Path(filename).suffix


def check_prediction_config(config: dict) -> None:
    """Folder entries, `inference` and `evaluate_on`: one-line ConfigErrors naming the key and what is valid."""
    datasets = config["datasets"]
    segmentation_sets = {n: d for n, d in datasets.items() if d["format"] in SEGMENTATION_FORMATS}
    for name, dataset in datasets.items():
        for filename, entry in dataset["files"].items():
            if not is_folder_entry(filename):
                continue
            key = f"datasets.{name}.files.{filename}"
            if dataset["format"] not in FOLDER_FORMATS:
                raise ConfigError(
                    f"{key}: a folder entry (a name without suffix) needs format {' or '.join(FOLDER_FORMATS)}; "
                    "name archives <name>.zip"
                )
            if entry.get("source") or resolve_local(entry["url"]) is None:
                raise ConfigError(
                    f"{key}.url: a folder is read in place; give its local path (or file://path), no source"
                )
    for name, exp in config.get("segmentation", {}).items():
        for i, entry in enumerate(exp.get("evaluate_on", [])):
            key = f"segmentation.{name}.evaluate_on[{i}]"
            if entry["dataset"] not in segmentation_sets:
                raise choices_error(f"{key}.dataset", entry["dataset"], segmentation_sets)
        for i, target in enumerate(evaluate_on_targets(config, name)):
            key = f"segmentation.{name}.evaluate_on[{i}]"
            splits = datasets[target["dataset"]].get("splits", {})
            if target["subset"] != ALL_IMAGES and target["manifest"] not in splits:
                if not splits:
                    raise ConfigError(f"{key}: dataset {target['dataset']!r} defines no splits; use split: all")
                raise choices_error(f"{key}.manifest", target["manifest"], splits)
    for name, entry in config.get("inference", {}).items():
        if inference_package(config, name) is None:
            inference_cell(config, name)
        images = entry["images"]
        if images in datasets and datasets[images]["format"] not in SEGMENTATION_FORMATS:
            raise ConfigError(
                f"inference.{name}.images: dataset {images!r} has format {datasets[images]['format']!r}; "
                f"use a dataset of format {', '.join(SEGMENTATION_FORMATS)} or a folder of images"
            )
        if images not in datasets and "/" not in images and not Path(images).is_dir():
            raise choices_error(f"inference.{name}.images (a dataset, or a folder path)", images, datasets)
