"""Stored predictions: one HDF5 file per model and split, probabilities as uint8 (gzip).

Torch-free, so the figure stage reads predictions without a deep-learning stack.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


def write_probability(h5: h5py.File, image_id: str, prob: np.ndarray) -> None:
    h5.create_dataset(
        image_id, data=np.rint(prob * 255).astype(np.uint8), compression="gzip", compression_opts=4, chunks=prob.shape
    )


def read_probability(predictions_path: str | Path, image_id: str) -> np.ndarray:
    with h5py.File(predictions_path, "r") as f:
        if image_id not in f:
            raise KeyError(f"{predictions_path}: no prediction for image {image_id!r}")
        return f[image_id][()].astype(np.float32) / 255.0
