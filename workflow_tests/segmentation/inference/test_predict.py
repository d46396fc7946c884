"""The predict stage and cross-dataset evaluation: tiles, per-nucleus tables, and real images end to end."""

import copy

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
from conftest import REPO, Brightness, threads_per_worker
from snakemake.utils import validate

from nucleiflow.config import ModelSpec
from nucleiflow.device import setup_device
from nucleiflow.errors import ConfigError
from nucleiflow.segmentation.inference.predict import evaluate_on, nucleus_table, predict_images
from nucleiflow.segmentation.inference.predictor import InferenceConfig, Predictor
from nucleiflow.segmentation.reports.predictions import cross_dataset_table, summary_table
from nucleiflow.store import Store
from nucleiflow.workflow.cells import evaluate_on_targets, inference_cell, model_spec
from nucleiflow.workflow.checks import check_config

SCHEMA = REPO / "schemas" / "config.schema.yaml"


def disc_image(shape, centres, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    truth = np.zeros(shape, np.int32)
    for k, (cy, cx) in enumerate(centres, start=1):
        truth[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = k
    image = np.repeat(np.where(truth > 0, 255, 0).astype(np.uint8)[..., None], 3, axis=2)
    return image, truth


def test_tiled_prediction_keeps_nuclei_whole_across_tile_borders(tmp_path):
    # 64 px tiles, stride 32: every disc is centred on a tile border, so each crosses two or four tiles.
    centres = [(y, x) for y in range(32, 640, 96) for x in range(64, 760, 128)] + [(639, 300), (350, 799)]
    image, truth = disc_image((650, 810), centres, radius=11)
    folder = tmp_path / "large" / "images"
    folder.mkdir(parents=True)
    tifffile.imwrite(folder / "big.tif", image)
    config = InferenceConfig(64, "tile", batch_size=16, threshold=0.5)
    predictor = Predictor(Brightness(), config, setup_device("cpu", 1, False))
    images, nuclei = predict_images(predictor, tmp_path / "large", tmp_path / "out", progress=False)
    labels = tifffile.imread(tmp_path / "out" / "labels" / "big.tif")
    assert labels.dtype == np.uint16 and labels.shape == truth.shape
    # One label per disc, each exactly the disc: nothing cut at a border, nothing counted twice.
    assert images.loc[0, "n_nuclei"] == len(centres) == labels.max()
    pairs = set(zip(truth[truth > 0].tolist(), labels[truth > 0].tolist()))
    assert len(pairs) == len(centres) and not ((labels > 0) & (truth == 0)).any()
    assert sorted(nuclei["area"]) == sorted(np.bincount(truth.ravel())[1:])
    prob = tifffile.imread(tmp_path / "out" / "probabilities" / "big.tif")
    assert prob.dtype == np.float32 and prob.shape == truth.shape
    overlay = np.asarray(__import__("PIL.Image").Image.open(tmp_path / "out" / "overlays" / "big.png"))
    assert overlay.shape == (650, 810, 3) and ((overlay == (255, 255, 0)).all(axis=2)).sum() > 0


def test_nucleus_table_columns_and_empty_image():
    image, truth = disc_image((40, 40), [(20, 20)], radius=5)
    table = nucleus_table("x", truth, image)
    assert list(table.columns)[:3] == ["image_id", "label", "centroid_y"] and len(table) == 1
    assert table.loc[0, "area"] == (truth > 0).sum() and table.loc[0, "mean_red"] == 255
    assert table.loc[0, "centroid_y"] == pytest.approx(20) and 0 < table.loc[0, "solidity"] <= 1
    assert nucleus_table("y", np.zeros((5, 5), np.int32), image[:5, :5]).empty


def test_a_type_heads_nuclei_are_named_with_the_training_datasets_types():
    from nucleiflow.catalog import CONSEP_CLASSES, PANNUKE_CLASS_NAMES
    from nucleiflow.segmentation.inference.predictor import resolve_type_names
    from nucleiflow.segmentation.training.heads import OutputLayout

    image, truth = disc_image((40, 80), [(20, 20), (20, 60)], radius=5)
    consep = resolve_type_names(OutputLayout("hv", 6), ["background", *CONSEP_CLASSES])
    assert consep == ("background", *CONSEP_CLASSES, "type_5")  # the head has six channels, CoNSeP four types
    assert resolve_type_names(OutputLayout("hv", 6), None) == PANNUKE_CLASS_NAMES
    assert resolve_type_names(OutputLayout("binary", 0), ["background", "x"]) == ()
    table = nucleus_table("x", truth, image, {1: 3, 2: 0}, consep)
    assert table["type"].tolist() == [3, 0] and table["type_name"].tolist() == ["epithelial", "nucleus"]
    images = pd.DataFrame({"image_id": ["x"], "height": [40], "width": [80], "n_nuclei": [2]}).assign(
        foreground_fraction=0.1, seconds=0.0
    )
    summary = summary_table(images, table).set_index("image")
    assert summary.loc["all images", "fraction_epithelial"] == 0.5 and summary.loc["x", "fraction_nucleus"] == 0.5


def test_summary_table_counts_and_density():
    images = pd.DataFrame(
        {"image_id": ["a", "b"], "height": [100, 100], "width": [100, 100], "n_nuclei": [2, 1]}
    ).assign(foreground_fraction=0.1, seconds=0.0)
    nuclei = pd.DataFrame({"image_id": ["a", "a", "b"], "area": [10, 30, 20]})
    table = summary_table(images, nuclei).set_index("image")
    assert table.loc["a", "nuclei"] == 2 and table.loc["all images", "nuclei"] == 3
    assert table.loc["a", "density_per_mpx"] == pytest.approx(2 / 1e4 * 1e6)
    assert table.loc["all images", "area_median"] == 20


def demo_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_inference_and_evaluate_on_config_checks():
    config = demo_config()
    validate(config, str(SCHEMA))
    assert inference_cell(config, "demo_cells").experiment == "dsb_resunet"
    targets = evaluate_on_targets(config, "dsb_resunet_70_20_10")
    assert targets == [{"dataset": "pannuke", "manifest": "paper", "subset": "test"}]
    bad = copy.deepcopy(config)
    bad["inference"]["demo_cells"]["model"] = "dsb_resunet/unet/resnet50/none"
    with pytest.raises(ConfigError, match=r"inference.demo_cells.model \(model of dsb_resunet\).*resunet/none/none"):
        check_config(bad)
    bad = copy.deepcopy(config)
    bad["segmentation"]["dsb_resunet_70_20_10"]["evaluate_on"] = [{"dataset": "nucrec"}]
    with pytest.raises(ConfigError, match=r"evaluate_on\[0\].dataset"):
        check_config(bad)


# ---------------------------------------------------------------- real images end to end


@pytest.fixture(scope="module")
def real_folder(tmp_path_factory, shared_dsb):  # shared_dsb skips when ../shared is absent
    from nucleiflow.datasets.dsb2018 import find_samples, read_sample

    root = tmp_path_factory.mktemp("real") / "dsb_tiff"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    truth = {}
    for k, files in enumerate(find_samples(shared_dsb)):
        image, instances, _ = read_sample(files)
        if k % 3 == 0:  # a third as 16-bit grey microscope exports
            tifffile.imwrite(root / "images" / f"{files.image_id}.tif", image[..., 0].astype(np.uint16) * 257)
        else:
            tifffile.imwrite(root / "images" / f"{files.image_id}.tif", image)
        tifffile.imwrite(root / "masks" / f"{files.image_id}.tif", instances.astype(np.uint16))
        truth[files.image_id] = instances
    return root, truth


def test_real_images_train_predict(real_folder, tmp_path):
    from nucleiflow.datasets.image_folders import convert_image_folders
    from nucleiflow.segmentation.run import train_from_spec
    from nucleiflow.splits import make_split

    root, truth = real_folder
    assert len(truth) == 45
    convert_image_folders([root], tmp_path / "store.h5", progress=False)
    store = Store(tmp_path / "store.h5")
    assert store.labelled_ids == sorted(truth)
    for image_id, instances in truth.items():  # the store holds the masks exactly: counts and areas
        np.testing.assert_array_equal(store[image_id].instances, instances)
    config = {
        "seed": 3,
        "datasets": {
            "mine": {
                "format": "image_folders",
                "files": {"dsb_tiff": {"url": str(root)}},
                "splits": {"s": {"scheme": "proportions", "fractions": {"train": 0.7, "val": 0.15, "test": 0.15}}},
            }
        },
        "segmentation": {
            "mine_resunet": {
                "dataset": "mine",
                "split": "s",
                "models": [{"arch": "resunet"}],
                "training": {"epochs": 4, "batch_size": 4, "lr": 0.003, "loss": "dice", "input_size": 64},
                "postprocess": {"watershed": True, "min_size": 4},
                "evaluate_on": [{"dataset": "mine", "split": "all"}],
            }
        },
        "inference": {"mine": {"model": "mine_resunet/resunet/none/none", "images": "mine"}},
    }
    validate(config, str(SCHEMA))  # fills the defaults
    check_config(config)
    manifest = make_split(store.metadata, config["datasets"]["mine"]["splits"]["s"], config["seed"])
    manifest.to_csv(tmp_path / "split.csv", index=False)
    cell = inference_cell(config, "mine")
    spec = model_spec(config, **cell.wildcards).to_dict()
    spec["training"] |= {"device": "cpu", "amp": False}
    spec = ModelSpec.from_dict(spec)
    train_from_spec(
        spec, store.path, tmp_path / "split.csv", None, tmp_path / "model", threads=threads_per_worker(), progress=False
    )

    postprocess = config["segmentation"]["mine_resunet"]["postprocess"]
    # The folder alone: the spec it was trained from is read from its train_info.json.
    predictor = Predictor.from_model_dir(tmp_path / "model", threads=threads_per_worker(), postprocess=postprocess)
    assert predictor.spec == spec
    images, nuclei = predict_images(predictor, store.path, tmp_path / "pred", progress=False)
    assert list(images["image_id"]) == store.ids
    for row in images.itertuples():
        labels = tifffile.imread(tmp_path / "pred" / "labels" / f"{row.image_id}.tif")
        assert labels.shape == truth[row.image_id].shape == store.image(row.image_id).shape[:2]
        table = pd.read_csv(tmp_path / "pred" / "nuclei" / f"{row.image_id}.csv")
        ids = np.unique(labels[labels > 0])
        assert row.n_nuclei == len(table) == len(ids) and list(table["label"]) == list(ids)
        assert list(table["area"]) == list(np.bincount(labels.ravel())[ids])
    assert summary_table(images, nuclei).iloc[-1]["nuclei"] == len(nuclei) > 0

    per_image = evaluate_on(
        spec,
        tmp_path / "model" / "model.pt",
        store.path,
        None,
        "all",
        threads=threads_per_worker(),
        postprocess=postprocess,
    )
    assert sorted(per_image["image_id"]) == sorted(truth)
    assert list(per_image["n_true"]) == [len(np.unique(truth[i])) - 1 for i in per_image["image_id"]]
    runs = [{"model": "m", "trained_on": "mine (s)", "tested_on": "mine (all)", "per_image": per_image}]
    table = cross_dataset_table(runs)
    assert table.loc[0, "images"] == 45 and 0 <= table.loc[0, "dice"] <= 1
