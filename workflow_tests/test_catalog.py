"""One definition each: name lists (catalog), path templates (paths), the model spec (config.ModelSpec).

Every registry is keyed by its catalog list, and every enum of the config
schema equals the list that the code behind it accepts, so a name is added in
one place and a test names any place that was forgotten.
"""

import copy
import re
from dataclasses import fields

import pytest
import yaml
from conftest import REPO
from snakemake.utils import validate

from nucleiflow import catalog, paths
from nucleiflow.catalog import CROP_TASK_CLASS_NAMES as TASK_CLASS_NAMES
from nucleiflow.classification import classic
from nucleiflow.classification import models as cnn_models
from nucleiflow.config import ALL_IMAGES, ModelSpec
from nucleiflow.datasets import CONVERTERS
from nucleiflow.engine import LR_SCHEDULES
from nucleiflow.errors import ConfigError
from nucleiflow.models.registry import ARCHITECTURES
from nucleiflow.reporting.published import published_tables
from nucleiflow.segmentation.analyses.robustness import PERTURBATIONS
from nucleiflow.segmentation.representation.postprocess import WatershedParams
from nucleiflow.segmentation.training.data import SIZE_POLICIES
from nucleiflow.segmentation.training.losses import LOSS_TERMS, LOSSES
from nucleiflow.segmentation.training.trainer import RESUMABLE_CHANGES, checkpoint_identity
from nucleiflow.splits import SCHEMES, SPLIT_NAMES
from nucleiflow.workflow.cells import model_spec, segmentation_cells
from nucleiflow.workflow.classification import PUBLISHED_STUDY

SCHEMA_FILE = REPO / "schemas" / "config.schema.yaml"
SCHEMA = yaml.safe_load(SCHEMA_FILE.read_text())

# Every enum of the schema (by its path, `[]` for array items) and the list it must equal.
SCHEMA_ENUMS = {
    "datasets.*.splits.*.scheme": SCHEMES,
    "datasets.*.format": catalog.DATASET_FORMATS,
    "segmentation.*.models[].arch": catalog.ARCH_NAMES,
    "segmentation.*.training.loss": tuple(LOSSES),
    "segmentation.*.training.input_scaling": catalog.INPUT_SCALINGS,
    "segmentation.*.training.mask_preprocessing": catalog.MASK_PREPROCESSING,
    "segmentation.*.training.target": catalog.INSTANCE_TARGETS,
    "segmentation.*.postprocess.tta": catalog.TTA_MODES,
    "slides.*.tta": (*catalog.TTA_MODES, None),  # null: the model's experiment's
    "regularization.*.l2_scope": catalog.L2_SCOPES,
    "segmentation.*.training.size_policy": SIZE_POLICIES,
    "segmentation.*.training.encoder_weights": ("imagenet", None),
    "segmentation.*.training.lr_schedule": LR_SCHEDULES,
    "segmentation.*.training.loss_weights{}": LOSS_TERMS,
    "segmentation.*.postprocess.grid{}": tuple(f.name for f in fields(WatershedParams)),
    "segmentation.*.evaluate_splits[]": SPLIT_NAMES,
    "segmentation.*.evaluate_on[].split": (*SPLIT_NAMES, ALL_IMAGES),
    "segmentation.*.published": (*(s for s in published_tables() if s != PUBLISHED_STUDY), None),
    "comparisons.*.split": SPLIT_NAMES,
    "classification.*.crops.task": tuple(TASK_CLASS_NAMES),
    "classification.*.cnn.models[]": catalog.CNN_MODELS,
    "segmentation.*.explain.target": catalog.EXPLAIN_TARGETS,
    "segmentation.*.explain.composite": catalog.LRP_COMPOSITES,
    "segmentation.*.robustness.perturbations[].name": catalog.PERTURBATIONS,
}


def _schema_enums(node, path="") -> dict:
    """{path: enum} of every enum under `node`, following definitions by reference."""
    if not isinstance(node, dict):
        return {}
    if "$ref" in node:
        return _schema_enums(SCHEMA["definitions"][node["$ref"].rsplit("/", 1)[1]], path)
    found = {path: tuple(node["enum"])} if "enum" in node else {}
    for key, child in node.get("properties", {}).items():
        found |= _schema_enums(child, f"{path}.{key}".lstrip("."))
    if isinstance(node.get("additionalProperties"), dict):
        found |= _schema_enums(node["additionalProperties"], f"{path}.*")
    if isinstance(node.get("items"), dict):
        found |= _schema_enums(node["items"], f"{path}[]")
    if isinstance(node.get("propertyNames"), dict):  # the keys a mapping may hold
        found |= _schema_enums(node["propertyNames"], f"{path}{{}}")
    return found


def test_every_schema_enum_equals_its_list():
    enums = _schema_enums(SCHEMA)
    assert set(enums) == set(SCHEMA_ENUMS), "an enum was added to or removed from the schema: list it here"
    for path, enum in enums.items():
        assert set(enum) == set(SCHEMA_ENUMS[path]), path


def test_each_registry_is_keyed_by_its_catalog_list():
    assert tuple(ARCHITECTURES) == catalog.ARCH_NAMES
    assert {arch: spec.encoders for arch, spec in ARCHITECTURES.items()} == catalog.ARCH_ENCODERS
    assert tuple(CONVERTERS) == catalog.SEGMENTATION_FORMATS
    assert tuple(LOSSES) == catalog.LOSS_NAMES
    assert set(catalog.SEGMENTATION_FORMATS) < set(catalog.DATASET_FORMATS)
    assert tuple(classic.CLASSIFIERS) == catalog.CLASSIFIER_NAMES
    assert tuple(cnn_models.CNN_MODELS) == catalog.CNN_MODELS
    assert set(catalog.PRETRAINED_CNN_MODELS) <= set(catalog.CNN_MODELS)
    assert tuple(catalog.ARCH_DISPLAY) == catalog.ARCH_NAMES
    assert tuple(PERTURBATIONS) == catalog.PERTURBATIONS
    assert set(catalog.ENCODER_DISPLAY) == {
        encoder for encoders in catalog.ARCH_ENCODERS.values() for encoder in encoders
    }


def test_path_templates_render_the_workflow_paths():
    cell = {"dataset": "pannuke", "experiment": "paper", "arch": "unet", "encoder": "resnet50", "reg": "l2"}
    assert paths.MODEL_DIR.format(**cell) == "results/pannuke/paper/models/unet/resnet50/l2"
    assert paths.EVAL_DIR.format(**cell) == "results/pannuke/paper/evaluation/unet/resnet50/l2"
    assert paths.STORE.format(dataset="dsb2018") == "results/dsb2018/store.h5"
    assert paths.SPLIT.format(dataset="dsb2018", split="a") == "results/dsb2018/splits/a.csv"
    history = paths.CNN_HISTORY.format(dataset="nucrec", experiment="paper", model="small_cnn", variant="base")
    assert history == "results/nucrec/classification/paper/cnn/small_cnn_base_history.csv"
    assert paths.log_path("train_{arch}", paths.SEG_DIR) == "results/{dataset}/{experiment}/logs/train_{arch}.log"
    assert paths.bench_path("convert") == "results/{dataset}/benchmarks/convert.tsv"
    assert paths.WEIGHTS_MARKER.format(arch="unet", encoder="resnet50") == "resources/weights/unet/resnet50.json"


def test_no_rule_or_module_spells_a_results_or_resources_path():
    literal = re.compile(r"""["'](results|resources)/""")
    files = [REPO / "Snakefile", *(REPO / "rules").glob("*.smk"), *(REPO / "src" / "nucleiflow").rglob("*.py")]
    offenders = [f.name for f in files if f.name != "paths.py" and literal.search(f.read_text())]
    assert not offenders, f"use nucleiflow.paths in: {offenders}"


def _validated_tiny() -> dict:
    config = yaml.safe_load((REPO / "workflow_tests" / "config_tiny.yaml").read_text())
    validate(config, str(SCHEMA_FILE))  # fills in the defaults, as the workflow does at start-up
    return config


def test_model_spec_is_the_dict_the_rules_pass_and_round_trips():
    config = _validated_tiny()
    cell = segmentation_cells(config)[1]
    exp = config["segmentation"][cell.experiment]
    spec = model_spec(config, **cell.wildcards)
    as_dict = spec.to_dict()
    # Key order matters too: Snakemake compares the repr of params to decide re-runs.
    assert list(as_dict) == [
        "dataset",
        "experiment",
        "split",
        "augmentation",
        "arch",
        "encoder",
        "reg",
        "regularization",
        "training",
        "seed",
    ]
    assert as_dict["training"] == exp["training"] and as_dict["seed"] == config["seed"]
    assert ModelSpec.from_dict(as_dict) == spec
    assert ModelSpec.from_dict(spec) is spec


def test_checkpoint_identity_is_unchanged():
    spec = model_spec(_validated_tiny(), **segmentation_cells(_validated_tiny())[0].wildcards).to_dict()
    # The identity existing checkpoints were saved with: the spec minus the resumable training settings.
    training = {k: v for k, v in spec["training"].items() if k not in RESUMABLE_CHANGES}
    legacy = {**{k: v for k, v in spec.items() if k != "training"}, "training": training}
    assert checkpoint_identity(spec) == legacy
    assert repr(checkpoint_identity(ModelSpec.from_dict(spec))) == repr(legacy)


def test_a_training_key_added_later_is_left_out_of_the_spec_at_its_default():
    # Absent from the config: the spec (Snakemake's params, checkpoint identity) is what it was before the key.
    config = _validated_tiny()
    cell = segmentation_cells(config)[0]
    spec = model_spec(config, **cell.wildcards)
    assert "lr_schedule" not in spec.to_dict()["training"] and spec.training["lr_schedule"] == "plateau"
    assert "lr_schedule" not in checkpoint_identity(spec)["training"]
    # Set in the config, it is part of the spec, so changing it re-runs training and refuses old checkpoints.
    config["segmentation"][cell.experiment]["training"]["lr_schedule"] = "cosine"
    cosine = model_spec(config, **cell.wildcards)
    assert cosine.to_dict()["training"]["lr_schedule"] == "cosine"
    assert checkpoint_identity(cosine) != checkpoint_identity(spec)
    assert ModelSpec.from_dict(cosine.to_dict()) == cosine


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("seed"), r"^model spec: missing key\(s\) \['seed'\]; expected keys: dataset, "),
        (lambda s: s.update(epochs=3), r"^model spec: unknown key\(s\) \['epochs'\]; expected keys: dataset, "),
    ],
)
def test_model_spec_names_a_missing_or_unknown_key(edit, message):
    config = _validated_tiny()
    spec = copy.deepcopy(model_spec(config, **segmentation_cells(config)[0].wildcards).to_dict())
    edit(spec)
    with pytest.raises(ConfigError, match=message):
        ModelSpec.from_dict(spec)
