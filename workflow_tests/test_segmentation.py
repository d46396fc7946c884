"""One experiment cell without Snakemake: train, evaluate, tables and figures from its outputs."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from nucleiflow.device import setup_device
from nucleiflow.errors import DataFormatError
from nucleiflow.io import write_csv
from nucleiflow.segmentation import report as sr
from nucleiflow.segmentation.augment import build_pipeline, save_pipeline
from nucleiflow.segmentation.data import to_tensor
from nucleiflow.segmentation.inference import (
    evaluate_split,
    forward_probability,
    predict_tiled,
    soft_dice_loss,
    tile_origins,
    timing_summary,
)
from nucleiflow.segmentation.run import evaluate_from_spec, train_from_spec
from nucleiflow.splits import make_split
from nucleiflow.store import Store

TRAINING = {
    "epochs": 2,
    "batch_size": 2,
    "lr": 0.001,
    "loss": "dice",
    "input_size": 64,
    "size_policy": "resize",
    "encoder_weights": None,
    "lr_patience": 5,
    "lr_factor": 0.5,
    "early_stopping_patience": 0,
    "prefilter_sigma": 0.0,
    "threshold": 0.5,
    "device": "cpu",
    "amp": True,
    "keep_last_checkpoint": True,
}


def _spec(arch="unet", encoder="resnet18", reg="paper"):
    return {
        "dataset": "pannuke",
        "experiment": "unit",
        "split": "official",
        "augmentation": "paper",
        "arch": arch,
        "encoder": encoder,
        "reg": reg,
        "regularization": {"extra_blocks": 1, "dropout": 0.5, "l2": 0.01},
        "training": dict(TRAINING),
        "seed": 3,
    }


@pytest.fixture(scope="module")
def trained(pannuke_store, tmp_path_factory):
    base = tmp_path_factory.mktemp("cell")
    split = make_split(Store(pannuke_store).metadata, {"scheme": "folds", "train": [1], "val": [2], "test": [3]}, 0)
    write_csv(base / "split.csv", split)
    save_pipeline(build_pipeline({}), base / "pipeline.json")
    spec = _spec()
    info = train_from_spec(
        spec, pannuke_store, base / "split.csv", base / "pipeline.json", base / "model", progress=False
    )
    return spec, base, info


def test_training_writes_final_outputs_only_at_the_end(trained):
    spec, base, info = trained
    model_dir = base / "model"
    assert {p.name for p in model_dir.iterdir()} == {"model.pt", "history.csv", "train_info.json", "checkpoints"}
    assert len(pd.read_csv(model_dir / "history.csv")) == 2
    assert (model_dir / "model.pt").samefile(model_dir / "checkpoints" / "best.pt")  # a link, no extra disk
    assert (model_dir / "checkpoints" / "last.pt").exists()  # keep_last_checkpoint: true
    saved = json.loads((model_dir / "train_info.json").read_text())
    assert saved["trainable"] > 1e6 and saved["size_mb"] > 1 and saved["train_images"] == 4
    assert saved["spec"]["arch"] == "unet" and info["epochs_run"] == 2


def test_evaluation_metrics_predictions_and_timing(trained, pannuke_store):
    spec, base, _ = trained
    per_image, timing = evaluate_from_spec(
        spec,
        base / "model" / "model.pt",
        pannuke_store,
        base / "split.csv",
        "test",
        predictions_path=base / "test.h5",
        progress=False,
    )
    assert list(per_image["image_id"]) == [f"fold3_{i:04d}" for i in range(4)]
    for metric in ("acc", "dice", "sensitivity", "iou", "precision", "f1", "mcc", "loss"):
        assert per_image[metric].between(-1, 1).all(), metric
    assert (per_image[["tp", "fp", "fn", "tn"]].sum(axis=1) == 256 * 256).all()  # native PanNuke size
    with h5py.File(base / "test.h5") as f:
        assert set(f) == set(per_image["image_id"]) and f["fold3_0000"].shape == (256, 256)
    assert timing["device"] == "cpu" and timing["median_s"] > 0


def test_a_changed_config_refuses_the_old_model(trained, pannuke_store):
    spec, base, _ = trained
    changed = {**spec, "regularization": {"extra_blocks": 1, "dropout": 0.5, "l2": 0.02}}
    with pytest.raises(Exception, match="checkpoint was made for"):
        evaluate_from_spec(
            changed,
            base / "model" / "model.pt",
            pannuke_store,
            base / "split.csv",
            "test",
            predictions_path=None,
            progress=False,
        )


class MaskEcho(torch.nn.Module):
    """A 'model' whose logits are +-10 where the red channel is above its mean: known predictions."""

    def forward(self, x):
        red = x[:, :1]
        return torch.where(red > red.mean(dim=(2, 3), keepdim=True), 10.0, -10.0)


def test_evaluate_split_agrees_with_direct_metrics(dsb_store):
    store = Store(dsb_store)
    ids = store.ids[:3]
    per_image = evaluate_split(
        MaskEcho(), store, ids, size=64, threshold=0.5, setup=setup_device("cpu"), progress=False, batch_size=1
    )
    for _, row in per_image.iterrows():
        truth = store.mask(row["image_id"]).astype(bool)
        assert row["tp"] + row["fn"] == truth.sum()
        assert row["tp"] + row["fp"] + row["fn"] + row["tn"] == truth.size
    assert list(per_image["warmup"]) == [True, False, False]
    assert timing_summary(per_image, "cpu")["images"] == 2


def test_empty_split_is_an_error(dsb_store):
    with pytest.raises(DataFormatError, match="holds no images"):
        evaluate_split(MaskEcho(), Store(dsb_store), [], size=64, threshold=0.5, setup=setup_device("cpu"))


def test_soft_dice_loss_bounds():
    truth = np.zeros((8, 8))
    truth[:4] = 1
    assert soft_dice_loss(truth, truth) == pytest.approx(0.0)
    assert soft_dice_loss(1 - truth, truth) == pytest.approx(1 - 1 / 65)
    assert soft_dice_loss(np.zeros((8, 8)), np.zeros((8, 8))) == 0.0  # empty vs empty: perfect


def test_report_tables_from_stage_outputs(trained, pannuke_store, tmp_path):
    spec, base, _ = trained
    cell = {k: spec[k] for k in ("arch", "encoder", "reg")}
    paths = []
    for subset in ("val", "test"):
        per_image, timing = evaluate_from_spec(
            spec,
            base / "model" / "model.pt",
            pannuke_store,
            base / "split.csv",
            subset,
            predictions_path=tmp_path / f"{subset}.h5",
            progress=False,
        )
        write_csv(tmp_path / f"{subset}.csv", per_image)
        (tmp_path / f"{subset}.json").write_text(json.dumps(timing))
        paths.append(subset)
    per_image = sr.collect([str(tmp_path / f"{s}.csv") for s in paths], [cell], paths, pd.read_csv)
    table = sr.metrics_table(sr.metrics_summary(per_image))
    assert list(table["Split"]) == ["val", "test"]
    assert {"Loss", "Acc", "DCS", "SN", "IoU", "DCS (pooled)"} <= set(table.columns)
    sizes = sr.model_sizes([str(base / "model" / "train_info.json")], [cell])
    assert sizes.loc[0, "Backbone"] == "ResNet-18" and sizes.loc[0, "Kernel"] == "3x3"
    timing = sr.timing_table(
        [str(tmp_path / f"{s}.json") for s in paths], [str(base / "model" / "train_info.json")], [cell], paths
    )
    assert len(timing) == 1 and timing.loc[0, "Training (min)"] > 0
    ids = sr.example_ids(per_image, 2)
    examples, predictions = sr.prediction_examples(
        str(pannuke_store), [str(tmp_path / f"{s}.h5") for s in paths], [cell], paths, ids, 0.5
    )
    assert len(examples) == 2 and predictions[list(predictions)[0]][0].shape == (256, 256)


def test_tile_origins_cover_the_image_with_overlap():
    assert tile_origins(64, 64) == [0] and tile_origins(40, 64) == [0]
    starts = tile_origins(150, 64)
    assert starts[0] == 0 and starts[-1] == 150 - 64
    assert all(b - a <= 32 for a, b in zip(starts, starts[1:]))


def test_tiled_prediction_matches_a_pixelwise_model_at_native_size(dsb_store):
    """A model that only looks at each pixel must give the same map tiled or whole."""
    store = Store(dsb_store)
    image = store.image(store.ids[0])
    model = PixelModel()
    setup = setup_device("cpu")
    tiled = predict_tiled(model, image, 32, setup, batch_size=4)
    whole = forward_probability(model, to_tensor(image)[None], setup)[0]
    assert tiled.shape == image.shape[:2]
    np.testing.assert_allclose(tiled, whole, atol=1e-6)


def test_batched_and_tiled_evaluation_score_every_image_at_native_size(dsb_store):
    store = Store(dsb_store)
    for policy, batch in (("resize", 4), ("tile", 3)):
        per_image = evaluate_split(
            MaskEcho(),
            store,
            store.ids,
            size=64,
            threshold=0.5,
            setup=setup_device("cpu"),
            progress=False,
            policy=policy,
            batch_size=batch,
        )
        assert len(per_image) == len(store.ids)
        sizes = store.metadata.set_index("image_id")
        pixels = per_image[["tp", "fp", "fn", "tn"]].sum(axis=1).to_numpy()
        assert (
            pixels
            == (sizes.loc[per_image["image_id"], "height"] * sizes.loc[per_image["image_id"], "width"]).to_numpy()
        ).all()
    assert per_image["warmup"].sum() == 1  # tile: one image per batch, the first is the warm-up


class PixelModel(torch.nn.Module):
    def forward(self, x):
        return x[:, :1] * 2.0 - 0.5
