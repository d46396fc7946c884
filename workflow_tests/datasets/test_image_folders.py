"""The image_folders format: your own images/ (+ optional masks/) folder -> store."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import assert_store_fails_cleanly
from PIL import Image

from nucleiflow.datasets import CONVERTERS
from nucleiflow.datasets.image_folders import convert_image_folders, to_rgb_uint8
from nucleiflow.errors import ConfigError, DataFormatError
from nucleiflow.store import Store
from nucleiflow.workflow.checks import check_config


def labels_with_two_nuclei(shape=(40, 50)) -> np.ndarray:
    labels = np.zeros(shape, np.uint16)
    labels[5:15, 5:15] = 1
    labels[15:25, 8:18] = 2  # touches nucleus 1: a label image keeps them apart
    labels[28:35, 30:45] = 7  # ids need not be contiguous
    return labels


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    grey16 = rng.integers(1000, 3000, (40, 50), dtype=np.uint16)
    tifffile.imwrite(root / "images" / "a16.tif", grey16)
    tifffile.imwrite(root / "masks" / "a16.tif", labels_with_two_nuclei())
    rgb = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "images" / "b_rgb.png")
    binary = (labels_with_two_nuclei() > 0).astype(np.uint8) * 255
    Image.fromarray(binary).save(root / "masks" / "b_rgb.png")
    pages = rng.integers(0, 60000, (2, 40, 50), dtype=np.uint16)  # two channel pages
    tifffile.imwrite(root / "images" / "c_pages.tif", pages)
    Image.fromarray(rgb).save(root / "images" / "d_nomask.png")
    return root


def test_registered():
    assert CONVERTERS["image_folders"] is convert_image_folders


def test_converts_labels_binary_and_unlabelled(folder, tmp_path):
    summary = convert_image_folders([folder], tmp_path / "store.h5", progress=False)
    assert summary["labelled"] == 2 and summary["unlabelled"] == 2
    store = Store(tmp_path / "store.h5")
    meta = store.metadata.set_index("image_id")
    assert list(meta.index) == ["a16", "b_rgb", "c_pages", "d_nomask"]
    assert store.labelled_ids == ["a16", "b_rgb"]
    assert meta.loc["a16", "mask_kind"] == "labels" and meta.loc["a16", "n_nuclei"] == 3
    # A binary mask: connected components, so the two touching squares are one nucleus.
    assert meta.loc["b_rgb", "mask_kind"] == "binary" and meta.loc["b_rgb", "n_nuclei"] == 2
    np.testing.assert_array_equal(store["a16"].instances, labels_with_two_nuclei().astype(np.int32))
    assert meta.loc["a16", "scaling"] == "percentile_0.5_99.5" and meta.loc["b_rgb", "scaling"] == "none"
    image = store.image("c_pages")
    assert image.shape == (40, 50, 3) and image[..., 2].max() == 0 and image[..., 0].max() == 255
    # An image without a mask is stored unlabelled: readable for prediction, refused for training.
    assert store.image("d_nomask").shape == (40, 50, 3)
    assert not meta.loc["d_nomask", "labelled"] and meta["n_nuclei"].isna()["d_nomask"]
    with pytest.raises(DataFormatError, match="d_nomask.*unlabelled"):
        store["d_nomask"]


def test_stretch_rule():
    grey = np.linspace(0, 4000, 1000).astype(np.uint16).reshape(20, 50)
    rgb, scaling = to_rgb_uint8(grey, Path("x.tif"))
    assert scaling == "percentile_0.5_99.5" and rgb.dtype == np.uint8 and rgb.shape == (20, 50, 3)
    assert rgb.min() == 0 and rgb.max() == 255 and np.array_equal(rgb[..., 0], rgb[..., 2])
    flat, _ = to_rgb_uint8(np.full((4, 4), 9, np.uint16), Path("x.tif"))
    assert not flat.any()
    kept, scaling = to_rgb_uint8(np.full((4, 4), 9, np.uint8), Path("x.png"))
    assert scaling == "none" and (kept == 9).all()


@pytest.mark.parametrize(
    "damage, pattern",
    [
        (lambda r: tifffile.imwrite(r / "masks" / "a16.tif", np.zeros((10, 10), np.uint16)), r"a16.tif: mask size"),
        (lambda r: tifffile.imwrite(r / "masks" / "zz.tif", np.zeros((40, 50), np.uint16)), r"zz.tif: mask without"),
        (lambda r: (r / "images" / "b_rgb.png").write_bytes(b"not a png"), r"b_rgb.png: unreadable"),
        (lambda r: tifffile.imwrite(r / "masks" / "a16.tif", -np.ones((40, 50), np.int16)), r"a16.tif: .*negative"),
        (lambda r: tifffile.imwrite(r / "masks" / "a16.tif", np.ones((40, 50), np.float32)), r"a16.tif: .*float32"),
        (lambda r: (r / "images" / "notes.txt").write_text("x"), r"notes.txt: not an image file"),
    ],
)
def test_bad_input_fails_cleanly(folder, tmp_path, damage, pattern):
    damage(folder)
    assert_store_fails_cleanly(convert_image_folders, [folder], tmp_path / "store.h5", pattern)


def test_folder_entries_need_image_folders():
    config = {
        "seed": 1,
        "datasets": {"mine": {"format": "dsb2018", "files": {"mine": {"url": "data/mine"}}}},
    }
    with pytest.raises(ConfigError, match="datasets.mine.files.mine: a folder entry .* needs format image_folders"):
        check_config(config)
    config["datasets"]["mine"]["format"] = "image_folders"
    check_config(config)
