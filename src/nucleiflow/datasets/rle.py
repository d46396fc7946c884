"""Run-length encoded masks of the 2018 Data Science Bowl (the official stage-1 solution file).

The solution (`stage1_solution.csv`, columns `ImageId,EncodedPixels,Height,Width,Usage`) holds one row
per nucleus; `EncodedPixels` is "start length" pairs over the image flattened in column-major order
(down the first column, then the next), with 1-based pixel indices.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from nucleiflow.errors import DataFormatError

SOLUTION_COLUMNS = ("ImageId", "EncodedPixels", "Height", "Width")


def rle_decode(encoded: str, height: int, width: int) -> np.ndarray:
    """Boolean (height, width) mask of one run-length encoded nucleus (1-based, column-major pairs)."""
    numbers = np.asarray(encoded.split(), dtype=np.int64)
    if len(numbers) % 2:
        raise DataFormatError(f"run-length code {encoded[:40]!r}...: odd count of numbers, expected start/length pairs")
    starts, lengths = numbers[0::2] - 1, numbers[1::2]
    ends = starts + lengths
    if len(starts) and (starts.min() < 0 or lengths.min() < 1 or ends.max() > height * width):
        raise DataFormatError(f"run-length code {encoded[:40]!r}...: a run lies outside a {height}x{width} image")
    flat = np.zeros(height * width, bool)
    for start, end in zip(starts, ends):
        flat[start:end] = True
    return flat.reshape((height, width), order="F")


def rle_encode(mask: np.ndarray) -> str:
    """The competition's encoding of a binary mask (inverse of `rle_decode`)."""
    flat = np.concatenate([[0], np.asarray(mask, bool).flatten(order="F").astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat)) + 1  # 1-based starts and one-past-ends, alternating
    edges[1::2] -= edges[0::2]
    return " ".join(map(str, edges))


def read_solution(path: str | Path) -> dict[str, list[tuple[str, int, int]]]:
    """{image id: [(run-length code, height, width), ...]} in file order; empty codes are skipped."""
    path = Path(path)
    rows: dict[str, list[tuple[str, int, int]]] = {}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in SOLUTION_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataFormatError(f"{path}: missing column(s) {missing}; expected {', '.join(SOLUTION_COLUMNS)}")
        for row in reader:
            code = (row["EncodedPixels"] or "").strip()
            if code:
                rows.setdefault(row["ImageId"], []).append((code, int(row["Height"]), int(row["Width"])))
    return rows


def decode_instances(rows: list[tuple[str, int, int]], shape: tuple[int, int], image_id: str) -> tuple[np.ndarray, int]:
    """Instance map (id k = k-th row) of one image and the count of pixels claimed by two or more rows."""
    instances = np.zeros(shape, np.int32)
    coverage = np.zeros(shape, np.uint16)
    for k, (code, height, width) in enumerate(rows, start=1):
        if (height, width) != tuple(shape):
            raise DataFormatError(
                f"solution row {k} of image {image_id}: size {(height, width)} differs from the image's {tuple(shape)}"
            )
        mask = rle_decode(code, height, width)
        instances[mask] = k
        coverage += mask
    return instances, int(np.count_nonzero(coverage > 1))
