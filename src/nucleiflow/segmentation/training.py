"""The training engine: epochs, validation, checkpoints, resume, history.

A job killed at any point and re-run continues from `last.pt` and ends with the
same weights as an uninterrupted run: the checkpoint holds model, optimiser,
scheduler, scaler and RNG states, the loader order is seeded per epoch, and
augmentations are seeded per (epoch, sample). Checkpoints are written
atomically and read with `weights_only=True`.

L2 regularisation is a penalty added to the loss on the chosen kernels (as a
Keras kernel_regularizer), not AdamW-style decay: see `models.l2_penalty`.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from nucleiflow.device import DeviceSetup
from nucleiflow.errors import NucleiflowError
from nucleiflow.io import atomic_path, write_csv
from nucleiflow.models import l2_penalty
from nucleiflow.segmentation.losses import build_loss
from nucleiflow.segmentation.metrics import metrics_from_counts

log = logging.getLogger(__name__)

TRAIN_METRICS = ("loss", "acc", "dice", "sensitivity", "iou")
SYNC_EVERY = 25  # batches between host-device synchronisations in a training epoch


class TrainingDiverged(NucleiflowError):
    """The loss became NaN or infinite."""


class CheckpointMismatch(NucleiflowError):
    """A checkpoint belongs to another model or configuration."""


@dataclass
class TrainSettings:
    epochs: int
    batch_size: int = 8
    lr: float = 1e-4
    loss: str = "dice"
    l2: float = 0.0
    lr_patience: int = 5
    lr_factor: float = 0.5
    early_stopping_patience: int = 0  # 0: off
    threshold: float = 0.5
    seed: int = 0
    identity: dict = field(default_factory=dict)  # what a checkpoint must match to be resumed


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def _rng_state() -> dict:
    state = {
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path, identity: dict | None = None, map_location="cpu") -> dict:
    """Load with weights_only=True; refuse a checkpoint made for another model or config."""
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if identity is not None and payload.get("identity") != identity:
        raise CheckpointMismatch(
            f"{path}: checkpoint was made for {payload.get('identity')}, not {identity}; "
            "delete it or restore the matching config"
        )
    return payload


class Trainer:
    def __init__(
        self,
        model: torch.nn.Module,
        settings: TrainSettings,
        setup: DeviceSetup,
        out_dir: str | Path,
        progress: bool = True,
    ):
        self.settings, self.setup, self.progress = settings, setup, progress
        self.out_dir = Path(out_dir)
        self.device = setup.device
        memory_format = torch.channels_last if setup.channels_last else torch.contiguous_format
        self.memory_format = memory_format
        self.model = model.to(self.device, memory_format=memory_format)
        self.loss_fn = build_loss(settings.loss)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=settings.lr)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=settings.lr_factor, patience=settings.lr_patience
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=setup.needs_grad_scaler)
        self.history: list[dict] = []
        self.start_epoch = 1
        self.best = {"val_dice": -math.inf, "epoch": 0}
        self.stale_epochs = 0
        self.train_seconds = 0.0

    # -- checkpoints -------------------------------------------------------
    @property
    def last_path(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.out_dir / "best.pt"

    def _weights_payload(self, epoch: int) -> dict:
        """What inference needs: weights, identity and where they came from."""
        return {
            "identity": self.settings.identity,
            "epoch": epoch,
            "model": self.model.state_dict(),
            "best": self.best,
            "history": self.history,
        }

    def _payload(self, epoch: int) -> dict:
        """Everything a resume needs (optimizer, scheduler, RNG states...)."""
        return {
            **self._weights_payload(epoch),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "stale_epochs": self.stale_epochs,
            "train_seconds": self.train_seconds,
            "rng": _rng_state(),
        }

    def resume(self) -> bool:
        """Continue from last.pt if present; returns whether it did."""
        if not self.last_path.exists():
            return False
        state = load_checkpoint(self.last_path, self.settings.identity, map_location=self.device)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.history, self.best = state["history"], state["best"]
        self.stale_epochs, self.train_seconds = state["stale_epochs"], state["train_seconds"]
        _set_rng_state(state["rng"])
        self.start_epoch = state["epoch"] + 1
        log.info("resumed from %s at epoch %d", self.last_path, self.start_epoch)
        return True

    # -- loops ---------------------------------------------------------------
    def _forward(self, images: torch.Tensor, masks: torch.Tensor):
        images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
        masks = masks.to(self.device, non_blocking=True)
        with torch.autocast(
            self.device.type, dtype=self.setup.amp_dtype or torch.float32, enabled=self.setup.amp_dtype is not None
        ):
            logits = self.model(images)
        loss = self.loss_fn(logits.float(), masks)
        return logits, masks, loss

    def train_epoch(self, loader, epoch: int) -> dict:
        self.model.train()
        meter = EpochMeter()
        bar = tqdm(
            loader,
            desc=f"epoch {epoch}/{self.settings.epochs} train",
            unit="batch",
            leave=False,
            disable=not self.progress,
        )
        totals: list[torch.Tensor] = []
        for batch_index, (images, masks, _) in enumerate(bar, start=1):
            logits, masks, loss = self._forward(images, masks)
            total = loss + l2_penalty(self.model, self.settings.l2) if self.settings.l2 else loss
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(total).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            meter.update(loss, batch_counts(logits.detach(), masks, self.settings.threshold))
            totals.append(total.detach())
            # Reading the loss waits for the GPU: do it every SYNC_EVERY batches, not every batch.
            if batch_index % SYNC_EVERY == 0:
                self._check_finite(totals, epoch, batch_index)
                bar.set_postfix(loss=f"{loss.item():.4f}")
        self._check_finite(totals, epoch, len(totals))
        return meter.result()

    def _check_finite(self, totals: list[torch.Tensor], epoch: int, last_batch: int) -> None:
        """Raise at the first non-finite loss among the unchecked batches (weights after it are not saved)."""
        first = last_batch - len(totals) + 1
        finite = torch.isfinite(torch.stack(totals)).cpu()
        totals.clear()
        if not finite.all():
            batch = first + int((~finite).nonzero()[0])
            raise TrainingDiverged(
                f"loss became non-finite at epoch {epoch}, batch {batch}; "
                f"{self.last_path} keeps the last good state (lower the learning rate?)"
            )

    @torch.no_grad()
    def evaluate(self, loader) -> dict:
        self.model.eval()
        meter = EpochMeter()
        for images, masks, _ in loader:
            logits, masks, loss = self._forward(images, masks)
            meter.update(loss, batch_counts(logits, masks, self.settings.threshold))
        return meter.result()

    def fit(self, train_loader, val_loader) -> pd.DataFrame:
        """Train to `settings.epochs` (resuming if possible); returns the history."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.resume()
        for epoch in range(self.start_epoch, self.settings.epochs + 1):
            if self._early_stopped():
                break
            started = time.perf_counter()
            # Loader order and augmentations are functions of (seed, epoch).
            train_loader.generator.manual_seed(self.settings.seed * 100_003 + epoch)
            train_loader.dataset.set_epoch(epoch)
            train = self.train_epoch(train_loader, epoch)
            val = self.evaluate(val_loader)
            self.scheduler.step(val["loss"])
            self.train_seconds += time.perf_counter() - started
            row = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]}
            row.update({f"train_{k}": v for k, v in train.items()})
            row.update({f"val_{k}": v for k, v in val.items()})
            row["seconds"] = self.train_seconds
            self.history.append(row)
            self._after_epoch(epoch, val)
            log.info(
                "epoch %d: train loss %.4f dice %.4f | val loss %.4f dice %.4f",
                epoch,
                train["loss"],
                train["dice"],
                val["loss"],
                val["dice"],
            )
        return pd.DataFrame(self.history)

    def _after_epoch(self, epoch: int, val: dict) -> None:
        improved = val["dice"] > self.best["val_dice"]
        if improved:
            self.best = {"val_dice": val["dice"], "epoch": epoch}
            self.stale_epochs = 0
        else:
            self.stale_epochs += 1
        if improved:
            save_checkpoint(self.best_path, self._weights_payload(epoch))
        # last.pt is written after best.pt so a resume never loses a best epoch.
        save_checkpoint(self.last_path, self._payload(epoch))
        write_csv(self.out_dir / "history.csv", pd.DataFrame(self.history))

    def _early_stopped(self) -> bool:
        patience = self.settings.early_stopping_patience
        if patience and self.stale_epochs >= patience:
            log.info("early stopping: validation Dice did not improve for %d epochs", patience)
            return True
        return False

    def summary(self) -> dict:
        return {
            "settings": asdict(self.settings),
            "device": str(self.device),
            "amp_dtype": str(self.setup.amp_dtype),
            "epochs_run": len(self.history),
            "best_epoch": self.best["epoch"],
            "best_val_dice": self.best["val_dice"],
            "train_seconds": self.train_seconds,
        }
