"""Segmentation training on the engine (`nucleiflow.engine`): settings, batch step, per-epoch meter.

The best checkpoint is the epoch with the highest validation Dice; the
learning rate drops on a validation-loss plateau. Augmentations are seeded
per (epoch, sample) by the dataset, so a resumed run replays them exactly.

L2 regularisation is a penalty added to the loss on the chosen kernels (as a
Keras kernel_regularizer), not AdamW-style decay: see `models.l2_penalty`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nucleiflow.device import DeviceSetup
from nucleiflow.engine import EngineSettings, StepOutput
from nucleiflow.engine import Trainer as Engine
from nucleiflow.models import l2_penalty
from nucleiflow.segmentation.losses import build_loss
from nucleiflow.segmentation.metrics import metrics_from_counts

TRAIN_METRICS = ("loss", "acc", "dice", "sensitivity", "iou")


@dataclass
class TrainSettings(EngineSettings):
    batch_size: int = 8
    loss: str = "dice"
    l2: float = 0.0
    l2_scope: str = "added_blocks"
    threshold: float = 0.5
    best_metric: str = "val_dice"
    best_mode: str = "max"


def batch_counts(logits: torch.Tensor, target: torch.Tensor, threshold: float) -> torch.Tensor:
    """Per-image (tp, fp, fn, tn) as an (N, 4) int64 tensor."""
    pred = torch.sigmoid(logits.float()) > threshold
    truth = target > 0.5
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
    """One batch of (images, masks, index): forward under autocast, loss in fp32, pixel counts for the meter."""

    def __init__(self, threshold: float):
        self.threshold = threshold

    def __call__(self, trainer: Engine, batch) -> StepOutput:
        images, masks, _ = batch
        images, masks = trainer.to_device(images, image=True), trainer.to_device(masks)
        with trainer.autocast():
            logits = trainer.model(images)
        loss = trainer.loss_fn(logits.float(), masks)
        return StepOutput(loss, (batch_counts(logits.detach(), masks, self.threshold),))


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
            loss_fn=build_loss(settings.loss),
            step=SegmentationStep(settings.threshold),
            meter=EpochMeter,
            penalty=(lambda m: l2_penalty(m, l2, scope)) if l2 else None,
            progress=progress,
            **hooks,
        )
