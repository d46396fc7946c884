"""Training the classification CNNs on the engine (`nucleiflow.engine`): batch step, epoch metrics, history.

`train_classifier` trains a model and returns the per-epoch history the paper
tabulates (loss, accuracy, precision, recall and AUC on train and validation,
and the epoch's learning rate); `run_cnn` is one workflow job: it decides
pretrained weights, transfer policy and device, trains with checkpoints in a
folder beside the history (so a killed job resumes), and writes the history.

`precision` and `recall` are the classification study's (Tables III-VI):
what Keras' ``Precision()`` / ``Recall()`` give on a one-hot target and the
softmax output, thresholded at 0.5 and micro-averaged over the class columns.
With two classes both equal the accuracy (one column exceeds 0.5 per image),
as in every training and validation cell of the paper's tables. The per-class
figures keep their own names: `class_precision` and `class_recall` are those
of the positive class (index 1: micronucleus, small nucleus) with two classes,
support-weighted averages with more. AUC is the positive class's ROC AUC with
two classes, the support-weighted one-vs-rest AUC with more (Keras' ``AUC()``
on a one-hot output flattens the columns and approximates with 200
thresholds: a small difference the comparison tables declare). Train metrics are accumulated over the
epoch's batches in training mode (as Keras reports them); validation metrics
are computed afterwards in eval mode.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, precision_score, recall_score, roc_auc_score
from torch import nn
from torch.utils.data import DataLoader

from nucleiflow.classification.dataset import DEFAULT_MEAN, DEFAULT_STD, load_image
from nucleiflow.classification.models import (
    TransferPolicy,
    build_classifier,
    check_input_size,
    has_pretrained_weights,
    hold_frozen_batchnorm,
    normalisation,
    set_backbone_trainable,
)
from nucleiflow.device import IN_PROCESS, DeviceSetup, loader_kwargs, setup_device
from nucleiflow.engine import EngineSettings, StepOutput, Trainer, seed_everything
from nucleiflow.io import write_csv

log = logging.getLogger(__name__)

HISTORY_METRICS = ("loss", "accuracy", "precision", "recall", "auc", "class_precision", "class_recall")
HISTORY_COLUMNS = ["epoch"] + [f"{split}_{m}" for split in ("train", "val") for m in HISTORY_METRICS] + ["lr"]
REPORT_EPOCHS = (1,) + tuple(range(10, 101, 10))  # the paper's per-epoch tables
POSITIVE_CLASS = 1  # two classes: micronucleus (or small nucleus); class_precision, class_recall and AUC are its
KERAS_THRESHOLD = 0.5  # the default threshold of Keras' Precision() and Recall()


class ClassificationDataset:
    """Images of a manifest (``path``, ``label_index``) as normalised CHW float tensors, with their labels.

    Every image is decoded and resized to `image_size` once, here, into one
    uint8 array (N, size, size, 3): epochs only normalise it, and loader
    workers share it. `transform`, if given, maps a uint8 (H, W, 3) array to
    another (for an albumentations pipeline: ``lambda im: aug(image=im)["image"]``);
    it runs on every access, after the resize.
    """

    def __init__(self, manifest: pd.DataFrame, image_size: int, transform=None, mean=DEFAULT_MEAN, std=DEFAULT_STD):
        missing = {"path", "label_index"} - set(manifest.columns)
        if missing:
            raise ValueError(f"manifest lacks column(s) {sorted(missing)}; it needs path and label_index")
        paths = manifest["path"].tolist()
        self.labels = manifest["label_index"].astype(int).tolist()
        self.images = np.empty((len(paths), image_size, image_size, 3), dtype=np.uint8)
        for i, path in enumerate(paths):
            self.images[i] = load_image(path, image_size)
        self.image_size = image_size
        self.transform = transform
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.images[index]
        if self.transform is not None:
            image = np.asarray(self.transform(image), dtype=np.uint8)
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
        return (tensor - self.mean) / self.std, self.labels[index]


# ---------------------------------------------------------------- metrics


def epoch_metrics(labels: np.ndarray, probabilities: np.ndarray, loss: float) -> dict[str, float]:
    """Loss, accuracy, the paper's precision and recall, AUC, and the per-class precision and recall of one pass.

    `precision` / `recall`: Keras' on the one-hot target (`keras_precision_recall`).
    `class_precision` / `class_recall`: two classes, those of the positive class (index 1); more,
    support-weighted. AUC: two classes, the positive class's; more, support-weighted one-vs-rest.
    """
    predictions = probabilities.argmax(axis=1)
    binary = probabilities.shape[1] == 2
    average = "binary" if binary else "weighted"
    precision, recall = keras_precision_recall(labels, probabilities)
    return {
        "loss": loss,
        "accuracy": accuracy_score(labels, predictions),
        "precision": precision,
        "recall": recall,
        "auc": _auc(labels, probabilities),
        "class_precision": precision_score(
            labels, predictions, average=average, pos_label=POSITIVE_CLASS, zero_division=0
        ),
        "class_recall": recall_score(labels, predictions, average=average, pos_label=POSITIVE_CLASS, zero_division=0),
    }


def keras_precision_recall(labels: np.ndarray, probabilities: np.ndarray) -> tuple[float, float]:
    """Precision and recall as Keras' ``Precision()`` / ``Recall()`` give them on a one-hot target.

    Every (image, class) cell is one binary decision: predicted where its probability exceeds 0.5, true
    where the one-hot target is 1; true and false positives and false negatives are summed over all
    cells (micro average). A pass without a predicted (or without a true) cell gives 0, as Keras does.
    """
    onehot = np.eye(probabilities.shape[1], dtype=bool)[np.asarray(labels, dtype=int)]
    predicted = probabilities > KERAS_THRESHOLD
    tp = int((predicted & onehot).sum())
    fp = int((predicted & ~onehot).sum())
    fn = int((~predicted & onehot).sum())
    return (tp / (tp + fp) if tp + fp else 0.0), (tp / (tp + fn) if tp + fn else 0.0)


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


def empty_metrics() -> dict[str, float]:
    return {m: float("nan") for m in HISTORY_METRICS}


class CnnMeter:
    """Loss, labels and class probabilities of one epoch, kept on the device until `result` (no per-batch sync)."""

    def __init__(self):
        self.losses: list[torch.Tensor] = []  # per-batch loss x batch size
        self.labels: list[torch.Tensor] = []
        self.probabilities: list[torch.Tensor] = []

    def update(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.losses.append(loss.detach().float() * len(labels))
        self.labels.append(labels)
        self.probabilities.append(torch.softmax(logits.detach().float(), dim=1))

    def result(self) -> dict[str, float]:
        if not self.labels:
            return empty_metrics()
        labels = torch.cat(self.labels).cpu().numpy()
        probabilities = torch.cat(self.probabilities).cpu().numpy()
        return epoch_metrics(labels, probabilities, float(torch.stack(self.losses).sum()) / len(labels))


def cnn_step(trainer: Trainer, batch) -> StepOutput:
    """One batch of (images, labels): forward under autocast, cross-entropy in fp32, logits for the meter."""
    images, labels = batch
    images, labels = trainer.to_device(images, image=True), trainer.to_device(labels)
    with trainer.autocast():
        logits = trainer.model(images)
    loss = trainer.loss_fn(logits.float(), labels)
    return StepOutput(loss, (logits.detach(), labels))


class TransferPhase:
    """Engine hook: each training epoch freezes or unfreezes the backbone and sets the policy's learning rate.

    Applied every epoch (not only when the phase changes), so a resumed run
    starts in the phase of its first epoch: requires_grad is not in a checkpoint.
    """

    def __init__(self, policy: TransferPolicy, base_lr: float):
        self.policy, self.base_lr = policy, base_lr

    def __call__(self, trainer: Trainer, epoch: int) -> None:
        frozen = self.policy.backbone_frozen(epoch)
        set_backbone_trainable(trainer.model, not frozen)
        lr = self.policy.lr(epoch, self.base_lr)
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr
        hold_frozen_batchnorm(trainer.model)
        if epoch == trainer.start_epoch or frozen != self.policy.backbone_frozen(epoch - 1):
            log.info(
                "epoch %d: %s",
                epoch,
                "training the head only (backbone frozen)" if frozen else f"fine-tuning all layers at lr {lr:g}",
            )


# ---------------------------------------------------------------- training


def select_epochs(history: pd.DataFrame, epochs=REPORT_EPOCHS) -> pd.DataFrame:
    """Rows of `history` at the listed epochs that exist (default 1, 10, 20, ..., 100)."""
    return history[history["epoch"].isin(list(epochs))].reset_index(drop=True)


def _manifest_digest(manifest: pd.DataFrame | None) -> str | None:
    """A checkpoint's data fingerprint: which images, with which labels, in which order."""
    if manifest is None:
        return None
    key = "image_id" if "image_id" in manifest.columns else "path"
    text = "\n".join(f"{name}\t{label}" for name, label in zip(manifest[key], manifest["label_index"], strict=True))
    return hashlib.sha256(text.encode()).hexdigest()


def train_classifier(
    model: nn.Module,
    train_manifest: pd.DataFrame,
    val_manifest: pd.DataFrame | None,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    image_size: int,
    setup: DeviceSetup = IN_PROCESS,
    seed: int = 0,
    progress: bool = True,
    transform=None,
    transfer: TransferPolicy | None = None,
    checkpoint_dir: str | Path | None = None,
    identity: dict | None = None,
) -> pd.DataFrame:
    """Train `model` in place with Adam and cross-entropy; return the per-epoch history (HISTORY_COLUMNS).

    With `checkpoint_dir`, `last.pt` is written there after every epoch and a
    later call with the same model, data and settings resumes from it (raising
    `epochs` continues training); without it, checkpoints go to a temporary
    folder. `identity` adds what else a checkpoint must match (model name,
    classes). With no `val_manifest` the val columns are NaN. `transfer` (for
    a pretrained model) freezes the backbone for its head epochs, then lowers
    the learning rate; None trains everything at `lr` throughout.
    """
    seed_everything(seed)
    mean, std = normalisation(model)
    train_set = ClassificationDataset(train_manifest, image_size, transform, mean, std)
    loader_options = loader_kwargs(setup)
    train_loader = DataLoader(
        train_set,
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        # BatchNorm cannot normalise a batch of one at 1x1 spatial size (Inception at small inputs).
        drop_last=len(train_set) % batch_size == 1 and len(train_set) > batch_size,
        **loader_options,
    )
    val_loader = (
        DataLoader(
            ClassificationDataset(val_manifest, image_size, None, mean, std), batch_size=batch_size, **loader_options
        )
        if val_manifest is not None
        else None
    )
    settings = EngineSettings(
        epochs=epochs,
        lr=lr,
        # Our choice: a constant rate (or the transfer policy's two); the paper states no learning rate or schedule.
        lr_patience=None,
        seed=seed,
        identity={
            **(identity or {}),
            "batch_size": batch_size,
            "lr": lr,
            "image_size": image_size,
            "seed": seed,
            "transfer": asdict(transfer) if transfer is not None else None,
            "train": _manifest_digest(train_manifest),
            "val": _manifest_digest(val_manifest),
        },
    )
    hook = TransferPhase(transfer, lr) if transfer is not None else None
    with tempfile.TemporaryDirectory(prefix="cnn-checkpoints-") as scratch:
        trainer = Trainer(
            model,
            settings,
            setup,
            checkpoint_dir if checkpoint_dir is not None else scratch,
            loss_fn=nn.CrossEntropyLoss(),
            step=cnn_step,
            meter=CnnMeter,
            on_train_start=hook,
            progress=progress,
        )
        history = trainer.fit(train_loader, val_loader)
    return history.reindex(columns=HISTORY_COLUMNS)


def cnn_checkpoint_dir(history_path: str | Path) -> Path:
    """Checkpoints of the run whose history is `history_path`: ``<folder>/checkpoints/<model>_<variant>/``."""
    history_path = Path(history_path)
    return history_path.parent / "checkpoints" / history_path.stem.removesuffix("_history")


def run_cnn(
    name: str,
    cnn: dict,
    class_names,
    train: pd.DataFrame,
    test: pd.DataFrame,
    history_path: str | Path,
    *,
    seed: int,
    threads: int = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """One CNN run of the study: train model `name` as the experiment's `cnn` config says; write its history.

    `pretrained` applies to the models that have ImageNet weights (then with
    the config's `transfer` policy); the small CNN always starts from scratch.
    A killed run resumes from `cnn_checkpoint_dir(history_path)`.
    """
    check_input_size(name, cnn["image_size"])
    pretrained = bool(cnn.get("pretrained")) and has_pretrained_weights(name)
    transfer = TransferPolicy.from_config(cnn.get("transfer")) if pretrained else None
    setup = setup_device("auto", threads)
    model = build_classifier(name, num_classes=len(class_names), pretrained=pretrained, seed=seed)
    log.info(
        "%s: %d classes, %s, transfer %s; %d train, %d test images",
        name,
        len(class_names),
        "ImageNet weights" if pretrained else "random initialisation",
        transfer,
        len(train),
        len(test),
    )
    checkpoints = cnn_checkpoint_dir(history_path)
    history = train_classifier(
        model,
        train,
        test,
        epochs=cnn["epochs"],
        batch_size=cnn["batch_size"],
        lr=cnn["lr"],
        image_size=cnn["image_size"],
        setup=setup,
        seed=seed,
        progress=progress,
        transfer=transfer,
        checkpoint_dir=checkpoints,
        identity={"model": name, "classes": list(class_names), "pretrained": pretrained},
    )
    # Nothing reads the CNNs' best weights; last.pt stays so that raising `epochs` continues training.
    (checkpoints / "best.pt").unlink(missing_ok=True)
    write_csv(history_path, history)
    return history
