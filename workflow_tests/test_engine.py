"""The training engine: kill-and-resume equals an uninterrupted run, NaN stops, mismatched checkpoints refused,
best checkpoint, early stopping and learning-rate plateaus, and resumes across devices and precisions."""

import json
import math
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from nucleiflow import engine
from nucleiflow.device import IN_PROCESS, DeviceSetup, setup_device
from nucleiflow.engine import CheckpointMismatch, TrainingDiverged, load_checkpoint, seed_everything
from nucleiflow.errors import ConfigError
from nucleiflow.io import write_csv
from nucleiflow.models import build_model
from nucleiflow.segmentation.run import train_from_spec
from nucleiflow.segmentation.training.augment import build_pipeline
from nucleiflow.segmentation.training.data import SegmentationDataset, make_loader
from nucleiflow.segmentation.training.trainer import SegmentationTrainer, TrainSettings
from nucleiflow.splits import make_split
from nucleiflow.store import Store

IDENTITY = {"arch": "resunet", "encoder": "none", "lr": 0.001}


def _trainer(store_path, out_dir, epochs=3, identity=IDENTITY, lr=1e-3):
    seed_everything(7)
    store = Store(store_path)
    ids = store.ids
    train = SegmentationDataset(store, ids[:8], 32, transform=build_pipeline({}), seed=7)
    val = SegmentationDataset(store, ids[8:], 32, seed=7)
    loaders = (
        make_loader(train, 4, shuffle=True, seed=7, workers=0, pin_memory=False),
        make_loader(val, 4, shuffle=False, seed=7, workers=0, pin_memory=False),
    )
    settings = TrainSettings(
        epochs=epochs, batch_size=4, lr=lr, loss="bce_dice", l2=0.01, lr_patience=0, seed=7, identity=identity
    )
    model = build_model("resunet", dropout=0.3, extra_blocks=1)
    return SegmentationTrainer(model, settings, setup_device("cpu", 1), out_dir, progress=False), loaders


class _ToyData(TensorDataset):
    def set_epoch(self, epoch: int) -> None:  # what the engine tells a dataset with seeded augmentations
        pass


def _toy(out_dir, batches=2, epochs=1, setup=IN_PROCESS, **settings):
    """A 1x1-convolution "segmenter" on random 8x8 images, one image per batch: the engine in milliseconds."""
    seed_everything(0)
    images = torch.rand(batches, 3, 8, 8)
    data = _ToyData(images, (images[:, :1] > 0.5).float(), torch.arange(batches))
    loaders = (DataLoader(data, batch_size=1, shuffle=True, generator=torch.Generator()), DataLoader(data, 4))
    options = {"lr": 1e-2, "loss": "bce", "seed": 0, "identity": {"toy": 1}, **settings}
    model = torch.nn.Conv2d(3, 1, 1)
    return SegmentationTrainer(model, TrainSettings(epochs=epochs, **options), setup, out_dir, progress=False), loaders


def _scripted_validation(trainer, val_losses):
    """Replace validation by a script: epoch e gets val loss val_losses[e - 1] (and Dice 1 - loss)."""
    script = iter(val_losses)

    def evaluate(loader):
        loss = next(script)
        return {"loss": loss, "acc": 0.5, "dice": 1 - loss, "sensitivity": 0.5, "iou": 0.5}

    trainer.evaluate = evaluate


class Killed(Exception):
    pass


def test_killed_run_resumes_to_the_same_weights(pannuke_store, tmp_path, monkeypatch):
    full, loaders = _trainer(pannuke_store, tmp_path / "full")
    history_full = full.fit(*loaders)

    # Kill the second run in the middle of epoch 3 (after epoch 2's checkpoint).
    killed, loaders = _trainer(pannuke_store, tmp_path / "killed")
    real_train_epoch = SegmentationTrainer.train_epoch

    def dying_train_epoch(self, loader, epoch):
        if epoch == 3:
            raise Killed
        return real_train_epoch(self, loader, epoch)

    monkeypatch.setattr(SegmentationTrainer, "train_epoch", dying_train_epoch)
    with pytest.raises(Killed):
        killed.fit(*loaders)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 2

    resumed, loaders = _trainer(pannuke_store, tmp_path / "killed")
    history_resumed = resumed.fit(*loaders)
    assert resumed.start_epoch == 3
    for name, tensor in full.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    columns = [c for c in history_full.columns if c != "seconds"]
    pd.testing.assert_frame_equal(history_full[columns], history_resumed[columns])


def test_checkpoints_and_history_are_written(pannuke_store, tmp_path):
    trainer, loaders = _trainer(pannuke_store, tmp_path, epochs=3)
    history = trainer.fit(*loaders)
    assert list(history["epoch"]) == [1, 2, 3]
    for column in ("train_loss", "train_dice", "val_dice", "val_iou", "val_sensitivity", "val_acc", "lr"):
        assert history[column].notna().all()
    rates = history[["train_dice", "val_dice", "val_acc"]]
    assert ((rates >= 0) & (rates <= 1)).all().all()
    written = pd.read_csv(tmp_path / "history.csv")
    pd.testing.assert_frame_equal(written, history, check_exact=False, rtol=1e-12)
    # best.pt is the epoch with the highest validation Dice (the first one on a tie).
    best_row = history.loc[history["val_dice"].idxmax()]
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == best_row["epoch"] == trainer.best["epoch"]
    assert best["best"]["val_dice"] == best_row["val_dice"]
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 3


def test_extending_epochs_continues_training(pannuke_store, tmp_path):
    trainer, loaders = _trainer(pannuke_store, tmp_path, epochs=1)
    first = trainer.fit(*loaders)
    longer, loaders = _trainer(pannuke_store, tmp_path, epochs=2)
    history = longer.fit(*loaders)
    assert longer.start_epoch == 2
    assert list(history["epoch"]) == [1, 2]
    pd.testing.assert_frame_equal(history.iloc[:1], first)  # epoch 1 is kept, not retrained


def test_checkpoint_from_another_model_is_refused(pannuke_store, tmp_path):
    trainer, loaders = _trainer(pannuke_store, tmp_path, epochs=1)
    trainer.fit(*loaders)
    other, loaders = _trainer(pannuke_store, tmp_path, epochs=2, identity={**IDENTITY, "arch": "classic_unet"})
    with pytest.raises(CheckpointMismatch, match="made for .*'resunet'.* not .*'classic_unet'"):
        other.fit(*loaders)


def _nan_from(trainer, batch: int) -> None:
    """Make the loss NaN from the `batch`-th training batch of the run on (1-based)."""
    real_loss, calls = trainer.loss_fn, []

    def loss_fn(outputs, targets):
        loss = real_loss(outputs, targets)
        if trainer.model.training:
            calls.append(1)
            if len(calls) >= batch:
                return loss * float("nan")
        return loss

    trainer.loss_fn = loss_fn


def test_nan_loss_stops_with_epoch_and_batch_and_keeps_last_good(pannuke_store, tmp_path):
    trainer, loaders = _trainer(pannuke_store, tmp_path, epochs=1)
    trainer.fit(*loaders)
    before = load_checkpoint(tmp_path / "last.pt")
    nan_run, loaders = _trainer(pannuke_store, tmp_path, epochs=2)
    _nan_from(nan_run, 1)
    with pytest.raises(TrainingDiverged, match="at epoch 2, batch 1;"):
        nan_run.fit(*loaders)
    after = load_checkpoint(tmp_path / "last.pt")
    assert after["epoch"] == before["epoch"] == 1


def test_nan_after_a_sync_names_its_own_batch(tmp_path):
    # 30 batches: checked at batch 25, then the last 5 at the end of the epoch.
    trainer, loaders = _toy(tmp_path, batches=30)
    _nan_from(trainer, 27)
    with pytest.raises(TrainingDiverged, match="at epoch 1, batch 27;"):
        trainer.fit(*loaders)
    assert not (tmp_path / "last.pt").exists()


def test_an_epoch_of_exactly_sync_every_batches_trains(tmp_path):
    trainer, loaders = _toy(tmp_path, batches=engine.SYNC_EVERY)
    history = trainer.fit(*loaders)
    assert list(history["epoch"]) == [1] and history["train_loss"].notna().all()


def test_early_stopping_stops_after_patience_stale_epochs(tmp_path):
    trainer, loaders = _toy(tmp_path, epochs=8, early_stopping_patience=2)
    _scripted_validation(trainer, [0.9, 0.5, 0.6, 0.7, 0.4, 0.3, 0.2, 0.1])
    history = trainer.fit(*loaders)
    assert list(history["epoch"]) == [1, 2, 3, 4]  # epoch 2 is the best; 3 and 4 did not improve on it
    assert trainer.best == {"val_dice": 0.5, "epoch": 2}
    # A re-run (more epochs allowed) stays stopped rather than training on.
    again, loaders = _toy(tmp_path, epochs=8, early_stopping_patience=2)
    assert list(again.fit(*loaders)["epoch"]) == [1, 2, 3, 4]


def test_learning_rate_drops_by_lr_factor_after_lr_patience_stale_epochs(tmp_path):
    trainer, loaders = _toy(tmp_path, epochs=6, lr=0.1, lr_patience=2, lr_factor=0.5)
    _scripted_validation(trainer, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    history = trainer.fit(*loaders)
    # Epochs 2 and 3 are the patience; epoch 4, stale once more, halves the rate (epoch 7 would halve it again).
    assert history["lr"].tolist() == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05])


def test_cosine_schedule_follows_half_a_cosine_whatever_the_validation(tmp_path):
    trainer, loaders = _toy(tmp_path, epochs=4, lr=0.1, lr_patience=0, lr_schedule="cosine")
    _scripted_validation(trainer, [1.0, 1.0, 1.0, 1.0])  # stale throughout: a plateau schedule would halve it
    history = trainer.fit(*loaders)
    # Recorded after each epoch's step, as for the plateau schedule: the rate of the next epoch, 0 after the last.
    expected = [0.05 * (1 + math.cos(math.pi * epoch / 4)) for epoch in range(1, 5)]
    assert history["lr"].tolist() == pytest.approx(expected, abs=1e-12)


def test_cosine_schedule_resumes_where_it_stopped(tmp_path):
    straight, loaders = _toy(tmp_path / "straight", epochs=4, lr=0.1, lr_schedule="cosine")
    rates = straight.fit(*loaders)["lr"].tolist()
    killed, loaders = _toy(tmp_path / "killed", epochs=4, lr=0.1, lr_schedule="cosine")
    killed.on_epoch_end = lambda trainer, epoch, row: _kill_after(epoch, 2)
    with pytest.raises(Killed):
        killed.fit(*loaders)
    resumed, loaders = _toy(tmp_path / "killed", epochs=4, lr=0.1, lr_schedule="cosine")
    assert resumed.fit(*loaders)["lr"].tolist() == pytest.approx(rates)


def test_cosine_run_extended_replans_the_rest_over_the_new_epochs(tmp_path):
    first, loaders = _toy(tmp_path, epochs=2, lr=0.1, lr_schedule="cosine")
    first.fit(*loaders)
    assert first.optimizer.param_groups[0]["lr"] == 0.0  # the 2-epoch plan's end
    extended, loaders = _toy(tmp_path, epochs=4, lr=0.1, lr_schedule="cosine")
    assert extended.resume()
    # Epoch 3 trains at the 4-epoch cosine's rate after 2 epochs, not at the old plan's 0.
    assert extended.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    rates = extended.fit(*loaders)["lr"].tolist()
    assert rates == pytest.approx([0.05, 0.0, 0.05 * (1 + math.cos(math.pi * 3 / 4)), 0.0], abs=1e-12)


def _kill_after(epoch: int, last: int) -> None:
    if epoch == last:
        raise Killed


def test_unknown_schedule_is_refused_in_one_line(tmp_path):
    message = r"^training.lr_schedule: 'step' is not valid; choose one of: cosine, plateau$"
    with pytest.raises(ConfigError, match=message):
        _toy(tmp_path, lr_schedule="step")


def test_resume_reads_the_checkpoint_on_the_cpu(tmp_path, monkeypatch):
    trainer, loaders = _toy(tmp_path, epochs=1)
    trainer.fit(*loaders)
    resumed, _ = _toy(tmp_path, epochs=2)
    resumed.device = torch.device("cuda")  # as on a GPU: RNG states mapped there cannot be restored
    locations, states = [], []
    real_load, real_set = torch.load, torch.set_rng_state
    monkeypatch.setattr(torch, "load", lambda *a, **k: locations.append(k.get("map_location")) or real_load(*a, **k))
    monkeypatch.setattr(torch, "set_rng_state", lambda state: states.append(state) or real_set(state))
    assert resumed.resume()
    assert [str(location) for location in locations] == ["cpu"]
    assert states[0].device.type == "cpu" and states[0].dtype == torch.uint8


def test_fp16_run_resumes_a_checkpoint_without_scaler_state(tmp_path):
    """A checkpoint from CPU or bf16 (gradient scaler off) resumed where fp16 needs a scaler."""
    trainer, loaders = _toy(tmp_path, epochs=1)
    trainer.fit(*loaders)
    assert load_checkpoint(tmp_path / "last.pt")["scaler"] == {}
    fp16 = DeviceSetup(torch.device("cpu"), torch.float16, False, 0, False)
    resumed, _ = _toy(tmp_path, epochs=2, setup=fp16)
    assert resumed.scaler.is_enabled()
    assert resumed.resume() and resumed.start_epoch == 2
    assert resumed.scaler.get_scale() == 2.0**16  # a fresh scaler's


class _FakeCuda:
    """torch.cuda's RNG functions on a machine with `count` GPUs, recording what they are given."""

    def __init__(self, monkeypatch, count: int):
        self.count, self.set = count, []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: self.count)
        monkeypatch.setattr(torch.cuda, "get_rng_state", self.get_rng_state)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [self.get_rng_state(i) for i in range(self.count)])
        monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": self.set.append((state, device)))
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", self.set_rng_state_all)

    def get_rng_state(self, device="cuda"):
        index = device if isinstance(device, int) else (torch.device(device).index or 0)
        return torch.full((16,), index + 1, dtype=torch.uint8)

    def set_rng_state_all(self, states):
        if len(states) > self.count:
            raise IndexError("more RNG states than GPUs")
        self.set.extend((state, i) for i, state in enumerate(states))


def test_resume_on_a_machine_with_fewer_gpus(tmp_path, monkeypatch):
    trainer, loaders = _toy(tmp_path, epochs=1)
    trainer.fit(*loaders)
    fake = _FakeCuda(monkeypatch, count=2)  # the checkpoint is (re)written on a machine with two GPUs
    engine.save_checkpoint(trainer.last_path, trainer._payload(1))
    fake.count = 1
    resumed, _ = _toy(tmp_path, epochs=2)
    assert resumed.resume()


def test_only_the_training_gpus_rng_state_is_saved_and_restored(monkeypatch):
    fake = _FakeCuda(monkeypatch, count=2)
    device = torch.device("cuda", 1)
    state = engine._rng_state(device)
    assert torch.equal(state["cuda"], fake.get_rng_state(1))
    fake.count = 1  # a single GPU on the resuming machine, its index remapped to the training one
    engine._set_rng_state(state, device)
    (restored, to), *others = fake.set
    assert not others and torch.equal(restored, state["cuda"]) and restored.device.type == "cpu" and to == device
    assert "cuda" not in engine._rng_state(torch.device("cpu"))


# --- whole jobs, as Snakemake runs them ----------------------------------------------------------------

TRAINING = {
    "epochs": 4,
    "batch_size": 2,
    "lr": 0.001,
    "loss": "dice",
    "input_size": 64,
    "size_policy": "resize",
    "encoder_weights": None,
    "lr_patience": 1,
    "lr_factor": 0.5,
    "early_stopping_patience": 0,
    "prefilter_sigma": 0.0,
    "threshold": 0.5,
    "device": "cpu",
    "amp": True,
    "keep_last_checkpoint": True,
}


def _job(store_path, tmp_path, **training):
    split = tmp_path / "split.csv"
    write_csv(
        split, make_split(Store(store_path).metadata, {"scheme": "folds", "train": [1], "val": [2], "test": [3]}, 0)
    )
    spec = {
        "dataset": "pannuke",
        "experiment": "kill",
        "split": "official",
        "augmentation": None,
        "arch": "unet",
        "encoder": "resnet18",
        "reg": "paper",
        "regularization": {"extra_blocks": 1, "dropout": 0.3, "l2": 0.01},
        "training": {**TRAINING, **training},
        "seed": 5,
    }
    return spec, split


def test_training_writes_final_outputs_only_at_the_end(pannuke_store, tmp_path, monkeypatch):
    spec, split = _job(pannuke_store, tmp_path, epochs=2)
    model_dir = tmp_path / "model"
    seen = []
    real_after_epoch = engine.Trainer._after_epoch

    def observed(self, epoch, row):
        real_after_epoch(self, epoch, row)
        seen.append((epoch, sorted(p.name for p in model_dir.iterdir())))

    monkeypatch.setattr(engine.Trainer, "_after_epoch", observed)
    train_from_spec(spec, pannuke_store, split, None, model_dir, progress=False)
    assert seen == [(1, ["checkpoints"]), (2, ["checkpoints"])]  # nothing Snakemake could take for finished
    assert sorted(p.name for p in model_dir.iterdir()) == ["checkpoints", "history.csv", "model.pt", "train_info.json"]


def test_sigkilled_training_job_resumes_to_the_same_model(pannuke_store, tmp_path):
    """A real kill (SIGKILL of the training process), then a re-run, as Snakemake would do it."""
    spec, split = _job(pannuke_store, tmp_path)
    train_from_spec(spec, pannuke_store, split, None, tmp_path / "straight", progress=False)

    job = (
        "import json, logging, sys; from nucleiflow.segmentation.run import train_from_spec; "
        "logging.basicConfig(level=logging.INFO); "
        "train_from_spec(json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], None, sys.argv[4], progress=False)"
    )
    args = [sys.executable, "-c", job, json.dumps(spec), str(pannuke_store), str(split), str(tmp_path / "killed")]
    process = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    last = tmp_path / "killed" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    # The kill landed mid-training: a checkpoint existed, the last epoch had not, and no final output was written.
    assert process.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(last)["epoch"]
    assert 1 <= killed_at < TRAINING["epochs"]
    assert not (tmp_path / "killed" / "model.pt").exists(), "the job finished before it could be killed"

    rerun = subprocess.run(args, check=True, timeout=300, capture_output=True, text=True)
    resumed_at = re.search(r"resumed from \S*last\.pt at epoch (\d+)", rerun.stderr)
    assert resumed_at and int(resumed_at.group(1)) == killed_at + 1, rerun.stderr[-2000:]

    straight = load_checkpoint(tmp_path / "straight" / "model.pt")
    resumed = load_checkpoint(tmp_path / "killed" / "model.pt")
    assert straight["epoch"] == resumed["epoch"]
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    assert len(pd.read_csv(tmp_path / "killed" / "history.csv")) == TRAINING["epochs"]
    # Snakemake deletes a job's log before a re-run: the resumed job logs the killed run's epochs again.
    logged = re.findall(r"engine:\s*epoch (\d+)/\d+: .*, (before the resume|best epoch \d+)", rerun.stderr)
    assert [int(epoch) for epoch, _ in logged] == list(range(1, TRAINING["epochs"] + 1)), rerun.stderr[-2000:]
    assert [note == "before the resume" for _, note in logged].count(True) == killed_at
