"""The training engine: epochs, validation, checkpoints, resume, history.

One engine for every model the package trains (segmentation networks, the
classification CNNs). What differs between them is passed in:

* `loss_fn`: the objective, ``loss_fn(outputs, targets)``;
* `step`: how one batch is unpacked, moved to the device, forwarded and
  counted: ``step(trainer, batch) -> StepOutput`` (use `Trainer.to_device`
  and `Trainer.autocast`);
* `meter`: a factory of per-epoch accumulators with ``update(loss, *record)``
  (the `StepOutput.record` of each batch) and ``result() -> dict``;
* `penalty` (optional): a term added to the loss before backward (an L2 penalty);
* `on_train_start` (optional): called as ``on_train_start(trainer, epoch)``
  after the model is put in training mode, before the epoch's first batch
  (freezing layers, setting the epoch's learning rate);
* `on_epoch_end` (optional): called as ``on_epoch_end(trainer, epoch, row)``
  once the epoch's checkpoints and history are written.

The "best" epoch is the one with the best `settings.best_metric` (a history
column such as ``val_dice``) in `settings.best_mode` (``max`` or ``min``).

A job killed at any point and re-run continues from `last.pt`. The checkpoint
holds model, optimiser, scheduler, scaler and RNG states, and the loader order
is seeded per epoch, so on CPU the resumed run ends with the same weights as
an uninterrupted one. On CUDA that holds only with deterministic algorithms
(`settings.deterministic`); otherwise cuDNN/cuBLAS kernel choices make a
resumed run statistically equivalent, not bit-identical. Checkpoints are
written atomically and read with ``weights_only=True``.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from nucleiflow.device import DeviceSetup
from nucleiflow.errors import ConfigError, NucleiflowError, choices_error
from nucleiflow.io import atomic_path, write_csv

log = logging.getLogger(__name__)

SYNC_EVERY = 25  # batches between host-device synchronisations in a training epoch
BEST_MODES = ("max", "min")
LR_SCHEDULES = ("plateau", "cosine")


class TrainingDiverged(NucleiflowError):
    """The loss became NaN or infinite."""


class CheckpointMismatch(NucleiflowError):
    """A checkpoint belongs to another model or configuration."""


@dataclass
class EngineSettings:
    epochs: int
    lr: float = 1e-4
    lr_patience: int | None = 5  # None: no learning-rate reduction on plateau
    lr_factor: float = 0.5
    # "plateau": ReduceLROnPlateau on the validation loss (lr_patience, lr_factor); "cosine": the rate follows
    # half a cosine from lr towards 0 over `epochs` (Loshchilov & Hutter 2017), whatever the validation says.
    lr_schedule: str = "plateau"
    early_stopping_patience: int = 0  # 0: off
    seed: int = 0
    best_metric: str = "val_loss"  # the history column that picks best.pt and drives early stopping
    best_mode: str = "min"
    deterministic: bool = False  # deterministic CUDA kernels: bit-identical resumes on GPUs, slower
    identity: dict = field(default_factory=dict)  # what a checkpoint must match to be resumed

    def __post_init__(self):
        if self.best_mode not in BEST_MODES:
            raise ConfigError(f"best_mode: {self.best_mode!r} is not valid; choose one of: {', '.join(BEST_MODES)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise choices_error("training.lr_schedule", self.lr_schedule, LR_SCHEDULES)


class StepOutput(NamedTuple):
    """What a batch step returns: the loss to minimise and what the meter records for the batch."""

    loss: torch.Tensor
    record: tuple = ()


class Meter(Protocol):
    def update(self, loss: torch.Tensor, *record: Any) -> None: ...

    def result(self) -> dict: ...


BatchStep = Callable[["Trainer", Any], StepOutput]


def cosine_factor(done: int, epochs: int) -> float:
    """The cosine schedule's rate factor after `done` of `epochs` epochs: 1 at the start, 0 after the last."""
    return 0.5 * (1.0 + math.cos(math.pi * min(done, epochs) / epochs))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device) from one number."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def use_deterministic_algorithms() -> None:
    """Deterministic CUDA kernels where they exist; a warning (not an error) where they do not."""
    # cuBLAS needs a fixed workspace to be deterministic; it must be set before the first cuBLAS call.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def _rng_state(device: torch.device) -> dict:
    python = random.getstate()
    numpy_state = np.random.get_state()
    state = {
        "python": list(python[1]),
        "python_version": python[0],
        "python_gauss": python[2],
        "numpy": torch.from_numpy(numpy_state[1].astype(np.int64)),
        "numpy_pos": int(numpy_state[2]),
        "torch": torch.get_rng_state(),
    }
    # Only the training device's generator: a resume may see fewer (or other) GPUs.
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    if "numpy" in state:
        np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"]))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if isinstance(cuda, list):  # older checkpoints held every visible GPU's state
        index = device.index or 0
        cuda = cuda[index] if index < len(cuda) else None
    if cuda is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda.cpu(), device)


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
    """Adam, a ReduceLROnPlateau or cosine schedule (or none), early stopping, AMP, atomic checkpoints."""

    def __init__(
        self,
        model: torch.nn.Module,
        settings: EngineSettings,
        setup: DeviceSetup,
        out_dir: str | Path,
        *,
        loss_fn: Callable[..., torch.Tensor],
        step: BatchStep,
        meter: Callable[[], Meter],
        penalty: Callable[[torch.nn.Module], torch.Tensor] | None = None,
        on_train_start: Callable[[Trainer, int], None] | None = None,
        on_epoch_end: Callable[[Trainer, int, dict], None] | None = None,
        progress: bool = True,
    ):
        self.settings, self.setup, self.progress = settings, setup, progress
        self.loss_fn, self.step, self.meter, self.penalty = loss_fn, step, meter, penalty
        self.on_train_start, self.on_epoch_end = on_train_start, on_epoch_end
        self.out_dir = Path(out_dir)
        self.device = setup.device
        self.memory_format = torch.channels_last if setup.channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=settings.lr)
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None
        if settings.lr_schedule == "cosine":
            # Closed form of the current `settings.epochs`, so a run resumed with more epochs re-plans the rest.
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda done: cosine_factor(done, self.settings.epochs)
            )
        elif settings.lr_patience is not None:
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="min", factor=settings.lr_factor, patience=settings.lr_patience
            )
        else:
            self.scheduler = None
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=setup.needs_grad_scaler)
        self.history: list[dict] = []
        self.start_epoch = 1
        self.best = {settings.best_metric: -math.inf if settings.best_mode == "max" else math.inf, "epoch": 0}
        self.stale_epochs = 0
        self.train_seconds = 0.0

    # -- helpers for batch steps -----------------------------------------------
    def to_device(self, tensor: torch.Tensor, image: bool = False) -> torch.Tensor:
        """Copy to the training device without waiting (pinned memory); images in the model's memory format."""
        if image:
            return tensor.to(self.device, non_blocking=True, memory_format=self.memory_format)
        return tensor.to(self.device, non_blocking=True)

    def autocast(self):
        """Mixed precision as the device setup chose it (a no-op in full precision)."""
        dtype = self.setup.amp_dtype
        return torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    # -- checkpoints -------------------------------------------------------
    @property
    def last_path(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.out_dir / "best.pt"

    @property
    def history_path(self) -> Path:
        return self.out_dir / "history.csv"

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
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "scaler": self.scaler.state_dict(),
            "stale_epochs": self.stale_epochs,
            "train_seconds": self.train_seconds,
            "rng": _rng_state(self.device),
        }

    def resume(self) -> bool:
        """Continue from last.pt if present; returns whether it did."""
        if not self.last_path.exists():
            return False
        # On the CPU: RNG states must stay CPU tensors, and load_state_dict puts everything else in place.
        state = load_checkpoint(self.last_path, self.settings.identity, map_location="cpu")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"]:
            self.scheduler.load_state_dict(state["scheduler"])
            if isinstance(self.scheduler, torch.optim.lr_scheduler.LambdaLR):  # the rate of the (new) plan
                for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
                    group["lr"] = base * cosine_factor(self.scheduler.last_epoch, self.settings.epochs)
        # A disabled scaler (CPU, bf16) saves an empty state, which an enabled one refuses to load.
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.history, self.best = state["history"], state["best"]
        self.stale_epochs, self.train_seconds = state["stale_epochs"], state["train_seconds"]
        _set_rng_state(state["rng"], self.device)
        self.start_epoch = state["epoch"] + 1
        # Snakemake deletes a job's log before it runs again: the killed run's epochs are told again from the
        # checkpoint's history, so the resumed job's log still holds every epoch.
        for row in self.history:
            self._log_epoch(row, "before the resume")
        log.info("resumed from %s at epoch %d (best epoch %d)", self.last_path, self.start_epoch, self.best["epoch"])
        return True

    # -- loops ---------------------------------------------------------------
    def train_epoch(self, loader: Iterable, epoch: int) -> dict:
        self.model.train()
        if self.on_train_start is not None:
            self.on_train_start(self, epoch)
        meter = self.meter()
        bar = tqdm(
            loader,
            desc=f"epoch {epoch}/{self.settings.epochs} train",
            unit="batch",
            leave=False,
            disable=not self.progress,
        )
        unchecked: list[torch.Tensor] = []  # objectives since the last finite check, on the device
        batch_index = 0
        for batch_index, batch in enumerate(bar, start=1):
            loss, record = self.step(self, batch)
            total = loss + self.penalty(self.model) if self.penalty is not None else loss
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(total).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            meter.update(loss.detach(), *record)
            unchecked.append(total.detach())
            # Reading the loss waits for the GPU: do it every SYNC_EVERY batches, not every batch.
            if batch_index % SYNC_EVERY == 0:
                self._check_finite(unchecked, epoch, batch_index)
                bar.set_postfix(loss=f"{loss.item():.4f}")
        self._check_finite(unchecked, epoch, batch_index)
        return meter.result()

    def _check_finite(self, unchecked: list[torch.Tensor], epoch: int, last_batch: int) -> None:
        """Raise at the first non-finite loss among the unchecked batches (weights after it are not saved).

        `unchecked` holds the objectives of batches ``last_batch - len(unchecked) + 1 .. last_batch``.
        """
        if not unchecked:
            return
        first = last_batch - len(unchecked) + 1
        finite = torch.isfinite(torch.stack(unchecked)).cpu()
        unchecked.clear()
        if not finite.all():
            batch = first + int((~finite).nonzero()[0])
            raise TrainingDiverged(
                f"loss became non-finite at epoch {epoch}, batch {batch}; "
                f"{self.last_path} keeps the last good state (lower the learning rate?)"
            )

    @torch.no_grad()
    def evaluate(self, loader: Iterable) -> dict:
        self.model.eval()
        meter = self.meter()
        for batch in loader:
            loss, record = self.step(self, batch)
            meter.update(loss, *record)
        return meter.result()

    def fit(self, train_loader, val_loader=None) -> pd.DataFrame:
        """Train to `settings.epochs` (resuming if possible); returns the history.

        `train_loader` must have a `generator` (its order is reseeded each epoch);
        a dataset with `set_epoch` is told the epoch (seeded augmentations).
        Without `val_loader` the history has no val_* columns.
        """
        if self.settings.deterministic:
            use_deterministic_algorithms()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.resume()
        for epoch in range(self.start_epoch, self.settings.epochs + 1):
            if self._early_stopped():
                break
            started = time.perf_counter()
            # Loader order and augmentations are functions of (seed, epoch).
            train_loader.generator.manual_seed(self.settings.seed * 100_003 + epoch)
            if hasattr(train_loader.dataset, "set_epoch"):
                train_loader.dataset.set_epoch(epoch)
            train = self.train_epoch(train_loader, epoch)
            val = self.evaluate(val_loader) if val_loader is not None else {}
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                if "loss" in val:
                    self.scheduler.step(val["loss"])
            elif self.scheduler is not None:
                self.scheduler.step()
            self.train_seconds += time.perf_counter() - started
            row = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]}
            row.update({f"train_{k}": v for k, v in train.items()})
            row.update({f"val_{k}": v for k, v in val.items()})
            row["seconds"] = self.train_seconds
            self.history.append(row)
            self._after_epoch(epoch, row)
            self._log_epoch(row, f"best epoch {self.best['epoch']}")
            if self.on_epoch_end is not None:
                self.on_epoch_end(self, epoch, row)
        return pd.DataFrame(self.history)

    def _log_epoch(self, row: dict, note: str) -> None:
        log.info(
            "epoch %d/%d: train loss %.4f | val loss %.4f | %s %.4f, %s",
            row["epoch"],
            self.settings.epochs,
            row.get("train_loss", math.nan),
            row.get("val_loss", math.nan),
            self.settings.best_metric,
            row.get(self.settings.best_metric, math.nan),
            note,
        )

    def _improved(self, value: float | None) -> bool:
        best = self.best[self.settings.best_metric]
        if value is None or math.isnan(value):
            return False
        return value > best if self.settings.best_mode == "max" else value < best

    def _after_epoch(self, epoch: int, row: dict) -> None:
        value = row.get(self.settings.best_metric)
        improved = self._improved(value)
        if improved and value is not None:
            self.best = {self.settings.best_metric: value, "epoch": epoch}
            self.stale_epochs = 0
            save_checkpoint(self.best_path, self._weights_payload(epoch))
        else:
            self.stale_epochs += 1
        # last.pt is written after best.pt so a resume never loses a best epoch.
        save_checkpoint(self.last_path, self._payload(epoch))
        write_csv(self.history_path, pd.DataFrame(self.history))

    def _early_stopped(self) -> bool:
        patience = self.settings.early_stopping_patience
        if patience and self.stale_epochs >= patience:
            log.info("early stopping: %s did not improve for %d epochs", self.settings.best_metric, patience)
            return True
        return False

    def summary(self) -> dict:
        metric = self.settings.best_metric
        return {
            "settings": asdict(self.settings),
            "device": str(self.device),
            "amp_dtype": str(self.setup.amp_dtype),
            "epochs_run": len(self.history),
            "best_epoch": self.best["epoch"],
            f"best_{metric}": self.best[metric],
            "train_seconds": self.train_seconds,
        }
