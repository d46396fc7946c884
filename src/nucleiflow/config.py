"""Config checks beyond the JSON schema, expansion of the experiment grid, and the spec of one model.

Used by rules/common.smk at start-up and tested directly. Everything here is
torch-free so that building the DAG stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from nucleiflow.catalog import ARCH_ENCODERS, CLASSIFIER_NAMES, NO_ENCODER, SEGMENTATION_FORMATS
from nucleiflow.errors import ConfigError, choices_error

NO_REGULARIZATION = "none"  # the built-in regularization cell

# Per-image metrics a comparison may show (evaluation's per-image columns).
COMPARABLE_METRICS = (
    "loss",
    "acc",
    "dice",
    "sensitivity",
    "iou",
    "precision",
    "f1",
    "specificity",
    "mcc",
    "aji",
    "pq",
    "dq",
    "sq",
    "map",
)


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
        return {
            "dataset": self.dataset,
            "experiment": self.experiment,
            "arch": self.arch,
            "encoder": self.encoder,
            "reg": self.reg,
        }


@dataclass(frozen=True)
class ModelSpec:
    """Everything that defines one trained model; also the identity its checkpoints must match.

    The workflow passes it to jobs as a plain dict (`to_dict`: Snakemake compares
    params to decide re-runs); the package takes it back with `from_dict`.
    `regularization` is a cell as `regularization_cell` returns it, `training`
    the experiment's `training` section.
    """

    dataset: str
    experiment: str
    split: str
    augmentation: str | None
    arch: str
    encoder: str
    reg: str
    regularization: dict
    training: dict
    seed: int

    def to_dict(self) -> dict:
        """The plain dict, keys in field order (copies of the nested dicts)."""
        return {f.name: _copied(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, spec: Mapping | ModelSpec) -> ModelSpec:
        """The spec from its dict (a ModelSpec is returned as it is); ConfigError naming missing or unknown keys."""
        if isinstance(spec, cls):
            return spec
        names = [f.name for f in fields(cls)]
        missing = [name for name in names if name not in spec]
        unknown = [key for key in spec if key not in names]
        if missing or unknown:
            problem = f"missing key(s) {missing}" if missing else f"unknown key(s) {unknown}"
            raise ConfigError(f"model spec: {problem}; expected keys: {', '.join(names)}")
        return cls(**{name: _copied(spec[name]) for name in names})


def _copied(value):
    return dict(value) if isinstance(value, Mapping) else value


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
        regularization=regularization_cell(config, reg),
        training=exp["training"],
        seed=config["seed"],
    )


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
            for reg in model.get("regularization") or exp.get("regularization", [NO_REGULARIZATION]):
                cells.append(ModelCell(name, exp["dataset"], model["arch"], model.get("encoder", NO_ENCODER), reg))
    return cells


def regularization_cell(config: dict, name: str) -> dict:
    """The named cell; "none" is built in (no extra blocks, no dropout, no L2)."""
    cell = {"extra_blocks": 0, "dropout": 0.0, "l2": 0.0, "decoder_dropout": 0.0, "l2_scope": "added_blocks"}
    if name != NO_REGULARIZATION:
        cell.update(config["regularization"][name])
    cell.pop("augmentation", None)  # not a model setting: see cell_augmentation
    return cell


def cell_augmentation(config: dict, experiment: str, reg: str) -> str | None:
    """The augmentation a cell trains with: its regularization cell's `augmentation`, else the experiment's."""
    own = config.get("regularization", {}).get(reg, {}).get("augmentation") if reg != NO_REGULARIZATION else None
    return own or config["segmentation"][experiment].get("augmentation")


def robustness_targets(config: dict) -> list[str]:
    """The degradation figure and AUC table of every experiment with a `robustness` section."""
    from .paths import ROBUSTNESS_FIGURE, ROBUSTNESS_TABLE  # stdlib only

    targets = []
    for name, exp in config.get("segmentation", {}).items():
        if exp.get("robustness"):
            wildcards = {"dataset": exp["dataset"], "experiment": name}
            targets += [ROBUSTNESS_FIGURE.format(**wildcards), ROBUSTNESS_TABLE.format(**wildcards)]
    return targets


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


FOLD_OF = "fold_of"  # set by expand_folds on each fold's experiment: the cross-validation experiment it belongs to


def fold_experiment(name: str, fold: str) -> str:
    """The experiment that trains cross-validation experiment `name` on its fold (a named split) `fold`."""
    return f"{name}_{fold}"


def expand_folds(config: dict) -> dict:
    """Replace every experiment with `folds` by one experiment per fold (in place; returns `config`).

    `segmentation.<name>.folds: [a, b, c]` becomes experiments `<name>_a`, `<name>_b`, `<name>_c`, each the
    original with `split` set to its fold and `fold_of: <name>`, so each fold is trained, tuned and tested
    like any experiment; `cross_validation_groups` maps the name back to them. Run after schema validation
    and before `check_config`. An experiment with both `split` and `folds` is an error.
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


def tunes_postprocess(target: str, postprocess_config: Mapping) -> bool:
    """Whether an experiment tunes its post-processing: `postprocess.tune`, or by default contour and hv only."""
    tune = postprocess_config.get("tune")
    return target != "binary" if tune is None else bool(tune)


def check_targets(config: dict, name: str) -> None:
    """`training.target` / `type_head` against the dataset and the mask preprocessing."""
    exp = config["segmentation"][name]
    training, key = exp["training"], f"segmentation.{name}.training"
    target = training.get("target", "binary")
    if target != "binary" and training.get("mask_preprocessing", "none") != "none":
        raise ConfigError(
            f"{key}.mask_preprocessing: {training['mask_preprocessing']!r} makes a binary mask; "
            f"target {target!r} is derived from the instance maps (use mask_preprocessing: none)"
        )
    dataset_format = config["datasets"][exp["dataset"]]["format"]
    if training.get("type_head") and dataset_format != "pannuke":
        raise ConfigError(
            f"{key}.type_head: dataset {exp['dataset']!r} (format {dataset_format!r}) has no nucleus types; "
            "a type head needs a pannuke-format dataset"
        )


def check_config(config: dict) -> None:
    """Cross-reference checks; raises ConfigError naming the key, value and valid choices.

    Cross-validation experiments are expanded into their folds first (`expand_folds`, in place).
    """
    expand_folds(config)
    datasets = config["datasets"]
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
    from .download import resolve_local  # torch-free, stdlib only

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
        if entry["images"] in config["datasets"] or folder.is_dir():
            continue
        if produced_under and folder.as_posix().startswith(produced_under.rstrip("/") + "/"):
            continue
        raise ConfigError(f"inference.{name}.images: {entry['images']!r} is neither a dataset nor an existing folder")


# --- your own images: folder datasets, the predict stage, cross-dataset evaluation ------------------

ALL_IMAGES = "all"  # evaluate_on split: every labelled image of the dataset's store
ALL_IMAGES_MANIFEST = "store"  # the manifest name of ALL_IMAGES in paths.CROSS_EVAL


def is_folder_entry(filename: str) -> bool:
    """A `files:` entry read in place as a folder (image_folders), not an archive to download and unpack."""
    return not Path(filename).suffix


def inference_cell(config: dict, name: str) -> ModelCell:
    """The model cell that `inference.<name>.model` (`<experiment>/<arch>/<encoder>/<reg>`) names."""
    key = f"inference.{name}.model"
    text = config["inference"][name]["model"]
    parts = text.split("/")
    if len(parts) != 4:
        raise ConfigError(
            f"{key}: {text!r} must read <experiment>/<arch>/<encoder>/<reg>, e.g. dsb_resunet/resunet/none/none"
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


def check_prediction_config(config: dict) -> None:
    """Folder entries, `inference` and `evaluate_on`: one-line ConfigErrors naming the key and what is valid."""
    from .download import resolve_local  # torch-free, stdlib only

    datasets = config["datasets"]
    segmentation_sets = {n: d for n, d in datasets.items() if d["format"] in SEGMENTATION_FORMATS}
    for name, dataset in datasets.items():
        for filename, entry in dataset["files"].items():
            if not is_folder_entry(filename):
                continue
            key = f"datasets.{name}.files.{filename}"
            if dataset["format"] != "image_folders":
                raise ConfigError(
                    f"{key}: a folder entry (a name without suffix) needs format image_folders; "
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
        inference_cell(config, name)
        images = entry["images"]
        if images in datasets and datasets[images]["format"] not in SEGMENTATION_FORMATS:
            raise ConfigError(
                f"inference.{name}.images: dataset {images!r} has format {datasets[images]['format']!r}; "
                f"use a dataset of format {', '.join(SEGMENTATION_FORMATS)} or a folder of images"
            )
        if images not in datasets and "/" not in images and not Path(images).is_dir():
            raise choices_error(f"inference.{name}.images (a dataset, or a folder path)", images, datasets)
