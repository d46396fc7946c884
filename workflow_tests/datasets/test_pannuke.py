"""PanNuke converter: layout, instance merging, metadata, one-line errors, atomic store, bounded memory."""

from __future__ import annotations

import importlib.util
import tracemalloc
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_store_fails_cleanly

from nucleiflow.datasets.pannuke import convert_pannuke, merge_instances
from nucleiflow.errors import DataFormatError
from nucleiflow.image_keys import content_hash
from nucleiflow.store import Store
from nucleiflow.synthetic.pannuke import make_fold, member_names

REPO = Path(__file__).resolve().parents[2]
MIB = 2**20


def load_benchmark():
    """The benchmark module, for its slice-by-slice fold writer (one writer for benchmark and test)."""
    spec = importlib.util.spec_from_file_location(
        "bench_pannuke_convert", REPO / "benchmarks" / "bench_pannuke_convert.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_fold(root: Path, fold: int, images: np.ndarray, masks: np.ndarray, types: np.ndarray) -> Path:
    """Write arrays in the unpacked fold_N.zip layout."""
    for key, array in {"images": images, "masks": masks, "types": types}.items():
        path = root / member_names(fold)[key]
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, array)
    return root


def fold_arrays(n: int = 3, seed: int = 0):
    return make_fold(n, np.random.default_rng(seed))


assert_fails_cleanly = partial(assert_store_fails_cleanly, convert_pannuke)


@pytest.fixture(scope="module")
def two_folds(tmp_path_factory):
    """Two 3-image folds, their arrays, and the converted store."""
    base = tmp_path_factory.mktemp("folds")
    arrays = {fold: fold_arrays(3, seed=fold) for fold in (1, 2)}
    roots = [save_fold(base / f"unpacked_{fold}", fold, *arrays[fold]) for fold in (1, 2)]
    out = base / "store.h5"
    summary = convert_pannuke(roots, out, progress=False)
    return arrays, Store(out), summary


def test_every_image_converted_with_metadata(two_folds):
    arrays, store, summary = two_folds
    assert store.ids == [f"fold{f}_{i:04d}" for f in (1, 2) for i in range(3)]
    assert summary["images"] == 6 and set(summary["per_fold"]) == {1, 2}
    meta = store.metadata.set_index("image_id")
    for fold, (images, _, types) in arrays.items():
        for index in range(3):
            row = meta.loc[f"fold{fold}_{index:04d}"]
            assert (row["tissue"], row["fold"], row["source_index"]) == (types[index], fold, index)
            image = store.image(f"fold{fold}_{index:04d}")
            np.testing.assert_array_equal(image, images[index].astype(np.uint8))
            assert row["content_hash"] == content_hash(image)
    assert {"mean_red", "grey_std", "n_overlap_pixels"} <= set(meta.columns)


def test_instances_unique_and_classes_match_release(two_folds):
    arrays, store, summary = two_folds
    nuclei = 0
    for fold, (_, masks, _) in arrays.items():
        for index in range(3):
            sample = store[f"fold{fold}_{index:04d}"]
            ids = np.unique(sample.instances)[1:]
            np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))  # consecutive, unique per image
            release = masks[index]
            expected = sum(len(np.unique(release[..., c])) - 1 for c in range(5))
            assert len(ids) == expected
            nuclei += expected
            # Every release nucleus (channel c, id) is exactly one new instance of class c + 1.
            for c in range(5):
                for old in np.unique(release[..., c])[1:]:
                    new = np.unique(sample.instances[release[..., c] == old])
                    assert len(new) == 1 and (sample.classes[sample.instances == new[0]] == c + 1).all()
            assert set(np.unique(sample.classes)) <= {0, 1, 2, 3, 4, 5}
    assert summary["nuclei"] == nuclei


def test_ids_repeated_across_channels_become_distinct_instances():
    mask = np.zeros((8, 8, 6))
    mask[0:2, 0:2, 0] = 1  # neoplastic nucleus 1
    mask[5:7, 5:7, 2] = 1  # connective nucleus 1: same id, other channel
    mask[5:7, 0:2, 2] = 7
    instances, classes, overlap = merge_instances(mask, "test")
    assert sorted(np.unique(instances)) == [0, 1, 2, 3]
    assert instances[0, 0] != instances[5, 5] and overlap == 0
    assert classes[0, 0] == 1 and classes[5, 5] == 3 and classes[5, 0] == 3


def test_overlap_between_channels_is_counted():
    mask = np.zeros((4, 4, 6))
    mask[0:2, 0:2, 0] = 1
    mask[1:3, 1:3, 1] = 1
    assert merge_instances(mask, "test")[2] == 1


def _corrupt_image_nan(images, masks, types):
    images[1, 5, 5, 0] = np.nan


def _corrupt_image_range(images, masks, types):
    images[1, 0, 0, 2] = 300.0


def _corrupt_mask_nan(images, masks, types):
    masks[1, 3, 3, 2] = np.nan


def _corrupt_mask_negative(images, masks, types):
    masks[1, 3, 3, 0] = -2


def _corrupt_mask_fraction(images, masks, types):
    masks[1, 3, 3, 4] = 1.5


@pytest.mark.parametrize(
    "corrupt, pattern",
    [
        (_corrupt_image_nan, r"images\.npy: fold 2 image 1: image holds NaN"),
        (_corrupt_image_range, r"images\.npy: fold 2 image 1: image values span \[.*, 300\], expected 0-255"),
        (_corrupt_mask_nan, r"masks\.npy: fold 2 image 1: mask holds NaN"),
        (_corrupt_mask_negative, r"masks\.npy: fold 2 image 1: mask holds negative ids \(min -2\)"),
        (_corrupt_mask_fraction, r"masks\.npy: fold 2 image 1: mask holds non-integer ids"),
    ],
)
def test_bad_values_name_fold_and_image(tmp_path, corrupt, pattern):
    good = save_fold(tmp_path / "u1", 1, *fold_arrays(2, seed=1))
    images, masks, types = fold_arrays(3, seed=2)
    corrupt(images, masks, types)
    bad = save_fold(tmp_path / "u2", 2, images, masks, types)
    assert_fails_cleanly([good, bad], tmp_path / "out" / "store.h5", pattern)  # fold 1 was already written


@pytest.mark.parametrize(
    "reshape, pattern",
    [
        (
            lambda i, m, t: (i[..., :2], m, t),
            r"images\.npy: fold 1 images have shape \(3, 256, 256, 2\), expected \(N, H, W, 3\)",
        ),
        (
            lambda i, m, t: (i, m[..., :5], t),
            r"masks\.npy: fold 1 masks have shape \(3, 256, 256, 5\), expected \(3, 256, 256, 6\)",
        ),
        (lambda i, m, t: (i, m[:2], t), r"masks\.npy: fold 1 masks have shape \(2, 256, 256, 6\)"),
        (lambda i, m, t: (i, m, t[:2]), r"types\.npy: fold 1 has \(2,\) tissue names, expected \(3,\)"),
        (lambda i, m, t: (i[0], m, t), r"images\.npy: fold 1 images have shape \(256, 256, 3\)"),
    ],
)
def test_wrong_shapes_name_the_file(tmp_path, reshape, pattern):
    root = save_fold(tmp_path / "u1", 1, *reshape(*fold_arrays(3)))
    assert_fails_cleanly([root], tmp_path / "store.h5", pattern)


@pytest.mark.parametrize("key, keep_bytes", [("images", -1000), ("masks", -1000), ("masks", 60), ("types", 40)])
def test_truncated_npy_names_the_file(tmp_path, key, keep_bytes):
    root = save_fold(tmp_path / "u1", 1, *fold_arrays(2))
    path = root / member_names(1)[key]
    data = path.read_bytes()
    path.write_bytes(data[:keep_bytes])  # cut inside the data (negative) or inside the header
    error = assert_fails_cleanly(
        [root], tmp_path / "store.h5", rf"{key}\.npy: cannot read \.npy .*truncated or corrupt"
    )
    assert str(path) in str(error)


def test_empty_fold_is_an_error(tmp_path):
    images, masks, types = fold_arrays(1)
    root = save_fold(tmp_path / "u1", 1, images[:0], masks[:0], types[:0])
    assert_fails_cleanly([root], tmp_path / "store.h5", r"images\.npy: fold 1 holds no images")


def test_missing_array_and_missing_fold_folder(tmp_path):
    root = save_fold(tmp_path / "u1", 1, *fold_arrays(1))
    (root / member_names(1)["types"]).unlink()
    assert_fails_cleanly([root], tmp_path / "store.h5", r"types\.npy: missing from the unpacked PanNuke fold 1")
    (tmp_path / "empty").mkdir()
    assert_fails_cleanly([tmp_path / "empty"], tmp_path / "store.h5", r"empty: no 'Fold N' folder")


def test_existing_store_is_kept_when_conversion_fails(tmp_path):
    out = tmp_path / "store.h5"
    convert_pannuke([save_fold(tmp_path / "good", 1, *fold_arrays(1))], out, progress=False)
    before = out.read_bytes()
    images, masks, types = fold_arrays(2)
    images[1, 0, 0, 0] = np.nan
    with pytest.raises(DataFormatError):
        convert_pannuke([save_fold(tmp_path / "bad", 1, images, masks, types)], out, progress=False)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "good", "store.h5"]


# ---------------------------------------------------------------- memory


@pytest.fixture(scope="module")
def moderate_fold(tmp_path_factory):
    """A 64-image fold (~300 MB of float64) written slice by slice with open_memmap."""
    root = tmp_path_factory.mktemp("moderate") / "unpacked"
    return load_benchmark().write_synthetic_fold(root, 1, 64, seed=1)


def fold_bytes(root: Path) -> int:
    return sum((root / member_names(1)[key]).stat().st_size for key in ("images", "masks"))


def _status_kib(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS: now, VmHWM: peak) in KiB."""
    lines = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in lines if line.startswith(field + ":"))


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark (Linux >= 4.0)
        return True
    except OSError:
        return False


def test_memory_stays_far_below_the_fold(moderate_fold, tmp_path):
    # Python allocations (tracemalloc) and resident memory (peak RSS) are both checked:
    # a memory-mapped read allocates nothing in Python yet makes the whole fold resident.
    size_mib = fold_bytes(moderate_fold) / MIB
    assert size_mib > 250
    can_measure_rss = _reset_peak_rss()
    rss_before = _status_kib("VmRSS")
    tracemalloc.start()
    try:
        convert_pannuke([moderate_fold], tmp_path / "store.h5", progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * MIB, f"peak Python allocations {peak / MIB:.0f} MiB for a {size_mib:.0f} MiB fold"
    assert len(Store(tmp_path / "store.h5")) == 64
    if not can_measure_rss:
        pytest.skip("peak RSS not checked: /proc/self/clear_refs cannot reset it here (Python allocations were)")
    growth = (_status_kib("VmHWM") - rss_before) / 1024
    assert growth < 64, f"peak RSS grew by {growth:.0f} MiB for a {size_mib:.0f} MiB fold"
