"""CNN classifiers for nucleus vs micronucleus: models, dataset, training loop.

`train_classifier` returns the per-epoch history the paper tabulates (loss,
accuracy, precision, recall and AUC on train and validation); checkpoints and
files are the calling stage's business.

Metrics work for any number of classes: with two, precision, recall and AUC
are those of the positive class (index 1: micronucleus, small nucleus); with
more, precision and recall are support-weighted averages and AUC is the
support-weighted one-vs-rest AUC.

Transfer learning (InceptionResNetV2 with ImageNet weights) follows
`TransferPolicy`: the new head trains alone for `head_epochs` with the
pretrained backbone frozen (BatchNorm statistics included), then everything
is fine-tuned at `lr * fine_tune_lr_factor`. Pretrained weights are only ever
read from the local Hugging Face cache (`pretrained_weights_file`, through
`nucleiflow.pretrained`); a job never downloads.
"""

from __future__ import annotations

import logging
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import timm
import torch
from sklearn.metrics import accuracy_score, precision_score, recall_score, roc_auc_score
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from nucleiflow.classification.dataset import load_image
from nucleiflow.errors import ConfigError, choices_error
from nucleiflow.pretrained import CNN_ARCH, CNN_WEIGHTS, PRETRAINED_CNN_MODELS, cached_weight_files

log = logging.getLogger(__name__)

HISTORY_METRICS = ("loss", "accuracy", "precision", "recall", "auc")
HISTORY_COLUMNS = ["epoch"] + [f"{split}_{m}" for split in ("train", "val") for m in HISTORY_METRICS] + ["lr"]
REPORT_EPOCHS = (1,) + tuple(range(10, 101, 10))  # the paper's per-epoch tables
POSITIVE_CLASS = 1  # two classes: micronucleus (or small nucleus); precision, recall and AUC are for this class
# Inputs are scaled to [-1, 1] unless the model carries its own (timm pretrained_cfg).
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)


class SmallCNN(nn.Module):
    """A compact baseline CNN: four conv-BN-ReLU-maxpool blocks, global pooling, dropout, linear.

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


def _hold_frozen_batchnorm(model: nn.Module) -> None:
    """Frozen BatchNorm layers keep their pretrained running statistics (eval mode)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            parameters = list(module.parameters())
            if parameters and not any(p.requires_grad for p in parameters):
                module.eval()


class ClassificationDataset(Dataset):
    """Images of a manifest (``path``, ``label_index``) as normalised CHW float tensors.

    `transform`, if given, maps a uint8 (H, W, 3) array to another (for an
    albumentations pipeline: ``lambda im: aug(image=im)["image"]``); it runs
    after the resize to `image_size`.
    """

    def __init__(self, manifest: pd.DataFrame, image_size: int, transform=None, mean=DEFAULT_MEAN, std=DEFAULT_STD):
        missing = {"path", "label_index"} - set(manifest.columns)
        if missing:
            raise ValueError(f"manifest lacks column(s) {sorted(missing)}")
        self.paths = manifest["path"].tolist()
        self.labels = manifest["label_index"].astype(int).tolist()
        self.image_size = image_size
        self.transform = transform
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = load_image(self.paths[index], self.image_size)
        if self.transform is not None:
            image = self.transform(image)
        tensor = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0
        return (tensor - self.mean) / self.std, self.labels[index]


def train_classifier(
    model: nn.Module,
    train_manifest: pd.DataFrame,
    val_manifest: pd.DataFrame | None,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    image_size: int,
    device="cpu",
    seed: int = 0,
    progress: bool = True,
    transform=None,
    transfer: TransferPolicy | None = None,
    num_workers: int = 0,
) -> pd.DataFrame:
    """Train `model` in place with Adam and cross-entropy; return the per-epoch history.

    Columns: HISTORY_COLUMNS (``lr``: the learning rate of the epoch). Train
    metrics are accumulated over the epoch's batches in training mode (as
    Keras reports them); validation metrics are computed afterwards in eval
    mode. With no `val_manifest` the val columns are NaN. `transfer` (for a
    pretrained model) freezes the backbone for its head epochs, then lowers
    the learning rate; None trains everything at `lr` throughout.
    """
    _seed_everything(seed)
    device = torch.device(device)
    model.to(device)
    mean, std = _normalisation(model)
    train_set = ClassificationDataset(train_manifest, image_size, transform, mean, std)
    train_loader = DataLoader(
        train_set,
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        # BatchNorm cannot normalise a batch of one at 1x1 spatial size (Inception at small inputs).
        drop_last=len(train_set) % batch_size == 1 and len(train_set) > batch_size,
        num_workers=num_workers,
    )
    val_loader = (
        DataLoader(
            ClassificationDataset(val_manifest, image_size, None, mean, std),
            batch_size=batch_size,
            num_workers=num_workers,
        )
        if val_manifest is not None
        else None
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    rows = []
    bar = tqdm(range(1, epochs + 1), desc="epochs", unit="epoch", file=sys.stderr, disable=not progress)
    for epoch in bar:
        epoch_lr = _apply_transfer_phase(model, optimizer, transfer, epoch, lr)
        train = _run_epoch(model, train_loader, loss_fn, device, optimizer)
        val = _run_epoch(model, val_loader, loss_fn, device) if val_loader is not None else _empty_metrics()
        rows.append({"epoch": epoch, **_prefixed("train", train), **_prefixed("val", val), "lr": epoch_lr})
        bar.set_postfix(train_loss=f"{train['loss']:.4f}", val_loss=f"{val['loss']:.4f}")
        log.info("epoch %d: %s", epoch, ", ".join(f"{k}={v:.4f}" for k, v in rows[-1].items() if k != "epoch"))
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def _apply_transfer_phase(model, optimizer, transfer: TransferPolicy | None, epoch: int, lr: float) -> float:
    """Freeze or unfreeze the backbone and set the learning rate for `epoch`; return that rate."""
    if transfer is None:
        return lr
    frozen = transfer.backbone_frozen(epoch)
    if epoch == 1 or frozen != transfer.backbone_frozen(epoch - 1):
        set_backbone_trainable(model, not frozen)
        log.info(
            "epoch %d: %s",
            epoch,
            "training the head only (backbone frozen)"
            if frozen
            else f"fine-tuning all layers at lr {transfer.lr(epoch, lr):g}",
        )
    epoch_lr = transfer.lr(epoch, lr)
    for group in optimizer.param_groups:
        group["lr"] = epoch_lr
    return epoch_lr


def select_epochs(history: pd.DataFrame, epochs=REPORT_EPOCHS) -> pd.DataFrame:
    """Rows of `history` at the listed epochs that exist (default 1, 10, 20, ..., 100)."""
    return history[history["epoch"].isin(list(epochs))].reset_index(drop=True)


def epoch_metrics(labels: np.ndarray, probabilities: np.ndarray, loss: float) -> dict[str, float]:
    """Loss, accuracy, precision, recall and AUC of one pass.

    Two classes: precision, recall and AUC of the positive class (index 1).
    More: support-weighted precision and recall, support-weighted one-vs-rest AUC.
    """
    predictions = probabilities.argmax(axis=1)
    binary = probabilities.shape[1] == 2
    average = "binary" if binary else "weighted"
    return {
        "loss": loss,
        "accuracy": accuracy_score(labels, predictions),
        "precision": precision_score(labels, predictions, average=average, pos_label=POSITIVE_CLASS, zero_division=0),
        "recall": recall_score(labels, predictions, average=average, pos_label=POSITIVE_CLASS, zero_division=0),
        "auc": _auc(labels, probabilities),
    }


def _auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    # AUC is undefined when only one class is present (e.g. a tiny val batch).
    present, support = np.unique(labels, return_counts=True)
    if len(present) < 2:
        return float("nan")
    if probabilities.shape[1] == 2:
        return roc_auc_score(labels, probabilities[:, POSITIVE_CLASS])
    # One-vs-rest per class that occurs, weighted by its support: a class
    # absent from this pass has no positives and no defined AUC.
    per_class = [roc_auc_score(labels == c, probabilities[:, c]) for c in present]
    return float(np.average(per_class, weights=support))


def _run_epoch(model, loader, loss_fn, device, optimizer=None) -> dict[str, float]:
    """One pass over `loader`; trains when an optimizer is given, else evaluates."""
    training = optimizer is not None
    model.train(training)
    if training:
        _hold_frozen_batchnorm(model)
    total_loss, labels, probabilities = 0.0, [], []
    with torch.set_grad_enabled(training):
        for images, targets in loader:
            images, targets = images.to(device), targets.to(device)
            logits = model(images)
            loss = loss_fn(logits, targets)
            if training:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            total_loss += loss.item() * len(targets)
            labels.append(targets.cpu().numpy())
            probabilities.append(torch.softmax(logits.detach().float(), dim=1).cpu().numpy())
    if not labels:
        return _empty_metrics()
    labels_all = np.concatenate(labels)
    return epoch_metrics(labels_all, np.concatenate(probabilities), total_loss / len(labels_all))


def _empty_metrics() -> dict[str, float]:
    return {m: float("nan") for m in HISTORY_METRICS}


def _prefixed(split: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{split}_{name}": value for name, value in metrics.items()}


def _normalisation(model: nn.Module) -> tuple[tuple, tuple]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("mean", DEFAULT_MEAN)), tuple(cfg.get("std", DEFAULT_STD))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
