"""Model export: BioImage Model Zoo packages (format 0.5) of a trained cell, validated, tested and read back."""

import copy
import json
import os
import pickle
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, SNAKEMAKE, resunet_spec, threads_per_worker
from scipy.ndimage import gaussian_filter
from snakemake.utils import validate

from nucleiflow.errors import ConfigError, DataFormatError
from nucleiflow.export.load import is_package, load_predictor, open_package, package_meta
from nucleiflow.export.network import GaussianPrefilter, gaussian_kernel, network_from_model
from nucleiflow.export.package import export_model, validate_package
from nucleiflow.segmentation.inference.predictor import NO_TTA, Predictor
from nucleiflow.segmentation.training.data import to_tensor
from nucleiflow.store import Store
from nucleiflow.workflow.cells import inference_package
from nucleiflow.workflow.checks import check_config
from nucleiflow.workflow.export import check_export, export_cells, export_settings, export_targets

SCHEMA = REPO / "schemas" / "config.schema.yaml"
SIZE = 32
# bioimageio.core 0.11 needs bioimageio.spec 0.5.12, which needs pydantic < 2.14: its own environment
# (make bioimageio-venv) on top of the project's.
BIOIMAGEIO_PYTHON = Path(os.environ.get("NUCLEIFLOW_BIOIMAGEIO_PYTHON", REPO / ".venv-bioimageio" / "bin" / "python"))


THREADS = threads_per_worker()


def spec_of(target="contour", prefilter_sigma=0.0, scaling="imagenet"):
    return resunet_spec(
        SIZE,
        dataset="dsb2018",
        experiment="exported",
        batch_size=4,
        lr=0.003,
        size_policy="tile",
        prefilter_sigma=prefilter_sigma,
        input_scaling=scaling,
        target=target,
        lr_patience=5,
        lr_factor=0.5,
        early_stopping_patience=0,
        keep_last_checkpoint=False,
        mask_preprocessing="none",
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory, dsb_store):
    """A contour residual U-Net trained one epoch on the synthetic DSB2018 store, with its split."""
    from nucleiflow.segmentation.run import train_from_spec

    base = tmp_path_factory.mktemp("trained")
    ids = Store(dsb_store).ids
    split = pd.DataFrame({"image_id": ids, "split": ["train"] * 6 + ["val"] * 2 + ["test"] * (len(ids) - 8)})
    split.to_csv(base / "split.csv", index=False)
    spec = spec_of()
    train_from_spec(spec, dsb_store, base / "split.csv", None, base / "model", threads=THREADS, progress=False)
    return {"spec": spec, "model_dir": base / "model", "store": dsb_store, "split": base / "split.csv", "base": base}


@pytest.fixture(scope="module")
def exported(trained):
    base = trained["base"] / "export"
    out = {"package": base / "package", "zip": base / "bioimageio.zip", "card": base / "model_card.html"}
    per_image = pd.DataFrame({"image_id": ["a", "b"], "dice": [0.8, 0.6], "pq": [0.5, 0.3], "aji": [0.4, 0.2]})
    per_image.to_csv(trained["base"] / "test_per_image.csv", index=False)
    evaluation = {"path": str(trained["base"] / "test_per_image.csv"), "command": "snakemake results/x.csv"}
    postprocess = {"tune": False, "tta": "flips"}
    meta = export_model(
        trained["spec"],
        trained["model_dir"],
        trained["store"],
        trained["split"],
        out,
        postprocess=postprocess,
        evaluation=evaluation,
        settings={"dataset_format": "dsb2018", "license": "CC-BY-4.0", "microns_per_pixel": 0.5},
        threads=THREADS,
    )
    return {**out, "meta": meta, "postprocess": postprocess}


def test_prefilter_is_scipys_gaussian_filter():
    image = np.random.default_rng(0).random((3, 40, 33)).astype(np.float32)
    ours = GaussianPrefilter(1.5)(torch.from_numpy(image)[None])[0].numpy()
    np.testing.assert_allclose(ours, gaussian_filter(image, sigma=(0, 1.5, 1.5)), atol=1e-5)
    assert len(gaussian_kernel(1.5)) == 2 * 6 + 1 and float(gaussian_kernel(1.5).sum()) == pytest.approx(1.0)


def test_package_layout_description_and_card(exported):
    package = exported["package"]
    assert {p.name for p in package.iterdir()} >= {
        "rdf.yaml",
        "weights.pt",
        "model.torchscript.pt",
        "test_input.npy",
        "test_output.npy",
        "cover.png",
        "postprocess.json",
        "README.md",
        "environment.yaml",
    }
    validate_package(package)  # bioimageio.spec, with the files' hashes
    validate_package(exported["zip"])
    rdf = yaml.safe_load((package / "rdf.yaml").read_text())
    assert rdf["type"] == "model" and rdf["format_version"].startswith("0.5")
    out = rdf["outputs"][0]
    assert [a.get("channel_names") for a in out["axes"] if a["type"] == "channel"] == [
        ["background", "interior", "boundary"]
    ]
    steps = {step["id"]: step.get("kwargs", {}) for step in rdf["inputs"][0]["preprocessing"]}
    assert steps["fixed_zero_mean_unit_variance"]["mean"][0] == pytest.approx(0.485 * 255)
    architecture = rdf["weights"]["pytorch_state_dict"]["architecture"]
    assert (
        architecture["import_from"] == "nucleiflow.export.network"
        and architecture["kwargs"]["spec"]["arch"] == "resunet"
    )
    assert rdf["weights"]["torchscript"]["parent"] == "pytorch_state_dict"
    # The test tensors: a test image's central tile and the workflow's maps for it (softmax: sums to 1).
    x, y = np.load(package / "test_input.npy"), np.load(package / "test_output.npy")
    assert x.shape == (1, 3, SIZE, SIZE) and x.min() >= 0 and x.max() <= 255
    assert y.shape == (1, 3, SIZE, SIZE) and np.allclose(y.sum(axis=1), 1, atol=1e-5)
    assert exported["meta"]["network_deviation"] < 1e-5
    record = json.loads((package / "postprocess.json").read_text())
    assert record["target"] == "contour" and record["tta"] == "flips" and "marker_threshold" in record["params"]
    card = (package / "README.md").read_text()
    for section in ("## Training data and split", "## Test-split metrics", "## Intended use", "## Known limits"):
        assert section in card
    assert "| dsb2018 (s/test) | 2 | 0.700 |" in card and "snakemake results/x.csv" in card
    assert "1 run of 1 configured" in card
    assert "<table>" in exported["card"].read_text() and "data:image/png;base64," in exported["card"].read_text()
    with zipfile.ZipFile(exported["zip"]) as archive:
        assert "rdf.yaml" in archive.namelist() and "weights.pt" in archive.namelist()


@pytest.mark.parametrize("form", ["package", "zip"])
def test_predicting_from_the_package_equals_the_model_folder(trained, exported, form):
    source = exported[form]
    assert is_package(source) and not is_package(trained["model_dir"])
    from_package = load_predictor(source, device="cpu", threads=THREADS)
    from_folder = load_predictor(
        trained["model_dir"], postprocess=exported["postprocess"], device="cpu", threads=THREADS
    )
    assert from_package.config == from_folder.config and from_package.config.tta == "flips"
    assert from_package.spec == from_folder.spec
    store = Store(trained["store"])
    for image_id in store.ids[:3]:
        image = store.image(image_id)
        maps = from_package.predict_maps(image)
        np.testing.assert_array_equal(maps, from_folder.predict_maps(image))
        labels, _ = from_package.nuclei_from_maps(maps)
        np.testing.assert_array_equal(labels, from_folder.nuclei_from_maps(maps)[0])


def test_a_tuned_model_keeps_its_tuned_settings_through_the_package(trained, tmp_path):
    from nucleiflow.segmentation.representation.postprocess import WatershedParams, params_to_dict

    tuned = params_to_dict(WatershedParams(marker_threshold=0.7, min_size=3))
    record = {"target": "contour", "params": tuned, "mean_pq": 0.42, "split": "val", "tta": "none"}
    tuned_path = tmp_path / "postprocess.json"
    tuned_path.write_text(json.dumps(record))
    out = {"package": tmp_path / "package", "zip": tmp_path / "bioimageio.zip", "card": tmp_path / "card.html"}
    export_model(
        trained["spec"], trained["model_dir"], trained["store"], trained["split"], out,
        postprocess={}, tuned_path=tuned_path, settings={"dataset_format": "dsb2018"}, threads=THREADS,
    )  # fmt: skip
    attachment = json.loads((out["package"] / "postprocess.json").read_text())
    assert attachment["tuned"] is True and attachment["mean_pq"] == 0.42 and attachment["params"] == tuned
    assert "mean validation PQ 0.420" in (out["package"] / "README.md").read_text()
    from_package = load_predictor(out["zip"], device="cpu", threads=THREADS)
    from_folder = load_predictor(trained["model_dir"], postprocess={}, tuned_path=tuned_path, device="cpu")
    assert from_package.config.watershed == from_folder.config.watershed == WatershedParams(**tuned)


def test_bioimageio_core_model_test_reproduces_the_test_tensors(exported):
    if not BIOIMAGEIO_PYTHON.exists():
        pytest.skip(f"{BIOIMAGEIO_PYTHON} missing: make bioimageio-venv (bioimageio.core 0.11 needs pydantic < 2.14)")
    code = (
        "import sys\n"
        "from bioimageio.core import test_model\n"
        "summary = test_model(sys.argv[1])\n"
        "for detail in summary.details:\n"
        "    print(detail.status, detail.name, [e.msg[:200] for e in detail.errors])\n"
        "print('STATUS', summary.status)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(BIOIMAGEIO_PYTHON), "-c", code, str(exported["zip"])], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[-1] == "STATUS passed", result.stdout
    reproduced = [line for line in lines if "Reproduce test outputs" in line]
    assert len(reproduced) == 2 and all(line.startswith("passed") for line in reproduced)  # both weight formats


def test_prefiltered_network_matches_the_workflow_within_8_bit_rounding(trained):
    """With a pre-filter the network filters in float; the workflow filters the 8-bit image (rounding)."""
    from dataclasses import replace

    spec = copy.deepcopy(trained["spec"])
    spec["training"]["prefilter_sigma"] = 1.5
    predictor = load_predictor(trained["model_dir"], postprocess={"tune": False}, device="cpu", threads=THREADS)
    workflow = Predictor(predictor.model, replace(predictor.config, prefilter_sigma=1.5, tta=NO_TTA), predictor.setup)
    store = Store(trained["store"])
    image = np.ascontiguousarray(store.image(store.ids[0])[:SIZE, :SIZE])
    network = network_from_model(spec, predictor.model)
    with torch.no_grad():
        ours = network(to_tensor(image, "imagenet")[None])[0].numpy()
    assert np.abs(ours - workflow.predict_maps(image)).max() < 0.05


def test_open_package_rejects_what_is_not_one(tmp_path):
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as archive:
        archive.writestr("notes.txt", "x")
    with pytest.raises(DataFormatError, match="plain.zip: not a model package"):
        open_package(plain)
    with pytest.raises(DataFormatError, match="no such model package"):
        open_package(tmp_path / "missing.zip")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "rdf.yaml").write_text("type: model\nname: x\n")
    with pytest.raises(DataFormatError, match="without config.nucleiflow"):
        open_package(foreign)


def demo_config() -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    validate(config, str(SCHEMA))
    return config


def test_export_config_selects_cells_and_checks_labels():
    config = demo_config()
    assert export_targets(config) == ["results/dsb2018/dsb_resunet_70_20_10/export/resunet/none/none/bioimageio.zip"]
    assert [cell.reg for cell in export_cells(config)] == ["none"]  # not the stain_aug cell
    assert export_settings(config, "dsb_resunet_70_20_10")["license"] == "CC-BY-4.0"
    assert export_settings(config, "pannuke_grid")["license"] == "CC-BY-NC-SA-4.0"  # PanNuke's release licence
    bad = copy.deepcopy(config)
    bad["segmentation"]["dsb_contour"]["export"] = {"models": ["unet/resnet50/none"]}
    with pytest.raises(ConfigError, match="segmentation.dsb_contour.export.models: 'unet/resnet50/none'"):
        check_export(bad)


def test_inference_accepts_a_package_as_model(tmp_path):
    config = demo_config()
    config["inference"]["demo_cells"]["model"] = "results/dsb2018/x/export/resunet/none/none/bioimageio.zip"
    validate(config, str(SCHEMA))
    check_config(config)  # a zip is not read as <experiment>/<arch>/<encoder>/<reg>
    assert inference_package(config, "demo_cells").endswith("bioimageio.zip")
    config["inference"]["demo_cells"]["model"] = str(tmp_path)
    assert inference_package(config, "demo_cells") == str(tmp_path)
    config["inference"]["demo_cells"]["model"] = "dsb_resunet/resunet/none/none"
    assert inference_package(config, "demo_cells") is None


def test_the_package_records_type_names_and_resolution(trained, exported):
    meta = exported["meta"]
    assert meta["class_names"] == Store(trained["store"]).class_names == ["background", "nucleus"]
    assert meta["microns_per_pixel"] == 0.5
    assert package_meta(exported["zip"]) == package_meta(exported["package"]) == yaml.safe_load(yaml.safe_dump(meta))
    assert "0.5 um per pixel" in (exported["package"] / "README.md").read_text()
    with pytest.raises(DataFormatError, match="not a model package"):
        package_meta(trained["split"])
    config = demo_config()
    assert export_settings(config, "pannuke_grid")["microns_per_pixel"] == 0.25  # PanNuke: 40x
    assert export_settings(config, "dsb_resunet_70_20_10")["microns_per_pixel"] is None  # DSB2018: no pixel size


def slides_config_with(model: str, **entry) -> dict:
    config = demo_config()
    config["slides"]["demo"] = {**config["slides"]["demo"], "model": model, **entry}
    validate(config, str(SCHEMA))
    return config


@pytest.mark.parametrize("form", ["package", "zip"])
def test_the_slide_stage_reads_a_package_as_its_model_folder(trained, exported, form):
    from nucleiflow.slides.config import model_mpp, slide_package
    from nucleiflow.slides.model import load_slide_model

    config = slides_config_with(str(exported[form]))
    assert slide_package(config, "demo") == str(exported[form])
    assert model_mpp(config, "demo") == 0.5  # the training resolution the package records
    assert model_mpp(slides_config_with(str(exported[form]), mpp=0.25), "demo") == 0.25
    with pytest.raises(ConfigError, match="slides.demo.mpp: the model package 'results/x/bioimageio.zip'"):
        model_mpp(slides_config_with("results/x/bioimageio.zip"), "demo")  # not exported yet: give mpp
    from_package = load_slide_model(None, exported[form], postprocess={"tta": "none"}, tile_size=SIZE, device="cpu")
    from_folder = load_slide_model(
        trained["spec"],
        trained["model_dir"] / "model.pt",
        postprocess={**exported["postprocess"], "tta": "none"},
        tile_size=SIZE,
        device="cpu",
    )
    assert from_package.predictor.config == from_folder.predictor.config and from_package.settings == "tile32/tta-none"
    store = Store(trained["store"])
    tiles = [np.ascontiguousarray(store.image(i)[:SIZE, :SIZE]) for i in store.ids[:2]]
    for a, b in zip(from_package.predict_maps_batch(tiles), from_folder.predict_maps_batch(tiles), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(from_package.nuclei(a)[0], from_folder.nuclei(b)[0])
        # What a post-processing worker process receives: the settings alone, pickled, the same nuclei.
        finder = pickle.loads(pickle.dumps(from_package.postprocessor()))
        np.testing.assert_array_equal(finder.nuclei(a)[0], from_folder.nuclei(b)[0])


def test_a_slides_dry_run_takes_the_package_instead_of_the_training_outputs(checkout, exported, tmp_path):
    from nucleiflow.paths import SLIDE_SUMMARY

    SUMMARY = SLIDE_SUMMARY.format(name="demo", slide="demo_slide")
    config = {"slides": {"demo": {"model": str(exported["zip"]), "mpp": 0.5}}}
    path = tmp_path / "slides_package.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [SNAKEMAKE, "-n", "--cores", "1", "--configfile", "config.yaml", str(path), "--", SUMMARY],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "rule slide_segment" in output and str(exported["zip"]) in output
    assert "train_segmentation" not in output  # the package replaces the model's training outputs
