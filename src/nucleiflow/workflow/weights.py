"""The pretrained weights a config trains from, and the marker files that say they are cached.

The `cache_weights` rule asks for `weights_targets`; `train_segmentation` and `train_cnn` take the marker
of their model as an input (`segmentation_weights_inputs`, `cnn_weights_inputs`). Where the libraries fetch
the weights from and the look-up in the local cache are `nucleiflow.pretrained`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nucleiflow.catalog import NO_ENCODER, PRETRAINED_CNN_MODELS
from nucleiflow.config import TrainingSettings
from nucleiflow.errors import choices_error
from nucleiflow.paths import WEIGHTS_DIR, WEIGHTS_MARKER
from nucleiflow.workflow.cells import training_settings

CNN_ARCH = "cnn"  # the marker "arch" of the classification study's CNNs
CNN_WEIGHTS = "imagenet"  # timm's default pretrained tag of PRETRAINED_CNN_MODELS is an ImageNet-1k one


@dataclass(frozen=True)
class PretrainedModel:
    """One set of weights the config trains from: what to build, and its marker file."""

    arch: str
    encoder: str
    weights: str

    @property
    def marker(self) -> str:
        return weights_marker_path(self.arch, self.encoder).as_posix()

    @property
    def label(self) -> str:
        return f"{self.arch}/{self.encoder}"


def _segmentation_models(config: dict) -> list[PretrainedModel]:
    found = []
    for exp in config.get("segmentation", {}).values():
        weights = TrainingSettings.from_section(exp["training"]).encoder_weights
        if not weights:
            continue
        for model in exp["models"]:
            encoder = model.get("encoder", NO_ENCODER)
            if encoder != NO_ENCODER:  # custom U-Nets have no encoder to pretrain
                found.append(PretrainedModel(model["arch"], encoder, weights))
    return found


def _cnn_models(config: dict) -> list[PretrainedModel]:
    found = []
    for exp in config.get("classification", {}).values():
        cnn = exp.get("cnn", {})
        if cnn.get("pretrained"):
            found += [
                PretrainedModel(CNN_ARCH, name, CNN_WEIGHTS)
                for name in cnn.get("models", [])
                if name in PRETRAINED_CNN_MODELS
            ]
    return found


def pretrained_models(config: dict) -> list[PretrainedModel]:
    """Every (arch, encoder, weights) the config trains from pretrained weights, once each, in config order."""
    unique: dict[tuple[str, str], PretrainedModel] = {}
    for model in _segmentation_models(config) + _cnn_models(config):
        unique.setdefault((model.arch, model.encoder), model)
    return list(unique.values())


def weights_targets(config: dict) -> list[str]:
    """The marker files the `cache_weights` target rule asks for."""
    return [model.marker for model in pretrained_models(config)]


def weights_for(config: dict, arch: str, encoder: str) -> str:
    """The weights name the config gives (arch, encoder); ConfigError naming the marker if none."""
    for model in pretrained_models(config):
        if (model.arch, model.encoder) == (arch, encoder):
            return model.weights
    choices = [model.label for model in pretrained_models(config)] or ["(none in this config)"]
    raise choices_error(f"{weights_marker_path(arch, encoder)}: pretrained model", f"{arch}/{encoder}", choices)


def segmentation_weights_inputs(config: dict, experiment: str, arch: str, encoder: str) -> list[str]:
    """Input function of train_segmentation: the weights marker when the experiment uses pretrained weights."""
    weights = training_settings(config, experiment).encoder_weights
    if not weights or encoder == NO_ENCODER:
        return []
    return [weights_marker_path(arch, encoder).as_posix()]


def cnn_weights_inputs(config: dict, experiment: str, model: str) -> list[str]:
    """Input function of train_cnn: the weights marker when the CNN starts from pretrained weights."""
    cnn = config["classification"][experiment].get("cnn", {})
    if not cnn.get("pretrained") or model not in PRETRAINED_CNN_MODELS:
        return []
    return [weights_marker_path(CNN_ARCH, model).as_posix()]


def weights_marker_path(arch: str, encoder: str, root: str | Path = WEIGHTS_DIR) -> Path:
    """`resources/weights/<arch>/<encoder>.json` (`paths.WEIGHTS_MARKER`): written once the weights are cached."""
    marker = Path(WEIGHTS_MARKER.format(arch=arch, encoder=encoder))
    return Path(root) / marker.relative_to(WEIGHTS_DIR)
