"""One experiment cell without Snakemake: train, evaluate, tables and figures from its outputs."""

import json

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import AllNuclei, MaskEcho, PixelModel, RedEcho, red_echo

from nucleiflow.catalog import model_label
from nucleiflow.device import setup_device
from nucleiflow.errors import DataFormatError
from nucleiflow.io import write_csv
from nucleiflow.models import build_model
from nucleiflow.segmentation.evaluation.instances import object_metrics
from nucleiflow.segmentation.inference.inference import evaluate_split, timing_summary
from nucleiflow.segmentation.inference.predictions import read_probability, write_probability
from nucleiflow.segmentation.inference.predictor import InferenceConfig, Predictor, tile_origins
from nucleiflow.segmentation.reports import experiment as sr
from nucleiflow.segmentation.run import evaluate_from_spec, train_from_spec
from nucleiflow.segmentation.training.augment import build_pipeline, save_pipeline
from nucleiflow.segmentation.training.data import to_tensor
from nucleiflow.segmentation.training.losses import soft_dice
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
    store = Store(pannuke_store)
    assert list(per_image["image_id"]) == [f"fold3_{i:04d}" for i in range(4)]
    with h5py.File(base / "test.h5") as f:
        assert set(f) == set(per_image["image_id"]) and f.attrs["threshold"] == 0.5
    for row in per_image.itertuples():
        # The stored probabilities (uint8 steps of 1/255) are what the row scores, against the store's mask
        # at native size; only a probability within half a step of the threshold may round across it.
        prob = read_probability(base / "test.h5", row.image_id)
        truth = store.mask(row.image_id).astype(bool)
        assert prob.shape == truth.shape == (256, 256)
        pred, unsure = prob > 0.5, np.abs(prob - 0.5) < 1 / 255
        tp, fp = int((pred & truth).sum()), int((pred & ~truth).sum())
        fn, tn = int((~pred & truth).sum()), int((~pred & ~truth).sum())
        assert abs(row.tp - tp) + abs(row.fp - fp) <= unsure.sum() and row.tp + row.fn == truth.sum()
        assert abs(row.fn - fn) + abs(row.tn - tn) <= unsure.sum() and row.fp + row.tn == (~truth).sum()
        # Every metric is its formula of the row's counts.
        n = 256 * 256
        assert row.acc == pytest.approx((row.tp + row.tn) / n)
        assert row.dice == pytest.approx(2 * row.tp / (2 * row.tp + row.fp + row.fn) if row.tp + row.fp + row.fn else 1)
        assert row.f1 == row.dice
        assert row.iou == pytest.approx(row.tp / (row.tp + row.fp + row.fn) if row.tp + row.fp + row.fn else 1)
        assert row.sensitivity == pytest.approx(row.tp / (row.tp + row.fn) if row.tp + row.fn else float(row.fp == 0))
        # The loss is the training loss (TRAINING: dice): 1 - (2 sum(p g) + 1) / (sum(p) + sum(g) + 1).
        soft = 1 - (2 * prob[truth].sum() + 1) / (prob.sum() + truth.sum() + 1)
        assert row.loss == pytest.approx(soft, abs=2e-3)
    # The stored probabilities are the best checkpoint's, predicted here by hand for one image: resized to the
    # training size, ImageNet-normalised, sigmoid of the logits, resized back to the native 256 x 256.
    model = build_model("unet", "resnet18", dropout=0.5, extra_blocks=1)
    model.load_state_dict(torch.load(base / "model" / "model.pt", map_location="cpu", weights_only=False)["model"])
    small = cv2.resize(store.image("fold3_0001"), (64, 64), interpolation=cv2.INTER_AREA) / 255.0
    x = ((small - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).transpose(2, 0, 1)[None]
    with torch.no_grad():
        expected = torch.sigmoid(model.eval()(torch.tensor(x, dtype=torch.float32)))[0, 0].numpy()
    expected = cv2.resize(expected, (256, 256), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(read_probability(base / "test.h5", "fold3_0001"), expected, atol=0.6 / 255)
    # Four test images in batches of 2: the first batch is the warm-up and is left out of the timing.
    assert list(per_image["warmup"]) == [True, True, False, False]
    timed = per_image.loc[~per_image["warmup"], "seconds"]
    assert timing["images"] == 2 and timing["median_s"] == pytest.approx(timed.median())
    assert timing["mean_s"] == pytest.approx(timed.mean()) and timing["median_s"] > 0
    assert timing["device"] == "cpu" and timing["best_epoch"] in (1, 2)


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


def _expected_row(pred: np.ndarray, truth: np.ndarray, prob: np.ndarray) -> dict:
    tp, fp = int((pred & truth).sum()), int((pred & ~truth).sum())
    fn, tn = int((~pred & truth).sum()), int((~pred & ~truth).sum())
    spread = np.sqrt(float(tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = (tp * tn - fp * fn) / spread if spread else 0.0  # 0/0 with errors: 0, as scikit-learn
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "acc": (tp + tn) / truth.size,
        "dice": 2 * tp / (2 * tp + fp + fn),
        "f1": 2 * tp / (2 * tp + fp + fn),
        "iou": tp / (tp + fp + fn),
        "sensitivity": tp / (tp + fn),
        "precision": tp / (tp + fp),
        "specificity": tn / (tn + fp),
        "mcc": mcc,
        "loss": 1 - (2 * prob[truth].sum() + 1) / (prob.sum() + truth.sum() + 1),
    }


def test_evaluate_split_agrees_with_direct_metrics(dsb_store, tmp_path):
    """Every per-image value is that of the echo model's known prediction, at each image's native size."""
    store = Store(dsb_store)
    ids = store.ids[:4]
    echo = Predictor(RedEcho(), InferenceConfig(32, "tile", batch_size=4, threshold=0.5), setup_device("cpu"))
    per_image = evaluate_split(echo, store, ids, predictions_path=tmp_path / "echo.h5", progress=False)
    assert list(per_image["image_id"]) == ids
    sure = 1 / (1 + np.exp(-10.0))  # sigmoid(10)
    mixed = 0
    for row in per_image.to_dict("records"):
        sample = store[row["image_id"]]
        truth, pred = sample.mask.astype(bool), red_echo(sample.image)
        expected = _expected_row(pred, truth, np.where(pred, sure, 1 - sure))
        assert {k: row[k] for k in expected} == pytest.approx(expected, rel=1e-5), row["image_id"]
        objects = object_metrics(sample.instances, pred)  # AJI, PQ, ... of the same prediction
        assert {k: row[k] for k in objects} == pytest.approx(objects, nan_ok=True)
        np.testing.assert_array_equal(read_probability(tmp_path / "echo.h5", row["image_id"]) > 0.5, pred)
        mixed += min(expected["tp"], expected["fp"], expected["fn"]) > 0
    assert mixed >= 1  # the echo is right and wrong in both directions somewhere: no identity passes by luck

    # resize: probabilities at the training size are resized back to the native size before scoring.
    everything = Predictor(AllNuclei(), InferenceConfig(64, batch_size=1, threshold=0.5), setup_device("cpu"))
    per_image = evaluate_split(everything, store, ids[:3], progress=False)
    for row in per_image.to_dict("records"):
        truth = store.mask(row["image_id"]).astype(bool)
        expected = _expected_row(np.ones_like(truth), truth, np.full(truth.shape, sure))
        assert {k: row[k] for k in expected} == pytest.approx(expected, rel=1e-5), row["image_id"]
        assert row["fn"] == row["tn"] == 0 and row["tp"] == truth.sum()
    assert list(per_image["warmup"]) == [True, False, False]
    assert timing_summary(per_image, "cpu")["images"] == 2


def test_empty_split_is_an_error(dsb_store):
    with pytest.raises(DataFormatError, match="holds no images"):
        evaluate_split(Predictor(MaskEcho(), InferenceConfig(64), setup_device("cpu")), Store(dsb_store), [])


def test_soft_dice_loss_bounds():
    truth = torch.zeros((8, 8), dtype=torch.float64)
    truth[:4] = 1
    assert float(soft_dice(truth, truth, (0, 1))) == pytest.approx(0.0)
    assert float(soft_dice(1 - truth, truth, (0, 1))) == pytest.approx(1 - 1 / 65)
    assert float(soft_dice(torch.zeros(8, 8), torch.zeros(8, 8), (0, 1))) == 0.0  # empty vs empty: perfect
    # Per item over the given dims: a batch of the two cases.
    both = soft_dice(torch.stack([truth, 1 - truth]), torch.stack([truth, truth]), (1, 2))
    np.testing.assert_allclose(both.numpy(), [0.0, 1 - 1 / 65])


def test_the_evaluated_loss_is_the_specs_training_loss():
    # Tables 2-4's Loss column: the loss each experiment trained with, not one fixed Dice for all.
    for loss in ("dice_squared", "bce_dice"):
        spec = _spec()
        spec["training"] = {**TRAINING, "loss": loss}
        assert InferenceConfig.from_spec(spec).loss == loss


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
    runs = [
        {
            **cell,
            "subset": subset,
            "info": str(base / "model" / "train_info.json"),
            "history": str(base / "model" / "history.csv"),
            "per_image": str(tmp_path / f"{subset}.csv"),
            "timing": str(tmp_path / f"{subset}.json"),
            "predictions": str(tmp_path / f"{subset}.h5"),
        }
        for subset in paths
    ]
    per_image = sr.collect(runs, pd.read_csv)
    table = sr.metrics_table(sr.metrics_summary(per_image))
    assert list(table["Split"]) == ["val", "test"]
    assert {"Loss", "Acc", "DCS", "SN", "IoU", "DCS (pooled)"} <= set(table.columns)
    sizes = sr.model_sizes(runs)
    assert sizes.loc[0, "Backbone"] == "ResNet-18" and sizes.loc[0, "Kernel"] == "3x3"
    timing = sr.timing_table(runs)
    assert len(timing) == 1 and timing.loc[0, "Training (min)"] > 0
    # The first batch is a warm-up: the table says how many images were timed, not how many were evaluated.
    tested = per_image[per_image["subset"] == "test"]
    assert timing.loc[0, "Images timed"] == (int((~tested["warmup"]).sum()) or len(tested))
    assert len(sr.histories(runs)) == 2  # one model, two epochs
    ids = sr.example_ids(per_image, 2)
    examples, predictions = sr.prediction_examples(str(pannuke_store), runs, ids, 0.5)
    assert len(examples) == 2 and predictions[list(predictions)[0]][0].shape == (256, 256)

    # A second model whose test predictions are empty, its runs listed split-major between the first
    # model's: every file is still read with its own model and split.
    empty = tmp_path / "empty_test.h5"
    with h5py.File(empty, "w") as handle:
        for image_id in ids:
            write_probability(handle, image_id, np.zeros((256, 256), np.float32))
    other = [{**run, "arch": "fpn", **({"predictions": str(empty)} if run["subset"] == "test" else {})} for run in runs]
    mixed = [runs[0], other[0], runs[1], other[1]]
    assert [run["subset"] for run in sr.shown_runs(mixed)] == ["test", "test"]
    _, both = sr.prediction_examples(str(pannuke_store), mixed, ids, 0.5)
    label, other_label = model_label("unet", "resnet18", "paper"), model_label("fpn", "resnet18", "paper")
    assert not any(mask.any() for mask in both[other_label])
    for mine, alone in zip(both[label], predictions[label]):
        np.testing.assert_array_equal(mine, alone)
    frame = sr.collect(mixed, pd.read_csv)
    assert frame.groupby(["model", "subset"]).size().to_dict() == {
        (name, subset): len(per_image[per_image["subset"] == subset])
        for name in (label, other_label)
        for subset in paths
    }
    assert len(sr.timing_table(mixed)) == 2 and len(sr.model_sizes(mixed)) == 2


def test_paper_only_figures_from_the_store_and_stored_predictions(pannuke_store, tmp_path):
    import h5py

    from nucleiflow.segmentation.inference.predictions import write_probability

    store = Store(pannuke_store)
    ids = store.ids[:3]
    h5 = str(tmp_path / "test_predictions.h5")
    with h5py.File(h5, "w") as handle:
        for image_id in ids:
            write_probability(handle, image_id, store[image_id].mask * 0.8)
    keys = ("samples", "overlays", "confidence_map", "train_predictions", "image_1", "image_2", "image_3")
    outputs = {key: tmp_path / "figures" / f"{key}.png" for key in keys}
    cell = {"arch": "unet", "encoder": "resnet18", "reg": "none"}
    runs = [{**cell, "subset": "test", "predictions": h5}]
    sr.write_paper_figures(outputs, pannuke_store, ids[:2], runs, 0.5, [h5], named=[ids[2], "x"])
    assert all(path.stat().st_size > 1000 and path.with_suffix(".pdf").exists() for path in outputs.values())
    assert sr.named_images("classic_unet_dsb2018")[0].startswith("6034456567632f4b")
    assert sr.named_images("pannuke") == []
    per_image = pd.DataFrame(
        {"image_id": ids, "model": "m", "subset": "test", "dice": [0.1, 0.5, 0.9]}
        | dict.fromkeys(("acc", "f1", "iou", "precision", "sensitivity"), 0.5)
    )
    table = sr.per_image_table(per_image, 2, named=[ids[1], "absent"])
    assert table["Image"].iloc[0] == ids[1] and len(table) == 2


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
    tiled = Predictor(model, InferenceConfig(32, "tile", 4), setup).predict_maps(image)[0]  # binary: one channel
    whole = torch.sigmoid(model(to_tensor(image)[None]))[0, 0].detach().numpy()
    assert tiled.shape == image.shape[:2]
    np.testing.assert_allclose(tiled, whole, atol=1e-6)


def test_batched_and_tiled_evaluation_score_every_image_at_native_size(dsb_store):
    store = Store(dsb_store)
    for policy, batch in (("resize", 4), ("tile", 3)):
        echo = Predictor(MaskEcho(), InferenceConfig(64, policy, batch, threshold=0.5), setup_device("cpu"))
        per_image = evaluate_split(echo, store, store.ids, progress=False)
        assert len(per_image) == len(store.ids)
        sizes = store.metadata.set_index("image_id")
        pixels = per_image[["tp", "fp", "fn", "tn"]].sum(axis=1).to_numpy()
        assert (
            pixels
            == (sizes.loc[per_image["image_id"], "height"] * sizes.loc[per_image["image_id"], "width"]).to_numpy()
        ).all()
    assert per_image["warmup"].sum() == 1  # tile: one image per batch, the first is the warm-up
