"""Shared fixtures: repository paths, the shared real data, small synthetic stores, stand-in models."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
# The shared real data beside the checkout (../shared/data); NUCLEIFLOW_SHARED_DATA names another copy.
SHARED_DATA = Path(os.environ.get("NUCLEIFLOW_SHARED_DATA") or REPO.parent / "shared" / "data")
SHARED_DSB = SHARED_DATA / "dsb2018_stage1_test_sample"
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def threads_per_worker() -> int:
    """The cores each pytest-xdist worker may keep busy: the machine's, shared evenly by the workers."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, (os.cpu_count() or 1) // workers)


# On 2 cores with 2 workers, two OpenMP pools of 2 threads each (torch's default is one per core) contend for
# the cores, and every parallel region waits for a descheduled thread: a tiny training epoch measured 0.5 s
# alone and up to 13 s beside the other worker. So each worker, and every process it starts (the workflow's
# jobs' NumPy reads OMP_NUM_THREADS; their torch thread count comes from their `threads`), runs its
# share of the cores.
torch.set_num_threads(threads_per_worker())
os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_worker()))


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


def run_in(checkout: Path, command: str | list[str], *extra: str, timeout: int = 300, env=None):
    """`command` (a command line as the README writes it, or its arguments) plus `extra`, run from `checkout`."""
    args = shlex.split(command) if isinstance(command, str) else list(command)
    return subprocess.run([*args, *extra], cwd=checkout, capture_output=True, text=True, timeout=timeout, env=env)


def dry_run(checkout: Path, command: str | list[str], *extra: str, env=None) -> str:
    """The output of `command -n` run from `checkout`; the test fails with its tail where the dry run fails."""
    result = run_in(checkout, command, *extra, "-n", env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output


def link_shared_data(checkout: Path) -> None:
    """The shared real data at `checkout`'s ../shared/data, where the configs of real data read it."""
    shared = checkout.parent / "shared"
    shared.mkdir(exist_ok=True)
    if not (shared / "data").exists():
        (shared / "data").symlink_to(SHARED_DATA)


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


# ---------------------------------------------------------------- stand-in models with known outputs
# Inference, evaluation and explanations are tested through these: each one's prediction follows from its
# input, so a test can compute the expected maps, masks and scores by hand.


class MaskEcho(torch.nn.Module):
    """A 'model' whose logits are +-10 where the red channel is above its mean: known predictions."""

    def forward(self, x):
        red = x[:, :1]
        return torch.where(red > red.mean(dim=(2, 3), keepdim=True), 10.0, -10.0)


class RedEcho(torch.nn.Module):
    """Logits +10 where a pixel's red value is above the ImageNet mean (0.485 * 255, so red >= 124), else -10.

    Pixel by pixel, so tiled inference at native size gives exactly `red_echo(image)`.
    """

    def forward(self, x):
        return torch.where(x[:, :1] > 0, 10.0, -10.0)


def red_echo(image: np.ndarray) -> np.ndarray:
    """RedEcho's prediction, from the raw uint8 image."""
    return image[..., 0] >= 124


class AllNuclei(torch.nn.Module):
    """Logits +10 everywhere: a constant map, unchanged by resizing."""

    def forward(self, x):
        return torch.full_like(x[:, :1], 10.0)


class PixelModel(torch.nn.Module):
    """Logits linear in the red channel: a smooth map, so resizing and tiling change it measurably."""

    def forward(self, x):
        return x[:, :1] * 2.0 - 0.5


class Brightness(torch.nn.Module):
    """A stand-in model that calls a pixel foreground when its red channel is bright (normalised > 0)."""

    def forward(self, x):
        return 20.0 * x[:, :1]


class Recorder(torch.nn.Module):
    """Records its input; logits of zeros."""

    def forward(self, x):
        self.seen = x.clone()
        return torch.zeros(x.shape[0], 1, *x.shape[2:])


class RegionModel(nn.Module):
    """Its output depends on the input inside `region` only (a mask multiplies the features).

    `channels` output logits; those in `silent` have zero weights (a background logit that explains nothing).
    `features` is the layer Grad-CAM reads.
    """

    def __init__(self, region: torch.Tensor, channels: int = 1, silent: tuple[int, ...] = ()):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.features = nn.Identity()
        self.head = nn.Conv2d(4, channels, 1, bias=False)
        nn.init.uniform_(self.conv.weight, 0.0, 0.5)
        nn.init.uniform_(self.head.weight, 0.5, 1.0)
        with torch.no_grad():
            for channel in silent:
                self.head.weight[channel] = 0.0
        self.register_buffer("region", region)

    def forward(self, x):
        return self.head(self.features(self.relu(self.conv(x)) * self.region))


def resunet_spec(size: int, dataset: str = "toy", experiment: str = "unit", **training) -> dict:
    """A model spec (as `ModelSpec.from_dict` reads it) of a small residual U-Net trained on the CPU.

    `training` overrides or adds training settings (target, threshold, size_policy, input_scaling, ...).
    """
    return {
        "dataset": dataset,
        "experiment": experiment,
        "split": "s",
        "augmentation": None,
        "arch": "resunet",
        "encoder": "none",
        "reg": "none",
        "regularization": {"extra_blocks": 0, "dropout": 0.0, "l2": 0.0},
        "training": {
            "epochs": 1,
            "batch_size": 2,
            "lr": 0.001,
            "loss": "bce_dice",
            "input_size": size,
            "size_policy": "resize",
            "encoder_weights": None,
            "prefilter_sigma": 0.0,
            "threshold": 0.5,
            "device": "cpu",
            "amp": False,
            "input_scaling": "imagenet",
            "target": "binary",
            "type_head": False,
            **training,
        },
        "seed": 3,
    }
