"""Benchmark: merging DSB2018 per-nucleus mask PNGs into instance maps.

Compares, on the same images (by default the 45 real images of
../shared/data/dsb2018_stage1_test_sample; `--synthetic N` generates N
instead), repeated `--repeat` times:

* ``naive``: a per-file loop - decode each mask with Pillow to a full-size
  array, then full-image boolean updates of the instance and coverage maps
* ``converter``: `nucleiflow.datasets.dsb2018.merge_nucleus_masks` - the
  same decode, then updates on each nucleus's bounding box only
* ``converter, N threads``: the same with a thread pool decoding masks in parallel

and checks that all methods give identical instance maps and overlap counts.
Prints wall and CPU seconds, images/s and masks/s per method. Run from the
repository root:

    .venv/bin/python benchmarks/bench_dsb_merge.py --repeat 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from nucleiflow.archive import safe_extract_zip
from nucleiflow.datasets.dsb2018 import find_samples, merge_nucleus_masks
from nucleiflow.synthetic.dsb2018 import write_stage1_zip

SHARED_DSB = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018_stage1_test_sample"


def naive_merge(paths, shape) -> tuple[np.ndarray, int]:
    """The straightforward loop: one full-size decode and three full-image passes per mask."""
    instances = np.zeros(shape, np.int32)
    coverage = np.zeros(shape, np.uint16)
    for k, path in enumerate(paths, start=1):
        mask = np.asarray(Image.open(path))
        if mask.ndim == 3:
            mask = mask[..., 0]
        on = mask > 0
        instances[on] = k
        coverage += on
    return instances, int(np.count_nonzero(coverage > 1))


def image_shape(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:  # header only
        return im.height, im.width


def run(method, samples, shapes, repeat: int) -> tuple[float, float, list]:
    """(wall seconds, CPU seconds, results of the last pass)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        results = [method(s, shape) for s, shape in zip(samples, shapes)]
    return time.perf_counter() - wall, time.process_time() - cpu, results


def synthetic_root(n_images: int, folder: Path) -> Path:
    return safe_extract_zip(write_stage1_zip(folder / "stage1_train.zip", n_images, seed=0), folder / "unpacked")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", type=Path, default=SHARED_DSB, help="unpacked DSB2018 folder (default: the shared sample)"
    )
    parser.add_argument("--synthetic", type=int, default=0, help="use N synthetic stage1_train images instead")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="threads of the pooled run (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = synthetic_root(args.synthetic, Path(tmp)) if args.synthetic else args.root
        samples = find_samples(root)
        shapes = [image_shape(s.image) for s in samples]
        n_masks = sum(len(s.masks) for s in samples)
        print(f"{len(samples)} images, {n_masks} mask files from {root}, {args.repeat} passes")
        with ThreadPoolExecutor(args.threads) as pool:
            methods = {
                "naive": lambda s, shape: naive_merge(s.masks, shape),
                "converter": lambda s, shape: merge_nucleus_masks(s.masks, shape, s.image),
                f"converter, {args.threads} threads": lambda s, shape: merge_nucleus_masks(
                    s.masks, shape, s.image, pool
                ),
            }
            timings = {name: run(method, samples, shapes, args.repeat) for name, method in methods.items()}
    reference = timings["naive"][2]
    for name, (_, _, results) in timings.items():
        for (a, oa), (b, ob) in zip(reference, results):
            assert oa == ob and np.array_equal(a, b), f"{name} differs from the naive loop"
    print(f"{'method':<24}{'wall s':>9}{'CPU s':>9}{'images/s':>10}{'masks/s':>10}{'speed-up':>10}")
    naive_wall = timings["naive"][0]
    for name, (wall, cpu, _) in timings.items():
        images = len(samples) * args.repeat
        masks_per_s = n_masks * args.repeat / wall
        print(f"{name:<24}{wall:>9.2f}{cpu:>9.2f}{images / wall:>10.1f}{masks_per_s:>10.0f}{naive_wall / wall:>10.2f}")


if __name__ == "__main__":
    main()
