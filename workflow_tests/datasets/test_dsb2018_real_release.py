"""The real DSB2018 release (BBBC038) through the converter: counts, labels pixel for pixel, and its quirks.

Reads ../shared/data in place (skipped when absent). The zip is read lazily: its listing gives the
counts, and only a seeded sample of images is extracted and converted, so the module stays fast; the
full pixel check of all 670 images is `benchmarks/bench_dsb2018_convert.py` (figure in the README).

The release's quirks and the converter's rule for each:

* every image is an RGBA PNG whose alpha is 255 everywhere: alpha is dropped, RGB kept as stored;
* greyscale images (most fluorescence) are stored as RGBA with R = G = B: kept as three equal channels,
  never collapsed or re-weighted, so grey and colour images share one input format;
* sizes range from 256 x 256 to one 1388 x 1040 image: every image keeps its native size in the store
  (resizing or tiling is a training setting, `size_policy`);
* nuclei touch (adjacent, 8-connected) in many images: each mask file is one nucleus, so touching nuclei
  stay separate instances (instances are never the connected components of the union).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import random
import zipfile
from collections import Counter

import numpy as np
import pytest
from conftest import REPO, SHARED_DATA, SHARED_DSB
from PIL import Image
from scipy import ndimage

from nucleiflow.archive import safe_extract_zip
from nucleiflow.datasets.dsb2018 import convert_dsb2018, find_samples
from nucleiflow.datasets.rle import rle_decode
from nucleiflow.store import Store

pytestmark = pytest.mark.shared_data

TRAIN_DIR = SHARED_DATA / "dsb2018_stage1_train"
TRAIN_ZIP = TRAIN_DIR / "stage1_train.zip"
TRAIN_LABELS = TRAIN_DIR / "stage1_train_labels.csv.zip"
SOLUTION_SAMPLE = SHARED_DATA / "dsb2018_stage1_solution_sample.csv"
TRAIN_IMAGES, TRAIN_NUCLEI = 670, 29_461  # the shared README (and the official label file)
LARGEST = "c901794d1a421d52e5734500c0a2a8ca84651fb93b19cec2f411855e70cae339"  # the one 1388 x 1040 image
SAMPLE_SIZE, SAMPLE_SEED = 24, 2018


def _load_builder():
    """tools/build_dsb2018_stage1_test.py, imported by path (tools/ is not a package)."""
    path = REPO / "tools" / "build_dsb2018_stage1_test.py"
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def train_zip() -> zipfile.ZipFile:
    if not TRAIN_ZIP.is_file() or not TRAIN_LABELS.is_file():
        pytest.skip("../shared/data/dsb2018_stage1_train is absent")
    with zipfile.ZipFile(TRAIN_ZIP) as archive:
        yield archive


@pytest.fixture(scope="module")
def train_labels(train_zip) -> dict[str, list[str]]:
    """{image id: [run-length code, ...]} of the official stage1_train_labels.csv, in file order."""
    with zipfile.ZipFile(TRAIN_LABELS) as archive, archive.open("stage1_train_labels.csv") as raw:
        rows: dict[str, list[str]] = {}
        for row in csv.DictReader(io.TextIOWrapper(raw, newline="")):
            rows.setdefault(row["ImageId"], []).append(row["EncodedPixels"])
    return rows


def _image_ids(archive: zipfile.ZipFile) -> list[str]:
    return sorted({name.split("/")[0] for name in archive.namelist() if "/images/" in name and name.endswith(".png")})


@pytest.fixture(scope="module")
def sample_store(train_zip, tmp_path_factory):
    """A seeded sample of stage1_train (plus the 1388 x 1040 image) extracted from the zip and converted."""
    ids = _image_ids(train_zip)
    chosen = sorted(set(random.Random(SAMPLE_SEED).sample(ids, SAMPLE_SIZE)) | {LARGEST})
    base = tmp_path_factory.mktemp("stage1_train")
    root = base / "stage1_train"
    for name in train_zip.namelist():
        if name.split("/")[0] in chosen and not name.endswith("/"):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(train_zip.read(name))
    summary = convert_dsb2018([root], base / "store.h5", progress=False)
    return Store(base / "store.h5"), summary, root


def _decoded(codes: list[str], shape: tuple[int, int]) -> list[np.ndarray]:
    return [rle_decode(code, *shape) for code in codes]


def _instance_masks(instances: np.ndarray) -> list[np.ndarray]:
    return [instances == k for k in np.unique(instances) if k]


def test_zip_holds_670_images_and_29461_nucleus_masks(train_zip, train_labels, tmp_path):
    names = train_zip.namelist()
    ids = _image_ids(train_zip)
    masks = Counter(name.split("/")[0] for name in names if "/masks/" in name and name.endswith(".png"))
    assert len(ids) == TRAIN_IMAGES and sum(masks.values()) == TRAIN_NUCLEI
    # The label file: the same ids, and as many rows as mask files for every image.
    assert sorted(train_labels) == ids
    assert all(len(train_labels[i]) == masks[i] for i in ids)
    # The converter's own discovery on the unpacked layout finds every image with its masks.
    root = tmp_path / "stage1_train"
    for name in names:  # the folder tree only, with empty files: discovery reads names, not pixels
        if not name.endswith("/"):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).touch()
    samples = find_samples(root)
    assert [s.image_id for s in samples] == ids
    assert sum(len(s.masks) for s in samples) == TRAIN_NUCLEI
    assert {s.layout for s in samples} == {"per_nucleus"}


def test_sampled_nuclei_equal_the_official_run_length_labels(sample_store, train_labels):
    store, summary, _ = sample_store
    assert summary["images"] == len(store.ids) == SAMPLE_SIZE + 1
    assert summary["nuclei"] == sum(len(train_labels[i]) for i in store.ids)
    assert summary["overlap_pixels"] == 0  # the original release: no pixel belongs to two masks
    for image_id in store.ids:
        instances = store[image_id].instances
        expected = _decoded(train_labels[image_id], instances.shape)
        # Pixel for pixel: the same multiset of nuclei (mask file order need not follow label row order).
        got = Counter(m.tobytes() for m in _instance_masks(instances))
        assert got == Counter(m.tobytes() for m in expected), image_id


def test_rgba_alpha_is_dropped_and_rgb_kept_as_stored(sample_store):
    store, _, root = sample_store
    meta = store.metadata.set_index("image_id")
    for image_id in store.ids:
        source = np.asarray(Image.open(root / image_id / "images" / f"{image_id}.png"))
        assert meta.loc[image_id, "source_mode"] == "RGBA" and source.shape[2] == 4
        assert (source[..., 3] == 255).all(), image_id  # the rule's premise: alpha carries nothing
        np.testing.assert_array_equal(store.image(image_id), source[..., :3])


def _is_grey(image: np.ndarray) -> bool:
    return bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())


def test_greyscale_stored_as_rgba_stays_three_equal_channels(sample_store):
    store, _, _ = sample_store
    grey = [i for i in store.ids if _is_grey(store.image(i))]
    colour = set(store.ids) - set(grey)
    assert grey and colour, "the seeded sample holds both greyscale and colour images"
    meta = store.metadata.set_index("image_id")
    # Grey-as-RGBA images are fluorescence or brightfield in the converter's hint, never H&E.
    assert set(meta.loc[grey, "modality_hint"]) <= {"fluorescence", "brightfield"}


def test_largest_image_keeps_its_native_1388_by_1040_size(sample_store, train_labels):
    store, _, _ = sample_store
    sample = store[LARGEST]
    assert store.image(LARGEST).shape == (1040, 1388, 3)
    assert sample.instances.shape == (1040, 1388)
    assert int(sample.instances.max()) == len(train_labels[LARGEST])


def test_touching_nuclei_stay_separate_instances(sample_store):
    store, _, _ = sample_store
    touching_images = 0
    for image_id in store.ids:
        instances = store[image_id].instances
        n_nuclei = len(np.unique(instances)) - 1
        n_components = ndimage.label(instances > 0, structure=np.ones((3, 3)))[1]
        assert n_components <= n_nuclei
        touching_images += n_components < n_nuclei
    assert touching_images > 0, "the seeded sample holds images whose nuclei touch"


def test_built_stage1_test_release_converts_to_the_shared_masks(tmp_path):
    """tools/build_dsb2018_stage1_test.py re-packs the 45 images; the converter decodes the solution rows."""
    if not SHARED_DSB.is_dir() or not SOLUTION_SAMPLE.is_file():
        pytest.skip("../shared/data/dsb2018_stage1_test_sample is absent")
    built = _load_builder().build(SHARED_DSB, SOLUTION_SAMPLE, tmp_path / "release")
    with zipfile.ZipFile(built["stage1_test.zip"]) as archive:
        assert not [n for n in archive.namelist() if "/masks/" in n]  # images only, as in the official release
    unpacked = safe_extract_zip(built["stage1_test.zip"], tmp_path / "unpacked" / "stage1_test")
    summary = convert_dsb2018([unpacked, built["stage1_solution.csv"]], tmp_path / "store.h5", progress=False)
    store = Store(tmp_path / "store.h5")
    assert summary["images"] == 45 and summary["nuclei"] == 2444 and summary["layouts"] == {"rle": 45}
    assert set(store.metadata["source_set"]) == {"stage1_test"}
    for image_id in store.ids:
        pngs = [np.asarray(Image.open(p)) > 0 for p in sorted((SHARED_DSB / image_id / "masks").glob("*.png"))]
        got = Counter(m.tobytes() for m in _instance_masks(store[image_id].instances))
        assert got == Counter(m.tobytes() for m in pngs), image_id
        image = np.asarray(Image.open(SHARED_DSB / image_id / "images" / f"{image_id}.png"))
        np.testing.assert_array_equal(store.image(image_id), image[..., :3] if image.ndim == 3 else image)
