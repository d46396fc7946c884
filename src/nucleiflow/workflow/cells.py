"""The experiment grid of a config: model cells, cross-validation folds, specs, inference and cross-dataset cells."""

from __future__ import annotations

from pathlib import Path

from nucleiflow.catalog import FORMAT_CLASS_NAMES, FORMAT_MICRONS_PER_PIXEL, NO_ENCODER
from nucleiflow.config import (
    ALL_IMAGES,
    NO_REGULARIZATION,
    ModelCell,
    ModelSpec,
    RegularizationSettings,
    TrainingSettings,
    tunes_postprocess,
)
from nucleiflow.errors import ConfigError, choices_error

ALL_IMAGES_MANIFEST = "store"  # the manifest name of ALL_IMAGES in paths.CROSS_EVAL
FOLD_OF = "fold_of"  # set by expand_folds on each fold's experiment: the cross-validation experiment it belongs to


def segmentation_cells(config: dict, experiment: str | None = None) -> list[ModelCell]:
    """Every (experiment, arch, encoder, regularization) training job in config order."""
    cells = []
    for name, exp in config.get("segmentation", {}).items():
        if experiment is not None and name != experiment:
            continue
        for model in exp["models"]:
            for reg in model.get("regularization") or exp.get("regularization", [NO_REGULARIZATION]):
                cells.append(ModelCell(name, exp["dataset"], model["arch"], model.get("encoder", NO_ENCODER), reg))
    return cells


def regularization_cell(config: dict, name: str) -> dict:
    """The named cell as a plain dict; "none" is built in (no extra blocks, no dropout, no L2)."""
    cell = RegularizationSettings().to_dict()
    if name != NO_REGULARIZATION:
        cell.update(config["regularization"][name])
    cell.pop("augmentation", None)  # not a model setting: see cell_augmentation
    return cell


def cell_augmentation(config: dict, experiment: str, reg: str) -> str | None:
    """The augmentation a cell trains with: its regularization cell's `augmentation`, else the experiment's."""
    own = config.get("regularization", {}).get(reg, {}).get("augmentation") if reg != NO_REGULARIZATION else None
    return own or config["segmentation"][experiment].get("augmentation")


def training_settings(config: dict, experiment: str) -> TrainingSettings:
    """The typed `training` section of a segmentation experiment (defaults applied)."""
    section = config["segmentation"][experiment]["training"]
    return TrainingSettings.from_section(section, f"segmentation.{experiment}.training")


def model_spec(config: dict, dataset: str, experiment: str, arch: str, encoder: str, reg: str) -> ModelSpec:
    """The spec of one model cell of a segmentation experiment."""
    exp = config["segmentation"][experiment]
    return ModelSpec(
        dataset=dataset,
        experiment=experiment,
        split=exp["split"],
        augmentation=cell_augmentation(config, experiment, reg),
        arch=arch,
        encoder=encoder,
        reg=reg,
        regularization=RegularizationSettings.from_section(regularization_cell(config, reg), f"regularization.{reg}"),
        training=training_settings(config, experiment),
        seed=config["seed"],
    )


def fold_experiment(name: str, fold: str) -> str:
    """The experiment that trains cross-validation experiment `name` on its fold (a named split) `fold`."""
    return f"{name}_{fold}"


def expand_folds(config: dict) -> dict:
    """Replace every experiment with `folds` by one experiment per fold (in place; returns `config`).

    `segmentation.<name>.folds: [a, b, c]` becomes experiments `<name>_a`, `<name>_b`, `<name>_c`, each the
    original with `split` set to its fold and `fold_of: <name>`, so each fold is trained, tuned and tested
    like any experiment; `cross_validation_groups` maps the name back to them. Run after schema validation
    and before `checks.check_config`. An experiment with both `split` and `folds` is an error.
    """
    expanded = {}
    for name, exp in config.get("segmentation", {}).items():
        if FOLD_OF in exp:  # already expanded (the config of a job re-reads the same file)
            expanded[name] = exp
            continue
        folds = exp.get("folds")
        if not folds:
            if "split" not in exp:
                raise ConfigError(f"segmentation.{name}: set split (one named split) or folds (cross-validation)")
            expanded[name] = exp
            continue
        if "split" in exp:
            raise ConfigError(f"segmentation.{name}: set either split or folds, not both (split: {exp['split']!r})")
        for fold in folds:
            fold_name = fold_experiment(name, fold)
            if fold_name in config["segmentation"]:
                raise ConfigError(f"segmentation.{name}.folds: {fold!r} would name experiment {fold_name!r}, taken")
            expanded[fold_name] = {**{k: v for k, v in exp.items() if k != "folds"}, "split": fold, FOLD_OF: name}
    if "segmentation" in config:
        config["segmentation"] = expanded
    return config


def cross_validation_groups(config: dict) -> dict[str, list[str]]:
    """{cross-validation experiment: its fold experiments in fold order} of an expanded config."""
    groups: dict[str, list[str]] = {}
    for name, exp in config.get("segmentation", {}).items():
        if FOLD_OF in exp:
            groups.setdefault(exp[FOLD_OF], []).append(name)
    return groups


def cross_validation_dataset(config: dict, name: str) -> str:
    """The dataset of cross-validation `name` (its folds share it: they are one experiment expanded)."""
    return config["segmentation"][cross_validation_groups(config)[name][0]]["dataset"]


def cross_validation_published(config: dict, name: str) -> bool:
    """Whether the published PanNuke results of other methods belong beside cross-validation `name` (PanNuke data)."""
    return config["datasets"][cross_validation_dataset(config, name)]["format"] == "pannuke"


def cross_validation_cells(config: dict, name: str) -> list[dict]:
    """Every fold's model cells (wildcards), fold by fold, each with `fold`: the fold experiment's split."""
    return [
        {**cell.wildcards, "fold": config["segmentation"][fold]["split"]}
        for fold in cross_validation_groups(config)[name]
        for cell in segmentation_cells(config, fold)
    ]


def pannuke_pq_experiments(config: dict) -> list[str]:
    """Experiments on PanNuke-format data that evaluate their test split (the benchmark scores the test fold)."""
    return [
        name
        for name, exp in config.get("segmentation", {}).items()
        if config["datasets"][exp["dataset"]]["format"] == "pannuke" and "test" in exp["evaluate_splits"]
    ]


def experiment_tunes(config: dict, experiment: str) -> bool:
    """Whether `experiment` tunes its post-processing on the validation split."""
    exp = config["segmentation"][experiment]
    return tunes_postprocess(training_settings(config, experiment).target, exp.get("postprocess", {}))


def inference_cell(config: dict, name: str) -> ModelCell:
    """The model cell that `inference.<name>.model` (`<experiment>/<arch>/<encoder>/<reg>`) names."""
    return named_cell(config, f"inference.{name}.model", config["inference"][name]["model"])


def model_package(text: str) -> str | None:
    """The exported model package (a .zip or a package folder) a `model:` entry names, else None (a model cell).

    A zip named here may be a workflow output (rule export_model's bioimageio.zip): Snakemake then makes it.
    """
    return text if text.endswith(".zip") or Path(text).is_dir() else None


def inference_package(config: dict, name: str) -> str | None:
    """The exported model package `inference.<name>.model` names, else None."""
    return model_package(config["inference"][name]["model"])


def dataset_type_names(config: dict, dataset: str) -> list[str]:
    """A dataset's nucleus-type names, background (id 0) first: its `classes`, else its format's; [] if untyped.

    A type head trained on the dataset predicts ids into these names; the prediction tables, the slides'
    GeoJSON classifications and exported packages name types with them.
    """
    entry = config["datasets"][dataset]
    if entry.get("classes"):
        return ["background", *entry["classes"]]
    return list(FORMAT_CLASS_NAMES.get(entry["format"], ()))


def dataset_microns_per_pixel(config: dict, dataset: str) -> float | None:
    """A dataset's resolution (um per pixel): its `microns_per_pixel`, else its format's; None if unknown."""
    entry = config["datasets"][dataset]
    found = entry.get("microns_per_pixel") or FORMAT_MICRONS_PER_PIXEL.get(entry["format"])
    return float(found) if found else None


def cell_type_names(config: dict, cell: ModelCell) -> list[str]:
    """The type names of a model cell's training dataset (`dataset_type_names`)."""
    return dataset_type_names(config, config["segmentation"][cell.experiment]["dataset"])


def named_cell(config: dict, key: str, text: str) -> ModelCell:
    """The model cell `<experiment>/<arch>/<encoder>/<reg>` that config key `key` names."""
    parts = text.split("/")
    if len(parts) != 4:
        raise ConfigError(
            f"{key}: {text!r} must read <experiment>/<arch>/<encoder>/<reg>, e.g. dsb_resunet/resunet/none/none, "
            "or name an exported model package (a .zip or a package folder)"
        )
    experiment = parts[0]
    if experiment not in config.get("segmentation", {}):
        raise choices_error(key + " (experiment)", experiment, config.get("segmentation", {}))
    cells = {cell.label: cell for cell in segmentation_cells(config, experiment)}
    label = "/".join(parts[1:])
    if label not in cells:
        raise choices_error(key + f" (model of {experiment})", label, cells)
    return cells[label]


def inference_source(config: dict, name: str) -> str | None:
    """The dataset `inference.<name>.images` names, or None when it names a folder."""
    images = config["inference"][name]["images"]
    return images if images in config["datasets"] else None


def evaluate_on_targets(config: dict, experiment: str) -> list[dict]:
    """`segmentation.<experiment>.evaluate_on` with defaults: dicts of dataset, manifest and subset."""
    targets = []
    for entry in config["segmentation"][experiment].get("evaluate_on", []):
        subset = entry.get("split", "test")
        manifest = ALL_IMAGES_MANIFEST if subset == ALL_IMAGES else entry.get("manifest")
        if manifest is None:
            manifest = next(iter(config["datasets"][entry["dataset"]].get("splits", {})), None)
        targets.append({"dataset": entry["dataset"], "manifest": manifest, "subset": subset})
    return targets
