"""CNN classifiers for nucleus vs micronucleus: the models, their registry and transfer-learning policy.

`build_classifier` makes a model of `CNN_MODELS` (SmallCNN from scratch, or
Inception-ResNet-v2 from timm) with a new `num_classes`-way head.

Transfer learning (InceptionResNetV2 with ImageNet weights) follows
`TransferPolicy`: the new head trains alone for `head_epochs` with the
pretrained backbone frozen (BatchNorm statistics included), then everything
is fine-tuned at `lr * fine_tune_lr_factor`. Pretrained weights are only ever
read from the local Hugging Face cache (`pretrained_weights_file`, through
`nucleiflow.pretrained`); a job never downloads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from nucleiflow.catalog import PRETRAINED_CNN_MODELS
from nucleiflow.classification.dataset import DEFAULT_MEAN, DEFAULT_STD
from nucleiflow.errors import ConfigError, choices_error
from nucleiflow.pretrained import cached_weight_files
from nucleiflow.workflow.weights import CNN_ARCH, CNN_WEIGHTS


class SmallCNN(nn.Module):
    """A compact baseline CNN: four conv-BN-ReLU-maxpool blocks, global pooling, dropout, linear.

    Our design: the classification study calls its model "CNN" and describes no layers.

    Widths 32-64-128-256 with 3x3 convolutions: about 0.39 M parameters for
    RGB input and two classes (Inception-ResNet-v2 has 54 M). Global average
    pooling makes it accept any input size of at least 16 px (four halvings).
    """

    def __init__(self, num_classes: int = 2, in_channels: int = 3, widths=(32, 64, 128, 256), dropout: float = 0.3):
        super().__init__()
        blocks, channels = [], in_channels
        for width in widths:
            blocks.append(_conv_block(channels, width))
            channels = width
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.classifier(self.dropout(x))


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),  # BN supplies the bias
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


def _small_cnn(num_classes: int, pretrained: bool) -> nn.Module:
    if pretrained:
        raise ConfigError("small_cnn has no pretrained weights; set pretrained: false")
    return SmallCNN(num_classes=num_classes)


def _inception_resnet_v2(num_classes: int, pretrained: bool) -> nn.Module:
    if not pretrained:
        return timm.create_model("inception_resnet_v2", pretrained=False, num_classes=num_classes)
    # A local file: timm loads it without touching the network, and drops the
    # 1000-class ImageNet head because num_classes differs.
    weights = pretrained_weights_file("inception_resnet_v2")
    return timm.create_model(
        "inception_resnet_v2", pretrained=True, num_classes=num_classes, pretrained_cfg_overlay={"file": str(weights)}
    )


def pretrained_weights_file(name: str) -> Path:
    """The cached ImageNet weights timm would load for model `name`.

    Reads the local Hugging Face cache only (`nucleiflow.pretrained`, the same
    check every stage uses): missing weights are a one-line ConfigError
    naming the rule that caches them, never a download attempt.
    """
    if not has_pretrained_weights(name):
        raise choices_error("pretrained cnn model", name, PRETRAINED_CNN_MODELS)
    *_, weights = cached_weight_files(CNN_ARCH, name, CNN_WEIGHTS)  # the last one is the weights file
    return weights


CNN_MODELS: dict[str, Callable[[int, bool], nn.Module]] = {
    "small_cnn": _small_cnn,
    "inception_resnet_v2": _inception_resnet_v2,
}
# Input side the model is meant for, and the smallest that runs: the
# Inception stem's unpadded strided convolutions fail below 75 px.
INPUT_SIZES: dict[str, int] = {"small_cnn": 64, "inception_resnet_v2": 299}
MIN_INPUT_SIZES: dict[str, int] = {"small_cnn": 16, "inception_resnet_v2": 75}


def build_classifier(name: str, num_classes: int = 2, pretrained: bool = False, seed: int | None = None) -> nn.Module:
    """A CNN from CNN_MODELS with a `num_classes`-way head (ImageNet weights from the cache if `pretrained`).

    `seed`, if given, seeds torch first so the random initial weights (the
    head, or the whole net when not pretrained) are reproducible.
    """
    if name not in CNN_MODELS:
        raise choices_error("cnn model", name, CNN_MODELS)
    if seed is not None:
        torch.manual_seed(seed)
    return CNN_MODELS[name](num_classes, pretrained)


def has_pretrained_weights(name: str) -> bool:
    """Whether model `name` can start from ImageNet weights (the config's `pretrained` applies to it)."""
    return name in PRETRAINED_CNN_MODELS


def check_input_size(name: str, image_size: int) -> None:
    """ConfigError if `image_size` is below what model `name` can process."""
    minimum = MIN_INPUT_SIZES.get(name, 1)
    if image_size < minimum:
        raise ConfigError(f"image_size: {image_size} is too small for {name}; use at least {minimum}")


@dataclass(frozen=True)
class TransferPolicy:
    """How a pretrained model is trained: the new head alone first, then everything.

    `head_epochs`: epochs with the pretrained backbone frozen, its BatchNorm
    running statistics included (as Keras' ``trainable = False`` with
    ``training=False``), so the randomly initialised head does not push large
    gradients into the ImageNet features. 0 fine-tunes everything from epoch 1.
    `fine_tune_lr_factor`: once the backbone trains, the learning rate is
    ``lr * fine_tune_lr_factor`` (a lower rate keeps the pretrained features).
    """

    head_epochs: int = 5
    fine_tune_lr_factor: float = 0.1

    def __post_init__(self):
        if self.head_epochs < 0:
            raise ConfigError(f"cnn.transfer.head_epochs: {self.head_epochs!r} must be 0 or more")
        if not 0 < self.fine_tune_lr_factor <= 1:
            raise ConfigError(f"cnn.transfer.fine_tune_lr_factor: {self.fine_tune_lr_factor!r} must be in (0, 1]")

    @classmethod
    def from_config(cls, options: dict | None) -> TransferPolicy:
        """From the config's ``cnn.transfer`` mapping; missing keys take the defaults above."""
        options = options or {}
        unknown = sorted(set(options) - {"head_epochs", "fine_tune_lr_factor"})
        if unknown:
            raise ConfigError(f"cnn.transfer: unknown key(s) {unknown}; valid: head_epochs, fine_tune_lr_factor")
        return cls(**options)

    def backbone_frozen(self, epoch: int) -> bool:
        return epoch <= self.head_epochs

    def lr(self, epoch: int, base_lr: float) -> float:
        return base_lr if self.backbone_frozen(epoch) else base_lr * self.fine_tune_lr_factor


def head_module(model: nn.Module) -> nn.Module:
    """The classification head: timm's `get_classifier()`, or SmallCNN's `classifier`."""
    if hasattr(model, "get_classifier"):
        return model.get_classifier()
    return model.classifier


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """(Un)freeze every parameter outside the head; the head always trains."""
    for parameter in model.parameters():
        parameter.requires_grad = trainable
    for parameter in head_module(model).parameters():
        parameter.requires_grad = True


def hold_frozen_batchnorm(model: nn.Module) -> None:
    """Frozen BatchNorm layers keep their pretrained running statistics (eval mode)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            parameters = list(module.parameters())
            if parameters and not any(p.requires_grad for p in parameters):
                module.eval()


def normalisation(model: nn.Module) -> tuple[tuple, tuple]:
    """Per-channel (mean, std) the model expects: its timm pretrained_cfg's, else DEFAULT_MEAN/DEFAULT_STD."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("mean", DEFAULT_MEAN)), tuple(cfg.get("std", DEFAULT_STD))
