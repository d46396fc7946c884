"""Synthetic releases: exact layouts, dtypes and value ranges, and byte-for-byte reproducibility."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nucleiflow.download import sha256sum
from nucleiflow.synthetic import demo, pannuke
from nucleiflow.synthetic.__main__ import main as cli_main
from nucleiflow.synthetic.dsb2018 import write_stage1_zip
from nucleiflow.synthetic.nucrec import write_nucrec_zip
from nucleiflow.synthetic.pannuke import write_fold_zip

HEX64 = re.compile(r"[0-9a-f]{64}")
SMALL = {"pannuke_images_per_fold": 2, "dsb_images": 6, "nucrec_images_per_class": 6}


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, Path]:
    return demo.write_demo_archives(tmp_path_factory.mktemp("demo"), seed=7, **SMALL)


def read_npy(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    with archive.open(name) as handle:
        return np.load(io.BytesIO(handle.read()), allow_pickle=False)


def read_png(archive: zipfile.ZipFile, name: str) -> Image.Image:
    image = Image.open(io.BytesIO(archive.read(name)))
    image.load()
    return image


def test_demo_writes_every_archive(archives):
    assert sorted(archives) == [
        "dsb2018/stage1_train.zip",
        "nucrec/nucrec.zip",
        "pannuke/fold_1.zip",
        "pannuke/fold_2.zip",
        "pannuke/fold_3.zip",
    ]
    for name, path in archives.items():
        assert path.as_posix().endswith(name) and zipfile.is_zipfile(path)


@pytest.mark.parametrize("fold", [1, 2, 3])
def test_pannuke_fold_layout_and_arrays(archives, fold):
    with zipfile.ZipFile(archives[f"pannuke/fold_{fold}.zip"]) as archive:
        assert sorted(archive.namelist()) == [
            f"Fold {fold}/images/fold{fold}/images.npy",
            f"Fold {fold}/images/fold{fold}/types.npy",
            f"Fold {fold}/masks/fold{fold}/masks.npy",
        ]
        images = read_npy(archive, f"Fold {fold}/images/fold{fold}/images.npy")
        types = read_npy(archive, f"Fold {fold}/images/fold{fold}/types.npy")
        masks = read_npy(archive, f"Fold {fold}/masks/fold{fold}/masks.npy")
    n = SMALL["pannuke_images_per_fold"]
    assert images.dtype == np.float64 and images.shape == (n, 256, 256, 3)
    assert images.min() >= 0 and images.max() <= 255 and images.max() > 100
    assert types.dtype.kind == "U" and types.shape == (n,) and set(types) <= set(pannuke.TISSUES)
    assert masks.dtype == np.float64 and masks.shape == (n, 256, 256, 6)


def test_pannuke_masks_consistent():
    _, masks, _ = pannuke.make_fold(3, np.random.default_rng(1))
    instances, background = masks[..., :5], masks[..., 5]
    assert np.all(instances == np.round(instances)) and instances.min() >= 0
    assert set(np.unique(background)) == {0.0, 1.0}
    nucleus_channels = (instances > 0).sum(axis=-1)
    assert nucleus_channels.max() == 1  # a pixel belongs to at most one class
    np.testing.assert_array_equal(background == 1, nucleus_channels == 0)
    for image in instances:
        ids = image.max(axis=-1)
        ids = np.unique(ids[ids > 0])
        assert len(ids) >= 5
        for instance_id in ids:  # an id names one nucleus of one class
            assert len(np.unique(np.nonzero(image == instance_id)[-1])) == 1


def test_dsb_layout(archives):
    with zipfile.ZipFile(archives["dsb2018/stage1_train.zip"]) as archive:
        names = archive.namelist()
        by_image: dict[str, list[str]] = {}
        for name in names:
            image_id, folder, file = name.split("/")
            assert HEX64.fullmatch(image_id) and folder in ("images", "masks") and file.endswith(".png")
            by_image.setdefault(image_id, []).append(name)
        assert len(by_image) == SMALL["dsb_images"]
        modes = set()
        for image_id, members in by_image.items():
            image = read_png(archive, f"{image_id}/images/{image_id}.png")
            modes.add(image.mode)
            mask_names = [m for m in members if "/masks/" in m]
            assert len(mask_names) >= 1 and len(members) == len(mask_names) + 1
            assert min(image.size) >= 96 and max(image.size) <= 256
            for mask_name in mask_names:
                assert HEX64.fullmatch(Path(mask_name).stem)
                mask = read_png(archive, mask_name)
                assert mask.mode == "L" and mask.size == image.size
                values = np.unique(np.asarray(mask))
                assert set(values) == {0, 255}
    assert {"RGBA", "RGB"} <= modes


def test_dsb_fluorescence_is_grey_rgba(archives):
    with zipfile.ZipFile(archives["dsb2018/stage1_train.zip"]) as archive:
        images = [read_png(archive, n) for n in archive.namelist() if "/images/" in n]
    rgba = [np.asarray(image) for image in images if image.mode == "RGBA"]
    assert rgba
    for pixels in rgba:
        assert np.all(pixels[..., 3] == 255)
        assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])


def test_nucrec_layout(archives):
    with zipfile.ZipFile(archives["nucrec/nucrec.zip"]) as archive:
        names = archive.namelist()
        classes = {name.split("/")[0] for name in names}
        assert classes == {"nucleus", "micronucleus"}
        assert all(re.fullmatch(r"(nucleus|micronucleus)/[^/]+\.png", name) for name in names)
        for cls in classes:
            crops = [read_png(archive, n) for n in names if n.startswith(f"{cls}/")]
            assert len(crops) == SMALL["nucrec_images_per_class"]
            assert {c.mode for c in crops} == {"RGB", "L"}
            assert all(40 <= side <= 100 for c in crops for side in c.size)


def test_same_seed_same_bytes_different_seed_different(tmp_path):
    writers = {
        "fold_1.zip": lambda path, seed: write_fold_zip(path, 1, 2, seed),
        "stage1_train.zip": lambda path, seed: write_stage1_zip(path, 3, seed),
        "nucrec.zip": lambda path, seed: write_nucrec_zip(path, 3, seed),
    }
    for name, write in writers.items():
        first, again, other = (
            sha256sum(write(tmp_path / run / name, seed)) for run, seed in (("a", 3), ("b", 3), ("c", 4))
        )
        assert first == again, name
        assert first != other, name


def test_pannuke_folds_of_one_seed_differ(archives):
    hashes = {sha256sum(archives[f"pannuke/fold_{fold}.zip"]) for fold in (1, 2, 3)}
    assert len(hashes) == 3


def test_cli_prints_a_hash_per_archive(tmp_path, capsys):
    cli_main(
        [
            str(tmp_path),
            "--seed",
            "7",
            "--pannuke-images-per-fold",
            "1",
            "--dsb-images",
            "3",
            "--nucrec-images-per-class",
            "2",
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5
    for line in lines:
        digest, name = line.split("  ")
        assert sha256sum(tmp_path / name) == digest


@pytest.mark.parametrize(
    "config_file", ["config.yaml", "workflow_tests/config_tiny.yaml", "workflow_tests/config_instances.yaml"]
)
def test_pinned_checksums_are_what_the_generator_writes(tmp_path, repo, config_file):
    """The demo, tiny and instance configs pin the SHA-256 of each generated archive; the download stage checks them."""
    import yaml

    config = yaml.safe_load((repo / config_file).read_text())
    written = demo.write_demo_archives(tmp_path, **config["demo_data"])
    pinned = {
        entry["url"].removeprefix("file://resources/demo/"): entry["sha256"]
        for dataset in config["datasets"].values()
        for entry in dataset["files"].values()
    }
    # Every archive the demo and the tiny config generate is pinned; the instance config uses two of the datasets.
    assert set(pinned) == set(written) if "instances" not in config_file else set(pinned) < set(written)
    assert {name: sha256sum(written[name]) for name in pinned} == pinned
