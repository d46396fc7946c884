"""Run-length decoding of the DSB2018 stage-1 solution, and the converter path that uses it.

The real check: decoding the official solution rows of the 45 shared stage-1 test images gives back,
pixel for pixel, their per-nucleus PNG masks (skipped when ../shared is absent).
"""

from collections import Counter

import numpy as np
import pytest
from conftest import SHARED_DSB
from PIL import Image

from nucleiflow.datasets.dsb2018 import convert_dsb2018
from nucleiflow.datasets.rle import decode_instances, read_solution, rle_decode, rle_encode
from nucleiflow.errors import DataFormatError
from nucleiflow.store import Store

SOLUTION_SAMPLE = SHARED_DSB.parent / "dsb2018_stage1_solution_sample.csv"


def test_decode_is_one_based_and_column_major():
    # 3 rows x 2 columns; pixel 1 is (0, 0), pixel 4 is (0, 1): "1 2" covers the first two rows of column 0.
    mask = rle_decode("1 2 6 1", 3, 2)
    assert mask.tolist() == [[True, False], [True, False], [False, True]]


def test_encode_inverts_decode_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random((7, 5)) > 0.6
        assert np.array_equal(rle_decode(rle_encode(mask), 7, 5), mask)


@pytest.mark.parametrize(
    "code, message", [("1 2 3", "odd count"), ("0 2", "outside"), ("5 3", "outside"), ("2 0", "outside")]
)
def test_bad_codes_are_one_line_errors(code, message):
    with pytest.raises(DataFormatError, match=message):
        rle_decode(code, 2, 3)


def test_decode_instances_checks_the_image_size():
    with pytest.raises(DataFormatError, match=r"solution row 1 of image x: size \(2, 2\) differs"):
        decode_instances([("1 1", 2, 2)], (3, 3), "x")


@pytest.fixture(scope="module")
def solution():
    if not SOLUTION_SAMPLE.is_file():
        pytest.skip("../shared/data/dsb2018_stage1_solution_sample.csv is absent")
    return read_solution(SOLUTION_SAMPLE)


def _png_masks(image_dir) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) > 0 for p in sorted((image_dir / "masks").glob("*.png"))]


def test_solution_sample_decodes_to_the_per_nucleus_pngs(solution):
    image_dirs = sorted(p for p in SHARED_DSB.iterdir() if p.is_dir())
    assert sorted(solution) == [p.name for p in image_dirs]
    n_nuclei = 0
    for image_dir in image_dirs:
        pngs = _png_masks(image_dir)
        decoded = [rle_decode(code, h, w) for code, h, w in solution[image_dir.name]]
        assert len(decoded) == len(pngs), image_dir.name
        # Pixel for pixel: the same multiset of masks (file numbering need not follow row order).
        assert Counter(m.tobytes() for m in decoded) == Counter(m.tobytes() for m in pngs), image_dir.name
        assert all(m.shape == pngs[0].shape for m in decoded)
        n_nuclei += len(decoded)
    assert n_nuclei == 2444  # the count the shared data's README gives


def test_converter_takes_masks_from_the_solution_and_records_the_source_set(solution, tmp_path):
    ids = sorted(solution)[:3]
    # The stage-1 test release layout: images only (linked, not copied), beside the solution file.
    release = tmp_path / "stage1_test"
    for image_id in ids:
        (release / image_id / "images").mkdir(parents=True)
        (release / image_id / "images" / f"{image_id}.png").symlink_to(
            SHARED_DSB / image_id / "images" / f"{image_id}.png"
        )
    summary = convert_dsb2018([release, SOLUTION_SAMPLE], tmp_path / "store.h5", progress=False)
    assert summary["layouts"] == {"rle": 3}
    store = Store(tmp_path / "store.h5")
    assert set(store.metadata["source_set"]) == {"stage1_test"}
    for image_id in ids:
        instances = store[image_id].instances
        pngs = _png_masks(SHARED_DSB / image_id)
        assert instances.max() == len(pngs)
        assert np.array_equal(instances > 0, np.any(pngs, axis=0))
