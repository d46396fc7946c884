"""Evaluation, tuning, TTA and prediction of models trained for the binary, contour and hv targets.

The models are stand-ins with known outputs: an "oracle" reads the true nuclei back from
the image (red: nucleus, green: its id, blue: its PanNuke class; unit input scaling at
native size, so the pixel values arrive exactly) and returns the logits of that image's
true target, so every score below is known in advance.
"""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from conftest import RedEcho, resunet_spec
from conftest import touching_discs as discs

from nucleiflow.device import setup_device
from nucleiflow.engine import save_checkpoint
from nucleiflow.errors import ConfigError, DataFormatError
from nucleiflow.io import write_csv, write_json
from nucleiflow.segmentation import run
from nucleiflow.segmentation.analyses.robustness import sweep_from_spec
from nucleiflow.segmentation.evaluation.instances import label_metrics, object_metrics
from nucleiflow.segmentation.evaluation.pannuke_metrics import PANNUKE_COLUMNS
from nucleiflow.segmentation.inference import inference, predictor
from nucleiflow.segmentation.inference.inference import evaluate_split, tune_model, tuning_ids
from nucleiflow.segmentation.inference.predict import evaluate_on, predict_images
from nucleiflow.segmentation.inference.predictor import InferenceConfig, Predictor, read_tuned_params
from nucleiflow.segmentation.representation.postprocess import (
    DEFAULT_GRIDS,
    DEFAULT_PARAMS,
    WatershedParams,
    configured_params,
    params_to_dict,
)
from nucleiflow.segmentation.representation.targets import contour_target, hv_target
from nucleiflow.segmentation.training.heads import OutputLayout
from nucleiflow.segmentation.training.trainer import build_from_spec, checkpoint_identity
from nucleiflow.store import Store, StoreWriter

SIZE = 64
ID_STEP, CLASS_STEP = 20, 40  # green = nucleus id x ID_STEP, blue = class x CLASS_STEP
CPU = setup_device("cpu", 1, False)
BINARY = OutputLayout("binary")
CONTOUR = OutputLayout("contour")
HV = OutputLayout("hv")
HV_TYPES = OutputLayout("hv", 6)
# The oracle's maps are clean: nothing to drop, no marker too small.
CLEAN = {
    "binary": configured_params("binary", {}),
    "contour": WatershedParams(min_size=0, marker_min_size=0),
    "hv": replace(DEFAULT_PARAMS["hv"], min_size=0),
}


_BASE = [
    discs([(15, 15), (15, 27), (40, 40), (50, 12)], [7, 6, 9, 5]),
    discs([(30, 30), (30, 42), (42, 36), (10, 10), (10, 21), (54, 54)], [7, 6, 7, 5, 5, 6]),
    discs([(20, 50), (32, 50), (52, 10), (50, 30)], [6, 6, 6, 6]),
]
# Eight images with touching pairs: the three scenes, flipped and turned.
SCENES = [*_BASE, *(np.fliplr(s) for s in _BASE), np.rot90(_BASE[0]), np.rot90(_BASE[1], 3)]
SCENES = [np.ascontiguousarray(s) for s in SCENES]
TISSUES = ["Breast", "Colon", "Breast", "Liver", "Colon", "Breast", "Liver", "Colon"]
IDS = [f"img{i}" for i in range(len(SCENES))]
SPLIT = {"train": IDS[:2], "val": IDS[2:5], "test": IDS[5:]}


def classes_of(labels):
    """A PanNuke class (1-5) per nucleus: id mod 5 + 1."""
    return np.where(labels > 0, labels % 5 + 1, 0).astype(np.uint8)


def encode(labels, classes):
    image = np.zeros((*labels.shape, 3), np.uint8)
    image[..., 0] = np.where(labels > 0, 255, 0)
    image[..., 1] = labels * ID_STEP
    image[..., 2] = classes * CLASS_STEP
    return image


def make_store(path, with_classes: bool):
    with StoreWriter(path, "pannuke" if with_classes else "toy") as writer:
        for image_id, labels, tissue in zip(IDS, SCENES, TISSUES):
            classes = classes_of(labels)
            meta = {"tissue": tissue} if with_classes else {}
            writer.add(image_id, encode(labels, classes), labels, classes if with_classes else None, **meta)
    return path


@pytest.fixture(scope="module")
def pannuke_like(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("instances") / "pannuke.h5", True)


@pytest.fixture(scope="module")
def plain_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("instances") / "plain.h5", False)


@pytest.fixture
def split_csv(tmp_path):
    rows = [{"image_id": i, "split": name} for name, ids in SPLIT.items() for i in ids]
    write_csv(tmp_path / "split.csv", pd.DataFrame(rows))
    return tmp_path / "split.csv"


def oracle_logits(labels, classes, layout: OutputLayout) -> np.ndarray:
    """Logits whose `heads.probabilities` are the true target of `labels` (and its classes)."""
    sure = lambda mask: np.where(mask, 10.0, -10.0)  # noqa: E731
    if layout.target == "contour":
        contour = contour_target(labels)
        parts = [sure(contour == k) for k in range(3)]
    elif layout.target == "hv":
        hv = hv_target(labels)
        parts = [sure(labels > 0), hv[1], hv[2]]
    else:
        parts = [sure(labels > 0)]
    parts += [sure(classes == k) for k in range(layout.type_classes)]
    return np.stack(parts).astype(np.float32)


class Oracle(torch.nn.Module):
    """Reads the true nuclei back from each (unit-scaled) input image and returns the logits of their target."""

    def __init__(self, layout: OutputLayout, wrong_types: bool = False):
        super().__init__()
        self.layout, self.wrong_types = layout, wrong_types

    def forward(self, x):
        out = []
        for item in x.detach().cpu().numpy():
            pixels = np.rint(item * 255.0)
            labels = (np.rint(pixels[1] / ID_STEP) * (pixels[0] > 127)).astype(np.int32)
            classes = np.rint(pixels[2] / CLASS_STEP).astype(np.int32)
            if self.wrong_types:  # every nucleus typed as the next class
                classes = np.where(classes > 0, classes % 5 + 1, 0)
            out.append(oracle_logits(labels, classes, self.layout))
        return torch.from_numpy(np.stack(out))


def predictor_of(model, layout, **changes):
    """The model at the oracle's input (unit scaling, native size), three images per batch unless changed."""
    settings = {"batch_size": 3, "threshold": 0.5, "input_scaling": "unit", "layout": layout, **changes}
    config = InferenceConfig(SIZE, **settings)
    return Predictor(model, config, CPU)


def spec_of(target="binary", type_head=False, threshold=0.5):
    return resunet_spec(
        SIZE, batch_size=3, threshold=threshold, input_scaling="unit", target=target, type_head=type_head
    )


@pytest.fixture
def oracle_checkpoint(monkeypatch):
    """`predictor.load_trained` handing out the oracle of the spec's layout (what a perfect checkpoint would be)."""

    def load_trained(spec, model_path, threads=1, device=None):
        layout = run.layout_of(run.ModelSpec.from_dict(spec).training)
        return Oracle(layout), CPU, {"best": {"epoch": 1}}

    monkeypatch.setattr(predictor, "load_trained", load_trained)


# ---------------------------------------------------------------- binary: today's numbers exactly


def test_binary_evaluation_is_the_papers_postprocessing_exactly(dsb_store):
    store = Store(dsb_store)
    ids = store.ids[:4]
    papers = {"watershed": True, "min_distance": 3, "min_size": 4}
    params = configured_params("binary", {**papers, "tune": None, "tta": "none"}, 0.5)
    for chosen, expected_options in ((None, {}), (params, papers)):
        config = InferenceConfig(32, "tile", threshold=0.5, watershed=chosen)
        per_image = evaluate_split(Predictor(RedEcho(), config, CPU), store, ids, progress=False)
        for row in per_image.to_dict("records"):
            sample = store[row["image_id"]]
            expected = object_metrics(sample.instances, sample.image[..., 0] >= 124, **expected_options)
            assert {k: row[k] for k in expected} == expected, row["image_id"]
    assert not set(PANNUKE_COLUMNS) & set(per_image.columns)  # DSB2018: no nucleus classes


def test_a_label_map_with_one_nucleus_is_not_read_as_a_mask():
    one = np.zeros((20, 20), np.int32)
    one[2:6, 2:6] = one[12:16, 12:16] = 1  # one nucleus (id 1) in two pieces
    assert object_metrics(one, one)["n_pred"] == 2  # the 0/1 guess splits it into components
    scores = label_metrics(one, one)
    assert scores["n_pred"] == scores["n_true"] == 1 and scores["pq"] == 1.0


# ---------------------------------------------------------------- every target through evaluation


def test_oracle_targets_separate_touching_nuclei_that_binary_merges(plain_store):
    store = Store(plain_store)
    scores = {}
    for layout in (BINARY, CONTOUR, HV):
        oracle = predictor_of(Oracle(layout), layout, watershed=CLEAN[layout.target], size_policy="resize")
        per_image = evaluate_split(oracle, store, IDS, progress=False)
        scores[layout.target] = per_image
        assert per_image["dice"].min() > 0.999, layout  # the foreground is the truth for every target
    n_true = sum(len(np.unique(s)) - 1 for s in SCENES)
    for target in ("contour", "hv"):
        assert scores[target]["pq"].min() > 0.95, target
        assert scores[target]["n_pred"].sum() == n_true, target
    # Thresholding the same perfect foreground merges each touching pair into one object.
    assert scores["binary"]["n_pred"].sum() < n_true - 5
    assert scores["binary"]["pq"].mean() < scores["hv"]["pq"].mean() - 0.2
    with pytest.raises(DataFormatError, match="gives 1 output channels; target 'hv'"):
        evaluate_split(predictor_of(Oracle(BINARY), HV), store, IDS[:1], progress=False)


def test_tiled_and_resized_prediction_keep_every_channel(plain_store):
    image = Store(plain_store).image(IDS[1])
    truth = oracle_logits(SCENES[1], classes_of(SCENES[1]), HV_TYPES)
    whole = predictor_of(Oracle(HV_TYPES), HV_TYPES).predict_maps(image)
    assert whole.shape == (9, SIZE, SIZE)
    np.testing.assert_allclose(whole[1:3], truth[1:3])  # h and v pass through
    np.testing.assert_allclose(whole[3:].sum(axis=0), 1.0, atol=1e-6)  # the type softmax
    # A pixelwise model gives the same maps from overlapping tiles as from the whole image, every channel.
    conv = torch.nn.Conv2d(3, 9, 1)
    whole = Predictor(conv, InferenceConfig(SIZE, layout=HV_TYPES), CPU).predict_maps(image)
    tiled = Predictor(conv, InferenceConfig(32, "tile", 4, layout=HV_TYPES), CPU).predict_maps(image)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    # Resized: each channel is brought back to the native size.
    resized = Predictor(conv, InferenceConfig(32, layout=OutputLayout("contour", 6)), CPU).predict_maps(image[:40, :50])
    assert resized.shape == (9, 40, 50)
    np.testing.assert_allclose(resized[:3].sum(axis=0), 1.0, atol=1e-5)  # each softmax stays a distribution
    np.testing.assert_allclose(resized[3:].sum(axis=0), 1.0, atol=1e-5)


# ---------------------------------------------------------------- PanNuke columns


def test_pannuke_columns_with_and_without_a_type_head(pannuke_like):
    store = Store(pannuke_like)
    typed = evaluate_split(predictor_of(Oracle(HV_TYPES), HV_TYPES, watershed=CLEAN["hv"]), store, IDS)
    assert list(typed.columns[-len(PANNUKE_COLUMNS) - 2 :]) == [*PANNUKE_COLUMNS, "seconds", "warmup"]
    assert list(typed["tissue"]) == TISSUES
    assert typed["bpq"].min() > 0.95 and typed["mpq"].min() > 0.95
    for row, labels in zip(typed.to_dict("records"), SCENES):
        present = set(classes_of(labels)[labels > 0].tolist())
        for c in range(1, 6):  # a class absent from the image's truth is skipped (NaN), as the benchmark does
            assert np.isnan(row[f"pq_class_{c}"]) == (c not in present), (row["image_id"], c)
    # Without a type head only bPQ is scored; mPQ and the class PQs are left NaN.
    untyped = evaluate_split(predictor_of(Oracle(HV), HV, watershed=CLEAN["hv"]), store, IDS)
    np.testing.assert_allclose(untyped["bpq"], typed["bpq"])
    assert untyped[["mpq", *(f"pq_class_{c}" for c in range(1, 6))]].isna().all().all()
    # A wrong type for every nucleus costs mPQ, not bPQ.
    wrong_oracle = predictor_of(Oracle(HV_TYPES, wrong_types=True), HV_TYPES, watershed=CLEAN["hv"])
    wrong = evaluate_split(wrong_oracle, store, IDS)
    np.testing.assert_allclose(wrong["bpq"], typed["bpq"])
    assert (wrong["mpq"] == 0).all()


# ---------------------------------------------------------------- test-time augmentation


@pytest.mark.parametrize("mode", ["flips", "d4"])
def test_tta_of_a_pixelwise_model_is_the_plain_prediction(mode, plain_store):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 9, 1)  # 1 x 1 convolution: exactly equivariant for scalar channels
    config = InferenceConfig(SIZE, layout=OutputLayout("contour", 6))
    images = [Store(plain_store).image(i) for i in IDS[:3]]
    plain = Predictor(conv, config, CPU).predict_maps_batch(images)
    averaged = Predictor(conv, replace(config, tta=mode), CPU).predict_maps_batch(images)
    np.testing.assert_allclose(np.stack(averaged), np.stack(plain), atol=1e-5)
    with pytest.raises(ConfigError, match="postprocess.tta: 'rot'"):
        replace(config, tta="rot")


@pytest.mark.parametrize("mode", ["flips", "d4"])
def test_tta_turns_the_hv_vectors_back(mode, plain_store, monkeypatch):
    # The hv oracle is exactly equivariant (sub-pixel centres): TTA must give back its plain maps, h/v included.
    images = [Store(plain_store).image(i) for i in IDS[:2]]
    plain = np.stack(predictor_of(Oracle(HV), HV).predict_maps_batch(images))
    averaged = np.stack(predictor_of(Oracle(HV), HV, tta=mode).predict_maps_batch(images))
    np.testing.assert_allclose(averaged, plain, atol=1e-5)
    # Averaging h and v as plain channels (no sign change or swap) ruins them.
    monkeypatch.setattr(predictor, "HV_CHANNELS", None)
    naive = np.stack(predictor_of(Oracle(HV), HV, tta=mode).predict_maps_batch(images))
    assert np.abs(naive[:, 1:3] - plain[:, 1:3]).max() > 0.5
    np.testing.assert_allclose(naive[:, 0], plain[:, 0], atol=1e-5)


# ---------------------------------------------------------------- tuning


class RecordingStore(Store):
    """A store recording every image id whose pixels or masks are read."""

    read: list = []

    def __getitem__(self, image_id):
        RecordingStore.read.append(image_id)
        return super().__getitem__(image_id)

    def image(self, image_id):
        RecordingStore.read.append(image_id)
        return super().image(image_id)

    def mask(self, image_id):
        RecordingStore.read.append(image_id)
        return super().mask(image_id)


def test_tuning_reads_validation_images_only(plain_store, split_csv, oracle_checkpoint, monkeypatch):
    monkeypatch.setattr(run, "Store", RecordingStore)
    monkeypatch.setattr(RecordingStore, "read", [])
    grid = {"marker_threshold": [0.3, 0.6], "min_size": [0, 5000]}
    record = run.tune_from_spec(spec_of("contour"), "model.pt", plain_store, split_csv, {"grid": grid}, progress=False)
    assert RecordingStore.read and set(RecordingStore.read) <= set(SPLIT["val"])
    assert not set(RecordingStore.read) & set(SPLIT["test"] + SPLIT["train"])
    assert record["val_ids"] == SPLIT["val"] and record["val_images"] == 3 and record["split"] == "val"
    # The oracle's clean maps: any marker threshold works, a huge min_size removes every nucleus.
    assert record["params"]["min_size"] == 0 and record["mean_pq"] > 0.95
    assert [t["min_size"] for t in record["trials"]] == [0, 5000, 0, 5000]
    assert [t["mean_pq"] == 0 for t in record["trials"]] == [False, True, False, True]
    assert record["grid"] == grid and record["target"] == "contour" and record["tta"] == "none"
    # tune_images: a seeded sample of the validation split, the same on every run.
    RecordingStore.read = []
    sampled = run.tune_from_spec(spec_of("hv"), "m", plain_store, split_csv, {"tune_images": 2}, progress=False)
    assert sampled["val_ids"] == tuning_ids(SPLIT["val"], 2, 3) and len(set(RecordingStore.read)) == 2
    assert set(RecordingStore.read) <= set(SPLIT["val"])
    assert len(sampled["trials"]) == np.prod([len(v) for v in DEFAULT_GRIDS["hv"].values()])


def test_tuning_record_round_trip(plain_store, tmp_path):
    ids = SPLIT["val"]
    grid = {"foreground_threshold": [0.4, 0.5], "flood": ["boundary", "distance"]}
    result = tune_model(predictor_of(Oracle(CONTOUR), CONTOUR), Store(plain_store), ids, grid, progress=False)
    record = inference.tuning_record(result, ids, grid, "flips")
    write_json(tmp_path / "postprocess.json", record)
    assert read_tuned_params(tmp_path / "postprocess.json", "contour") == result.params
    assert json.loads((tmp_path / "postprocess.json").read_text())["trials"][0] == {
        "foreground_threshold": 0.4,
        "flood": "boundary",
        "mean_pq": result.trials[0][1],
    }
    with pytest.raises(DataFormatError, match="tuned for target 'contour', but the model's target is 'hv'"):
        read_tuned_params(tmp_path / "postprocess.json", "hv")
    write_json(tmp_path / "bad.json", {**record, "params": {"threshold": 0.5}})
    with pytest.raises(DataFormatError, match=r"bad.json params: unknown key\(s\) \['threshold'\]"):
        read_tuned_params(tmp_path / "bad.json", "contour")
    with pytest.raises(ConfigError, match="tune_images: 0"):
        tuning_ids(ids, 0, 1)


def test_evaluation_uses_the_tuned_params(plain_store, split_csv, oracle_checkpoint, tmp_path, caplog):
    spec = spec_of("contour")
    path = tmp_path / "postprocess.json"
    means = {}
    for min_size in (0, 5000):
        write_json(path, {"target": "contour", "params": params_to_dict(replace(CLEAN["contour"], min_size=min_size))})
        with caplog.at_level("INFO", logger="nucleiflow.segmentation.inference.predictor"):
            per_image, timing = run.evaluate_from_spec(
                spec, "m", plain_store, split_csv, "test", predictions_path=None, progress=False, tuned_path=path
            )
        assert f"min_size': {min_size}" in caplog.text and f"tuned on the validation split ({path})" in caplog.text
        means[min_size] = per_image["pq"].mean(), per_image["n_pred"].sum()
    assert means[0][0] > 0.95 and means[5000] == (0.0, 0)  # the file's settings, not the config's
    # An experiment that tunes needs its file; one that does not uses its fixed settings.
    with pytest.raises(ConfigError, match="postprocess.tune: the contour model's settings are tuned"):
        run.evaluate_from_spec(spec, "m", plain_store, split_csv, "test", predictions_path=None, progress=False)
    fixed = InferenceConfig.from_spec(spec_of("contour", threshold=0.4), {"tune": False, "min_size": 7})
    assert fixed.watershed == replace(DEFAULT_PARAMS["contour"], foreground_threshold=0.4, min_size=7)
    assert fixed.watershed_source == "the experiment's fixed postprocess settings"


def test_robustness_and_cross_dataset_use_the_tuned_params(plain_store, split_csv, oracle_checkpoint, tmp_path):
    spec = spec_of("hv")
    clean = tmp_path / "clean.csv"
    per_image, _ = run.evaluate_from_spec(
        spec, "m", plain_store, split_csv, "test", predictions_path=None, progress=False, postprocess={"tune": False}
    )
    write_csv(clean, per_image)
    robustness = {"perturbations": [{"name": "gaussian_blur", "severities": [0, 0.5]}]}
    for min_size, expect_nuclei in ((0, True), (5000, False)):
        path = tmp_path / f"postprocess_{min_size}.json"
        write_json(path, {"target": "hv", "params": params_to_dict(replace(CLEAN["hv"], min_size=min_size))})
        frame = sweep_from_spec(spec, "m", plain_store, split_csv, clean, robustness, tuned_path=path)
        blurred = frame[frame["severity"] > 0]
        assert len(blurred) == len(SPLIT["test"]) and (blurred["n_pred"].sum() > 0) == expect_nuclei
        cross = evaluate_on(spec, "m", plain_store, None, "all", tuned_path=path)
        assert len(cross) == len(IDS) and (cross["n_pred"].sum() > 0) == expect_nuclei


# ---------------------------------------------------------------- your own images


def test_predict_images_with_an_hv_type_head_model(pannuke_like, tmp_path):
    oracle = predictor_of(Oracle(HV_TYPES), HV_TYPES, watershed=CLEAN["hv"], batch_size=2)
    images, nuclei = predict_images(oracle, pannuke_like, tmp_path / "out", progress=False)
    assert list(nuclei.columns)[-2:] == ["type", "type_name"] and list(images["image_id"]) == IDS
    # No type names given: the type head's PanNuke classes name the ids (0: no type channel won).
    assert set(nuclei["type_name"]) <= {"nucleus", "neoplastic", "inflammatory", "connective", "dead", "epithelial"}
    for image_id, labels in zip(IDS, SCENES):
        predicted = tifffile.imread(tmp_path / "out" / "labels" / f"{image_id}.tif")
        pairs = set(zip(labels.ravel().tolist(), predicted.ravel().tolist()))
        assert len(pairs) == len(np.unique(labels)) == len(np.unique(predicted))  # the same nuclei
        prob = tifffile.imread(tmp_path / "out" / "probabilities" / f"{image_id}.tif")
        np.testing.assert_allclose(prob, np.where(labels > 0, 1 / (1 + np.exp(-10)), 1 / (1 + np.exp(10))), rtol=1e-5)
        table = pd.read_csv(tmp_path / "out" / "nuclei" / f"{image_id}.csv")
        truth = {int(p): int(t % 5 + 1) for t, p in pairs if p}
        assert dict(zip(table["label"], table["type"])) == truth
    assert len(nuclei) == images["n_nuclei"].sum()


def test_a_saved_hv_type_head_checkpoint_loads_and_predicts(pannuke_like, tmp_path):
    spec = spec_of("hv", type_head=True)
    model = build_from_spec(spec)
    payload = {"model": model.state_dict(), "identity": checkpoint_identity(spec), "best": {"epoch": 1}}
    save_checkpoint(tmp_path / "model.pt", payload)
    grid_free = {"tune": False, "min_size": 3, "tta": "flips"}
    loaded = Predictor.from_model_dir(tmp_path / "model.pt", spec=spec, postprocess=grid_free)
    assert loaded.config.layout == HV_TYPES and loaded.config.tta == "flips"
    assert loaded.config.watershed == replace(DEFAULT_PARAMS["hv"], min_size=3)
    maps = loaded.predict_maps(Store(pannuke_like).image(IDS[0]))
    assert maps.shape == (9, SIZE, SIZE) and maps[0].min() >= 0 and maps[0].max() <= 1
    np.testing.assert_allclose(maps[3:].sum(axis=0), 1.0, atol=1e-5)
    with pytest.raises(ConfigError, match="postprocess.tune"):
        Predictor.from_model_dir(tmp_path / "model.pt", spec=spec, postprocess={})  # hv tunes by default
