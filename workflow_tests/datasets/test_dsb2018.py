"""DSB2018 converter: real shared images, merged-mask layouts, overlaps, one-line errors, atomic store."""

from __future__ import annotations

import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DSB, assert_store_fails_cleanly
from PIL import Image
from scipy import ndimage

from nucleiflow.archive import safe_extract_zip
from nucleiflow.datasets.dsb2018 import convert_dsb2018, find_samples
from nucleiflow.store import Store

SHARED_IMAGES, SHARED_NUCLEI = 45, 2444  # from the shared README


def save_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def disk(shape, cy, cx, r) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def nucleus_masks(shape=(40, 48)) -> list[np.ndarray]:
    """Three nuclei: two overlapping by a few pixels, one apart."""
    return [disk(shape, 10, 10, 5), disk(shape, 10, 19, 5), disk(shape, 30, 35, 6)]


def write_per_nucleus(root: Path, image_id: str, masks: list[np.ndarray], rgba: bool = False) -> Path:
    """One sample in the stage1_train layout."""
    shape = masks[0].shape
    image = np.full((*shape, 4 if rgba else 3), 40, np.uint8)
    for m in masks:
        image[m, :3] = 200
    save_png(root / image_id / "images" / f"{image_id}.png", image)
    for k, m in enumerate(masks):
        save_png(root / image_id / "masks" / f"{image_id}_{k}.png", m.astype(np.uint8) * 255)
    return root / image_id


assert_fails_cleanly = partial(assert_store_fails_cleanly, convert_dsb2018)


# ---------------------------------------------------------------- the real shared images


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory, shared_dsb):  # shared_dsb skips when ../shared is absent
    """The shared images zipped, unpacked with safe_extract_zip and converted (skips when absent)."""
    base = tmp_path_factory.mktemp("shared")
    archive = base / "stage1_test.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:  # PNGs are compressed already
        for path in sorted(SHARED_DSB.rglob("*.png")):
            zf.write(path, Path("stage1_test") / path.relative_to(SHARED_DSB))
    root = safe_extract_zip(archive, base / "unpacked")
    summary = convert_dsb2018([root], base / "store.h5", progress=False)
    return Store(base / "store.h5"), summary


@pytest.mark.shared_data
def test_shared_images_all_converted(shared_store):
    store, summary = shared_store
    ids = sorted(p.name for p in SHARED_DSB.iterdir() if p.is_dir())
    assert len(ids) == SHARED_IMAGES and sorted(store.ids) == ids
    assert summary["images"] == SHARED_IMAGES and summary["nuclei"] == SHARED_NUCLEI
    assert summary["layouts"] == {"per_nucleus": SHARED_IMAGES}
    assert set(summary["modalities"]) <= {"fluorescence", "brightfield", "he"} and len(summary["modalities"]) >= 2


@pytest.mark.shared_data
def test_shared_nuclei_count_equals_mask_files(shared_store):
    store, _ = shared_store
    meta = store.metadata.set_index("image_id")
    for image_id in store.ids:
        n_files = len(list((SHARED_DSB / image_id / "masks").glob("*.png")))
        assert meta.loc[image_id, "n_nuclei"] == meta.loc[image_id, "n_mask_files"] == n_files


@pytest.mark.shared_data
def test_shared_rgba_becomes_rgb(shared_store):
    store, _ = shared_store
    meta = store.metadata.set_index("image_id")
    rgba = [i for i in store.ids if meta.loc[i, "source_mode"] == "RGBA"]
    assert rgba, "the shared sample holds RGBA images"
    for image_id in rgba[:5]:
        source = np.asarray(Image.open(SHARED_DSB / image_id / "images" / f"{image_id}.png"))
        image = store.image(image_id)
        assert image.shape == (*source.shape[:2], 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(image, source[..., :3])


@pytest.mark.shared_data
def test_shared_masks_merge_to_the_mask_files(shared_store):
    store, _ = shared_store
    image_id = store.ids[0]
    files = sorted((SHARED_DSB / image_id / "masks").glob("*.png"))
    instances = store[image_id].instances
    for k, path in enumerate(files, start=1):
        np.testing.assert_array_equal(instances == k, np.asarray(Image.open(path)) > 0)


# ---------------------------------------------------------------- layouts


def test_overlapping_nuclei_are_counted(tmp_path):
    masks = nucleus_masks()
    write_per_nucleus(tmp_path / "train", "a", masks)
    write_per_nucleus(tmp_path / "train", "b", masks[2:])
    summary = convert_dsb2018([tmp_path / "train"], tmp_path / "store.h5", progress=False)
    expected = int((masks[0] & masks[1]).sum())
    assert expected > 0
    meta = Store(tmp_path / "store.h5").metadata.set_index("image_id")
    assert meta.loc["a", "n_overlap_pixels"] == expected and meta.loc["b", "n_overlap_pixels"] == 0
    assert (summary["images_with_overlaps"], summary["overlap_pixels"]) == (1, expected)
    instances = Store(tmp_path / "store.h5")["a"].instances
    assert instances[10, 14] == 2  # a shared pixel keeps the later mask's nucleus


def test_thread_pool_gives_the_same_store(tmp_path):
    for image_id in ("a", "b", "c"):
        write_per_nucleus(tmp_path / "train", image_id, nucleus_masks(), rgba=image_id == "b")
    convert_dsb2018([tmp_path / "train"], tmp_path / "one.h5", progress=False)
    convert_dsb2018([tmp_path / "train"], tmp_path / "two.h5", progress=False, workers=2)
    one, two = Store(tmp_path / "one.h5"), Store(tmp_path / "two.h5")
    assert one.metadata.equals(two.metadata)
    for image_id in one.ids:
        np.testing.assert_array_equal(one[image_id].instances, two[image_id].instances)


def merged_components(masks) -> int:
    return ndimage.label(np.logical_or.reduce(masks), structure=np.ones((3, 3)))[1]


@pytest.mark.parametrize("mask_folder", ["masks", "masks/0"])
def test_flat_processed_layout_labels_connected_components(tmp_path, mask_folder):
    root = tmp_path / "dsb2018_96"
    masks = nucleus_masks()
    for image_id in ("x1", "x2"):
        save_png(root / "images" / f"{image_id}.png", np.full((*masks[0].shape, 3), 90, np.uint8))
        save_png(root / mask_folder / f"{image_id}.png", np.logical_or.reduce(masks).astype(np.uint8) * 255)
    samples = find_samples(tmp_path)  # the archive's wrapping folder is found
    assert [(s.image_id, s.layout) for s in samples] == [("x1", "merged"), ("x2", "merged")]
    summary = convert_dsb2018([tmp_path], tmp_path / "store.h5", progress=False)
    store = Store(tmp_path / "store.h5")
    assert summary["layouts"] == {"merged": 2}
    assert (
        store.metadata["n_nuclei"].tolist() == [merged_components(masks)] * 2 == [2, 2]
    )  # the overlapping pair merges
    assert store.metadata["n_overlap_pixels"].isna().all()  # a merged mask cannot tell


def test_per_folder_merged_mask(tmp_path):
    masks = nucleus_masks()
    save_png(tmp_path / "train" / "m1" / "images" / "m1.png", np.zeros((*masks[0].shape, 3), np.uint8))
    save_png(tmp_path / "train" / "m1" / "masks" / "m1.png", np.logical_or.reduce(masks).astype(np.uint8) * 255)
    write_per_nucleus(tmp_path / "train", "p1", masks)
    convert_dsb2018([tmp_path / "train"], tmp_path / "store.h5", progress=False)
    meta = Store(tmp_path / "store.h5").metadata.set_index("image_id")
    assert meta.loc["m1", "mask_layout"] == "merged" and meta.loc["m1", "n_nuclei"] == 2
    assert meta.loc["p1", "mask_layout"] == "per_nucleus" and meta.loc["p1", "n_nuclei"] == 3


def test_stage1_test_layout_with_grey_and_rgba_images(tmp_path):
    masks = nucleus_masks()
    root = tmp_path / "stage1_test"
    write_per_nucleus(root, "rgba", masks, rgba=True)
    sample = write_per_nucleus(root, "grey", masks)
    grey = np.full(masks[0].shape, 77, np.uint8)
    save_png(sample / "images" / "grey.png", grey)
    convert_dsb2018([tmp_path], tmp_path / "store.h5", progress=False)  # wrapped in stage1_test/
    store = Store(tmp_path / "store.h5")
    np.testing.assert_array_equal(store.image("grey"), np.dstack([grey] * 3))
    assert store.image("rgba").shape == (*masks[0].shape, 3)
    assert store.metadata.set_index("image_id")["source_mode"].to_dict() == {"grey": "L", "rgba": "RGBA"}


# ---------------------------------------------------------------- bad inputs


def test_mask_size_differs_from_image(tmp_path):
    sample = write_per_nucleus(tmp_path / "train", "a", nucleus_masks())
    bad = save_png(sample / "masks" / "a_1.png", np.zeros((20, 20), np.uint8))
    pattern = r"a_1\.png: mask size \(20, 20\) differs from image size \(40, 48\)"
    error = assert_fails_cleanly([tmp_path / "train"], tmp_path / "store.h5", pattern)
    assert str(bad) in str(error)


def test_image_folder_without_masks(tmp_path):
    write_per_nucleus(tmp_path / "train", "a", nucleus_masks())
    save_png(tmp_path / "train" / "b" / "images" / "b.png", np.zeros((8, 8, 3), np.uint8))
    assert_fails_cleanly([tmp_path / "train"], tmp_path / "store.h5", r"train/b/masks: image b has no mask files")
    (tmp_path / "train" / "b" / "masks").mkdir()
    assert_fails_cleanly([tmp_path / "train"], tmp_path / "store.h5", r"train/b/masks: image b has no mask files")


def test_stray_file_among_masks(tmp_path):
    sample = write_per_nucleus(tmp_path / "train", "a", nucleus_masks())
    (sample / "masks" / "notes.txt").write_text("x")
    assert_fails_cleanly([tmp_path / "train"], tmp_path / "store.h5", r"masks/notes\.txt: not a PNG file")


@pytest.mark.parametrize("which", ["image", "mask"])
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_png_names_the_file(tmp_path, which, damage):
    write_per_nucleus(tmp_path / "train", "a", nucleus_masks())
    sample = write_per_nucleus(tmp_path / "train", "b", nucleus_masks())
    path = sample / "images" / "b.png" if which == "image" else sample / "masks" / "b_2.png"
    data = path.read_bytes()
    path.write_bytes(b"not a png at all" if damage == "garbage" else data[: len(data) // 2])
    error = assert_fails_cleanly([tmp_path / "train"], tmp_path / "store.h5", r"unreadable image")
    assert str(error).startswith(f"{path}: ")


def test_flat_layout_missing_and_orphan_masks(tmp_path):
    root = tmp_path / "flat"
    masks = nucleus_masks()
    save_png(root / "images" / "x1.png", np.zeros((*masks[0].shape, 3), np.uint8))
    save_png(root / "masks" / "x2.png", masks[0].astype(np.uint8) * 255)
    assert_fails_cleanly([root], tmp_path / "store.h5", r"masks/x1\.png: missing merged mask of image x1")
    save_png(root / "masks" / "x1.png", masks[0].astype(np.uint8) * 255)
    assert_fails_cleanly([root], tmp_path / "store.h5", r"masks/x2\.png: mask without an image")


def test_empty_root(tmp_path):
    (tmp_path / "train").mkdir()
    assert_fails_cleanly([tmp_path / "train"], tmp_path / "store.h5", r"train: no image folders")
