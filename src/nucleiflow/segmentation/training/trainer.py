"""Segmentation training on the engine (`nucleiflow.engine`): settings, batch step, per-epoch meter.

The best checkpoint is the epoch with the highest validation Dice; the
learning rate drops on a validation-loss plateau. Augmentations are seeded
per (epoch, sample) by the dataset, so a resumed run replays them exactly.

L2 regularisation is a penalty added to the loss on the chosen kernels (as a
Keras kernel_regularizer), not AdamW-style decay: see `models.l2_penalty`.

The loss follows the training target (`losses.build_target_loss`); Dice, IoU,
accuracy and sensitivity always count nucleus pixels (`heads.foreground` of
the prediction vs `heads.foreground_truth`), so they, and the best checkpoint,
compare across targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nucleiflow.config import ModelSpec
from nucleiflow.device import DeviceSetup
from nucleiflow.engine import EngineSettings, StepOutput
from nucleiflow.engine import Trainer as Engine
from nucleiflow.models import build_model, l2_penalty
from nucleiflow.segmentation.evaluation.metrics import metrics_from_counts
from nucleiflow.segmentation.training import heads
from nucleiflow.segmentation.training.heads import BINARY, OutputLayout, layout_of
from nucleiflow.segmentation.training.losses import build_target_loss

TRAIN_METRICS = ("loss", "acc", "dice", "sensitivity", "iou")
# Settings that may change without invalidating a checkpoint.
RESUMABLE_CHANGES = ("epochs", "early_stopping_patience", "device", "amp", "keep_last_checkpoint")


@dataclass
class TrainSettings(EngineSettings):
    batch_size: int = 8
    loss: str = "dice"
    l2: float = 0.0
    l2_scope: str = "added_blocks"
    threshold: float = 0.5
    best_metric: str = "val_dice"
    best_mode: str = "max"
    layout: OutputLayout = BINARY  # the training target and type head: the loss and what is counted
    loss_weights: dict[str, float] | None = None  # per loss term (losses.term_weights); None: HoVer-Net's


def batch_counts(
    logits: torch.Tensor, target: torch.Tensor, threshold: float, layout: OutputLayout = BINARY
) -> torch.Tensor:
    """Per-image nucleus-pixel (tp, fp, fn, tn) as an (N, 4) int64 tensor, for every target of `layout`."""
    if target.ndim == 3:  # a channel-less binary mask
        target = target.unsqueeze(1)
    pred = heads.foreground(heads.probabilities(logits, layout), layout) > threshold
    truth = heads.foreground_truth(target, layout)
    dims = tuple(range(1, pred.ndim))
    tp = (pred & truth).sum(dims)
    fp = (pred & ~truth).sum(dims)
    fn = (~pred & truth).sum(dims)
    tn = (~pred & ~truth).sum(dims)
    return torch.stack([tp, fp, fn, tn], 1)


class EpochMeter:
    """Accumulates loss and per-image metrics over one epoch (mean over images).

    Values stay on the device until `result`, so updating never makes the CPU
    wait for the GPU.
    """

    def __init__(self):
        self.losses: list[torch.Tensor] = []  # per-batch loss x batch size
        self.counts: list[torch.Tensor] = []

    def update(self, loss: torch.Tensor, counts: torch.Tensor) -> None:
        self.losses.append(loss.detach().float() * len(counts))
        self.counts.append(counts)

    def result(self) -> dict:
        counts = torch.cat(self.counts).cpu().numpy()
        rows = [metrics_from_counts(*map(int, c)) for c in counts]
        out = {"loss": float(torch.stack(self.losses).sum()) / max(len(counts), 1)}
        for name in TRAIN_METRICS[1:]:
            out[name] = float(np.mean([r[name] for r in rows]))
        return out


class SegmentationStep:
    """One batch of (images, targets, index): forward under autocast, loss in fp32, pixel counts for the meter."""

    def __init__(self, threshold: float, layout: OutputLayout = BINARY):
        self.threshold, self.layout = threshold, layout

    def __call__(self, trainer: Engine, batch) -> StepOutput:
        images, targets, _ = batch
        images, targets = trainer.to_device(images, image=True), trainer.to_device(targets)
        with trainer.autocast():
            logits = trainer.model(images)
        loss = trainer.loss_fn(logits.float(), targets)
        return StepOutput(loss, (batch_counts(logits.detach(), targets, self.threshold, self.layout),))


class SegmentationTrainer(Engine):
    """The engine with the segmentation loss, batch step, meter and L2 penalty of `settings`."""

    def __init__(
        self,
        model: torch.nn.Module,
        settings: TrainSettings,
        setup: DeviceSetup,
        out_dir: str | Path,
        progress: bool = True,
        **hooks,
    ):
        l2, scope = settings.l2, settings.l2_scope
        super().__init__(
            model,
            settings,
            setup,
            out_dir,
            loss_fn=build_target_loss(settings.layout, settings.loss, settings.loss_weights),
            step=SegmentationStep(settings.threshold, settings.layout),
            meter=EpochMeter,
            penalty=(lambda m: l2_penalty(m, l2, scope)) if l2 else None,
            progress=progress,
            **hooks,
        )


def checkpoint_identity(spec: ModelSpec | dict) -> dict:
    """The spec as a plain dict without RESUMABLE_CHANGES: what a checkpoint stores and must match."""
    fields = ModelSpec.from_dict(spec).to_dict()
    training = {k: v for k, v in fields.pop("training").items() if k not in RESUMABLE_CHANGES}
    return {**fields, "training": training}


def build_from_spec(spec: ModelSpec | dict, encoder_weights: str | None = None) -> torch.nn.Module:
    """The untrained network of a spec: its architecture, encoder, regularization and output channels."""
    spec = ModelSpec.from_dict(spec)
    reg = spec.regularization
    extra = {"decoder_dropout": reg["decoder_dropout"]} if _any_rate(reg.get("decoder_dropout")) else {}
    return build_model(
        spec.arch,
        spec.encoder,
        classes=layout_of(spec.training).channels,
        dropout=reg["dropout"],
        extra_blocks=reg["extra_blocks"],
        encoder_weights=encoder_weights,
        **extra,
    )


def _any_rate(rate) -> bool:
    """Whether a decoder_dropout setting (a rate or [rate, deeper rate]) drops anything."""
    return any(rate) if isinstance(rate, (list, tuple)) else bool(rate)
