"""Shared fixtures: repository paths, the shared real data, small synthetic stores."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DSB = REPO.parent / "shared" / "data" / "dsb2018_stage1_test_sample"
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


# Run order. `make test` runs the suite on pytest-xdist workers with `--dist loadfile --no-loadscope-reorder`:
# each test module is one unit of work (its module fixtures are built once; the SLURM tests share one cluster
# and one run of the tiny config), handed out in the order below. The SLURM run starts first, the end-to-end
# runs next, and the other modules fill the other core beside them instead of running before or after them.
LONG_RUNS = ("slurm", "e2e")


def pytest_collection_modifyitems(config, items):
    """The modules with the long runs first (stable: each module keeps its own order)."""

    def rank(item) -> int:
        return next((i for i, marker in enumerate(LONG_RUNS) if item.get_closest_marker(marker)), len(LONG_RUNS))

    items.sort(key=rank)


def assert_store_fails_cleanly(convert, roots, out: Path, pattern: str):
    """`convert(roots, out)` raises a one-line DataFormatError matching `pattern` and leaves no store or temporary."""
    from nucleiflow.errors import DataFormatError

    with pytest.raises(DataFormatError, match=pattern) as caught:
        convert(roots, out, progress=False)
    assert "\n" not in str(caught.value)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.stem}.")]
    return caught.value


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_dsb() -> Path:
    if not SHARED_DSB.is_dir():
        pytest.skip("../shared/data/dsb2018_stage1_test_sample is absent")
    return SHARED_DSB


def copy_checkout(dest: Path) -> Path:
    """A fresh clone of the working tree: the files git tracks or would track, with `.venv` linked in.

    Commands then run from its root exactly as the README writes them, with no results or
    resources of an earlier run around.
    """
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listing.split("\0")):
        if name.split("/")[0] == ".venv":  # a linked environment is not part of the checkout
            continue
        source = REPO / name
        if source.is_symlink() or source.is_file():  # a file deleted in the working tree is not checked out
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name, follow_symlinks=False)
    os.symlink(REPO / ".venv", dest / ".venv")
    return dest


@pytest.fixture(scope="session")
def checkout(tmp_path_factory) -> Path:
    """One fresh checkout shared by the tests that only read it (dry-runs)."""
    return copy_checkout(tmp_path_factory.mktemp("checkout"))


def _unpack(zip_path: Path, dest: Path) -> Path:
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(dest)
    return dest


@pytest.fixture(scope="session")
def pannuke_store(tmp_path_factory) -> Path:
    """A converted store of three small synthetic PanNuke folds (4 images each)."""
    from nucleiflow.datasets.pannuke import convert_pannuke
    from nucleiflow.synthetic.pannuke import write_fold_zip

    base = tmp_path_factory.mktemp("pannuke")
    roots = []
    for fold in (1, 2, 3):
        archive = write_fold_zip(base / f"fold_{fold}.zip", fold, 4, seed=3)
        roots.append(_unpack(archive, base / f"unpacked_{fold}"))
    out = base / "store.h5"
    convert_pannuke(roots, out, progress=False)
    return out


@pytest.fixture(scope="session")
def dsb_store(tmp_path_factory) -> Path:
    """A converted store of 10 small synthetic DSB2018 images."""
    from nucleiflow.datasets.dsb2018 import convert_dsb2018
    from nucleiflow.synthetic.dsb2018 import write_stage1_zip

    base = tmp_path_factory.mktemp("dsb")
    root = _unpack(write_stage1_zip(base / "stage1_train.zip", 10, seed=5), base / "unpacked")
    out = base / "store.h5"
    convert_dsb2018([root], out, progress=False)
    return out


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def touching_discs(centres, radii, shape=(64, 64)) -> np.ndarray:
    """Label map of discs; where two overlap, a pixel goes to the disc it is relatively closer to (they touch)."""
    rows, cols = np.indices(shape)
    labels = np.zeros(shape, dtype=np.int32)
    nearest = np.full(shape, np.inf)
    for label, ((r, c), radius) in enumerate(zip(centres, radii), start=1):
        distance = np.hypot(rows - r, cols - c) / radius
        inside = (distance <= 1) & (distance < nearest)
        labels[inside] = label
        nearest[inside] = distance[inside]
    return labels
