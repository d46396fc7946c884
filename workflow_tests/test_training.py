"""The training engine: kill-and-resume equals an uninterrupted run, NaN stops, mismatched checkpoints refused."""

import pandas as pd
import pytest
import torch

from nucleiflow.device import setup_device
from nucleiflow.models import build_model
from nucleiflow.segmentation.augment import build_pipeline
from nucleiflow.segmentation.data import SegmentationDataset, make_loader
from nucleiflow.segmentation.training import (
    CheckpointMismatch,
    Trainer,
    TrainingDiverged,
    TrainSettings,
    load_checkpoint,
    seed_everything,
)
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
    return Trainer(model, settings, setup_device("cpu", 1), out_dir, progress=False), loaders


class Killed(Exception):
    pass


def test_killed_run_resumes_to_the_same_weights(pannuke_store, tmp_path, monkeypatch):
    full, loaders = _trainer(pannuke_store, tmp_path / "full")
    history_full = full.fit(*loaders)

    # Kill the second run in the middle of epoch 3 (after epoch 2's checkpoint).
    killed, loaders = _trainer(pannuke_store, tmp_path / "killed")
    real_train_epoch = Trainer.train_epoch

    def dying_train_epoch(self, loader, epoch):
        if epoch == 3:
            raise Killed
        return real_train_epoch(self, loader, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", dying_train_epoch)
    with pytest.raises(Killed):
        killed.fit(*loaders)
    monkeypatch.setattr(Trainer, "train_epoch", real_train_epoch)
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 2

    resumed, loaders = _trainer(pannuke_store, tmp_path / "killed")
    history_resumed = resumed.fit(*loaders)
    assert resumed.start_epoch == 3
    for name, tensor in full.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    columns = [c for c in history_full.columns if c != "seconds"]
    pd.testing.assert_frame_equal(history_full[columns], history_resumed[columns])


def test_checkpoints_and_history_are_written(pannuke_store, tmp_path):
    trainer, loaders = _trainer(pannuke_store, tmp_path, epochs=2)
    history = trainer.fit(*loaders)
    assert list(history["epoch"]) == [1, 2]
    for column in ("train_loss", "train_dice", "val_dice", "val_iou", "val_sensitivity", "val_acc", "lr"):
        assert history[column].notna().all()
    assert (
        ((history[["train_dice", "val_dice", "val_acc"]] >= 0) & (history[["train_dice", "val_dice", "val_acc"]] <= 1))
        .all()
        .all()
    )
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == trainer.best["epoch"]
    assert (tmp_path / "history.csv").exists()


def test_extending_epochs_continues_training(pannuke_store, tmp_path):
    trainer, loaders = _trainer(pannuke_store, tmp_path, epochs=1)
    trainer.fit(*loaders)
    longer, loaders = _trainer(pannuke_store, tmp_path, epochs=2)
    history = longer.fit(*loaders)
    assert list(history["epoch"]) == [1, 2]


def test_checkpoint_from_another_model_is_refused(pannuke_store, tmp_path):
    trainer, loaders = _trainer(pannuke_store, tmp_path, epochs=1)
    trainer.fit(*loaders)
    other, loaders = _trainer(pannuke_store, tmp_path, epochs=2, identity={**IDENTITY, "arch": "classic_unet"})
    with pytest.raises(CheckpointMismatch, match="made for .*'resunet'.* not .*'classic_unet'"):
        other.fit(*loaders)


def test_nan_loss_stops_with_epoch_and_batch_and_keeps_last_good(pannuke_store, tmp_path, monkeypatch):
    trainer, loaders = _trainer(pannuke_store, tmp_path, epochs=1)
    trainer.fit(*loaders)
    before = load_checkpoint(tmp_path / "last.pt")
    nan_run, loaders = _trainer(pannuke_store, tmp_path, epochs=2)
    real_forward = Trainer._forward

    def nan_forward(self, images, masks):
        logits, masks, loss = real_forward(self, images, masks)
        return logits, masks, loss * float("nan")

    monkeypatch.setattr(Trainer, "_forward", nan_forward)
    with pytest.raises(TrainingDiverged, match="at epoch 2, batch 1"):
        nan_run.fit(*loaders)
    after = load_checkpoint(tmp_path / "last.pt")
    assert after["epoch"] == before["epoch"] == 1


def test_sigkilled_training_job_resumes_to_the_same_model(pannuke_store, tmp_path):
    """A real kill (SIGKILL of the training process), then a re-run, as Snakemake would do it."""
    import json
    import signal
    import subprocess
    import sys
    import time

    from nucleiflow.io import write_csv
    from nucleiflow.segmentation.run import train_from_spec
    from nucleiflow.splits import make_split

    split = tmp_path / "split.csv"
    write_csv(
        split, make_split(Store(pannuke_store).metadata, {"scheme": "folds", "train": [1], "val": [2], "test": [3]}, 0)
    )
    training = {
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
    spec = {
        "dataset": "pannuke",
        "experiment": "kill",
        "split": "official",
        "augmentation": None,
        "arch": "unet",
        "encoder": "resnet18",
        "reg": "paper",
        "regularization": {"extra_blocks": 1, "dropout": 0.3, "l2": 0.01},
        "training": training,
        "seed": 5,
    }
    train_from_spec(spec, pannuke_store, split, None, tmp_path / "straight", progress=False)

    job = (
        "import json, sys; from nucleiflow.segmentation.run import train_from_spec; "
        "train_from_spec(json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], None, sys.argv[4], progress=False)"
    )
    args = [sys.executable, "-c", job, json.dumps(spec), str(pannuke_store), str(split), str(tmp_path / "killed")]
    process = subprocess.Popen(args)
    last = tmp_path / "killed" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "killed" / "model.pt").exists(), "the job finished before it could be killed"
    subprocess.run(args, check=True, timeout=300)

    straight = load_checkpoint(tmp_path / "straight" / "model.pt")
    resumed = load_checkpoint(tmp_path / "killed" / "model.pt")
    assert straight["epoch"] == resumed["epoch"]
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
