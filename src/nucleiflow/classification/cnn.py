"""CNN classifiers for nucleus vs micronucleus: models, dataset, training loop.

`train_classifier` returns the per-epoch history the paper tabulates (loss,
accuracy, precision, recall and AUC on train and validation); checkpoints and
files are the calling stage's business.
"""

from __future__ import annotations

import logging
import random
import sys
from typing import Callable

import numpy as np
import pandas as pd
import timm
import torch
from sklearn.metrics import accuracy_score, precision_score, recall_score, roc_auc_score
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..errors import ConfigError, choices_error
from .data import load_image

log = logging.getLogger(__name__)

HISTORY_METRICS = ("loss", "accuracy", "precision", "recall", "auc")
HISTORY_COLUMNS = ["epoch"] + [f"{split}_{m}" for split in ("train", "val") for m in HISTORY_METRICS]
REPORT_EPOCHS = (1,) + tuple(range(10, 101, 10))  # the paper's per-epoch tables
POSITIVE_CLASS = 1  # micronucleus: precision, recall and AUC are for this class
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
    return timm.create_model("inception_resnet_v2", pretrained=pretrained, num_classes=num_classes)


CNN_MODELS: dict[str, Callable[[int, bool], nn.Module]] = {
    "small_cnn": _small_cnn,
    "inception_resnet_v2": _inception_resnet_v2,
}
# Input side the model is meant for, and the smallest that runs: the
# Inception stem's unpadded strided convolutions fail below 75 px.
INPUT_SIZES: dict[str, int] = {"small_cnn": 64, "inception_resnet_v2": 299}
MIN_INPUT_SIZES: dict[str, int] = {"small_cnn": 16, "inception_resnet_v2": 75}


def build_classifier(name: str, num_classes: int = 2, pretrained: bool = False, seed: int | None = None) -> nn.Module:
    """A CNN from CNN_MODELS with a `num_classes`-way head (weights downloaded only if `pretrained`).

    `seed`, if given, seeds torch first so the random initial weights (the
    head, or the whole net when not pretrained) are reproducible.
    """
    if name not in CNN_MODELS:
        raise choices_error("cnn model", name, CNN_MODELS)
    if seed is not None:
        torch.manual_seed(seed)
    return CNN_MODELS[name](num_classes, pretrained)


def check_input_size(name: str, image_size: int) -> None:
    """ConfigError if `image_size` is below what model `name` can process."""
    minimum = MIN_INPUT_SIZES.get(name, 1)
    if image_size < minimum:
        raise ConfigError(f"image_size: {image_size} is too small for {name}; use at least {minimum}")


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
) -> pd.DataFrame:
    """Train `model` in place with Adam and cross-entropy; return the per-epoch history.

    Columns: HISTORY_COLUMNS. Train metrics are accumulated over the epoch's
    batches in training mode (as Keras reports them); validation metrics are
    computed afterwards in eval mode. With no `val_manifest` the val columns
    are NaN. Precision, recall and AUC refer to the micronucleus class.
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
    )
    val_loader = (
        DataLoader(ClassificationDataset(val_manifest, image_size, None, mean, std), batch_size=batch_size)
        if val_manifest is not None
        else None
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    rows = []
    bar = tqdm(range(1, epochs + 1), desc="epochs", unit="epoch", file=sys.stderr, disable=not progress)
    for epoch in bar:
        train = _run_epoch(model, train_loader, loss_fn, device, optimizer)
        val = _run_epoch(model, val_loader, loss_fn, device) if val_loader is not None else _empty_metrics()
        rows.append({"epoch": epoch, **_prefixed("train", train), **_prefixed("val", val)})
        bar.set_postfix(train_loss=f"{train['loss']:.4f}", val_loss=f"{val['loss']:.4f}")
        log.info("epoch %d: %s", epoch, ", ".join(f"{k}={v:.4f}" for k, v in rows[-1].items() if k != "epoch"))
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def select_epochs(history: pd.DataFrame, epochs=REPORT_EPOCHS) -> pd.DataFrame:
    """Rows of `history` at the listed epochs that exist (default 1, 10, 20, ..., 100)."""
    return history[history["epoch"].isin(list(epochs))].reset_index(drop=True)


def epoch_metrics(labels: np.ndarray, probabilities: np.ndarray, loss: float) -> dict[str, float]:
    """Loss, accuracy, precision, recall and AUC of one pass (binary: micronucleus positive)."""
    predictions = probabilities.argmax(axis=1)
    binary = probabilities.shape[1] == 2
    average = "binary" if binary else "macro"
    return {
        "loss": loss,
        "accuracy": accuracy_score(labels, predictions),
        "precision": precision_score(labels, predictions, average=average, pos_label=POSITIVE_CLASS, zero_division=0),
        "recall": recall_score(labels, predictions, average=average, pos_label=POSITIVE_CLASS, zero_division=0),
        "auc": _auc(labels, probabilities),
    }


def _auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    # AUC is undefined when only one class is present (e.g. a tiny val batch).
    n_classes = probabilities.shape[1]
    if len(np.unique(labels)) < 2:
        return float("nan")
    if n_classes == 2:
        return roc_auc_score(labels, probabilities[:, POSITIVE_CLASS])
    if len(np.unique(labels)) < n_classes:
        return float("nan")
    return roc_auc_score(labels, probabilities, multi_class="ovr")


def _run_epoch(model, loader, loss_fn, device, optimizer=None) -> dict[str, float]:
    """One pass over `loader`; trains when an optimizer is given, else evaluates."""
    training = optimizer is not None
    model.train(training)
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
