"""Benchmark and full check: converting the real DSB2018 stage1_train release.

Unpacks `stage1_train.zip` (the real BBBC038 file, by default the shared copy in
../shared/data/dsb2018_stage1_train) into a temporary folder with the workflow's
`safe_extract_zip`, converts it with `convert_dsb2018` (what the `unpack` and
`convert` rules run), and prints wall and CPU seconds, images/s and the peak
resident memory of this process (`ru_maxrss`; the figure after the imports is
printed beside it). Then every image of the store is checked against the
official run-length labels (`stage1_train_labels.csv.zip`): the same multiset
of nuclei, pixel for pixel. The test suite checks a seeded sample of the same
(workflow_tests/datasets/test_dsb2018_real_release.py); this is the full set.

    .venv/bin/python benchmarks/bench_dsb2018_convert.py                  # ~3 min on an idle 2-core CPU
    .venv/bin/python benchmarks/bench_dsb2018_convert.py --workers 4 --tmp /scratch
"""

from __future__ import annotations

import argparse
import csv
import io
import resource
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

from nucleiflow.archive import safe_extract_zip
from nucleiflow.datasets.dsb2018 import convert_dsb2018
from nucleiflow.datasets.rle import rle_decode
from nucleiflow.store import Store

SHARED_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018_stage1_train"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def read_labels(path: Path) -> dict[str, list[str]]:
    """{image id: [run-length code, ...]} of stage1_train_labels.csv inside its zip."""
    rows: dict[str, list[str]] = {}
    with zipfile.ZipFile(path) as archive, archive.open("stage1_train_labels.csv") as raw:
        for row in csv.DictReader(io.TextIOWrapper(raw, newline="")):
            rows.setdefault(row["ImageId"], []).append(row["EncodedPixels"])
    return rows


def check_against_labels(store: Store, labels: dict[str, list[str]]) -> tuple[int, list[str]]:
    """(nuclei checked, ids whose nuclei differ from their label rows)."""
    mismatched, nuclei = [], 0
    for image_id in store.ids:
        instances = store[image_id].instances
        got = Counter((instances == k).tobytes() for k in np.unique(instances) if k)
        expected = Counter(rle_decode(code, *instances.shape).tobytes() for code in labels[image_id])
        nuclei += sum(expected.values())
        if got != expected:
            mismatched.append(image_id)
    return nuclei, mismatched


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", type=Path, default=SHARED_TRAIN / "stage1_train.zip")
    parser.add_argument("--labels", type=Path, default=SHARED_TRAIN / "stage1_train_labels.csv.zip")
    parser.add_argument("--workers", type=int, default=1, help="mask-decoding threads (convert_dsb2018)")
    parser.add_argument("--tmp", type=Path, default=None, help="where to unpack and write the store")
    parser.add_argument("--skip-check", action="store_true", help="skip the pixel check against the labels")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    after_imports = peak_rss_mib()
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        wall, cpu = time.perf_counter(), time.process_time()
        root = safe_extract_zip(args.zip, Path(tmp) / "stage1_train")
        unpack_wall, unpack_cpu = time.perf_counter() - wall, time.process_time() - cpu
        wall, cpu = time.perf_counter(), time.process_time()
        summary = convert_dsb2018([root], Path(tmp) / "store.h5", progress=False, workers=args.workers)
        convert_wall, convert_cpu = time.perf_counter() - wall, time.process_time() - cpu
        n = summary["images"]
        print(f"{args.zip}: {n} images, {summary['nuclei']} nuclei, {summary['overlap_pixels']} overlapping pixels")
        print(f"unpack:  {unpack_wall:7.1f} s wall, {unpack_cpu:7.1f} s CPU")
        print(
            f"convert: {convert_wall:7.1f} s wall, {convert_cpu:7.1f} s CPU, {n / convert_wall:.2f} images/s wall, "
            f"{n / convert_cpu:.2f} images/s CPU ({args.workers} worker thread(s))"
        )
        print(f"peak RSS {peak_rss_mib():.0f} MiB ({after_imports:.0f} MiB after the imports)")
        if not args.skip_check:
            wall = time.perf_counter()
            nuclei, mismatched = check_against_labels(Store(Path(tmp) / "store.h5"), read_labels(args.labels))
            print(
                f"pixel check against the official run-length labels: {n - len(mismatched)} of {n} images equal, "
                f"{nuclei} label rows ({time.perf_counter() - wall:.1f} s)"
                + (f"; differ: {', '.join(mismatched[:5])}" if mismatched else "")
            )


if __name__ == "__main__":
    main()
