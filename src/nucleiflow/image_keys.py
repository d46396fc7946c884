"""Per-image keys every converter writes into the store's metadata, and what a broken image file raises.

`content_hash` finds exact duplicates (`splits` keeps them on one side of a split); `modality_features`
are the colour statistics `splits.modality_clusters` clusters on; `modality_hint` a coarse imaging look
(`eda` falls back to it for stores without one).
"""

from __future__ import annotations

import hashlib
import zlib

import numpy as np
from PIL import Image

MODALITY_FEATURES = ("mean_red", "mean_green", "mean_blue", "grey_mean", "grey_std")
GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601 luma
# What Pillow raises for a broken or truncated image file (several types).
PNG_READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error, Image.DecompressionBombError)


def content_hash(image: np.ndarray) -> str:
    """SHA-256 of a uint8 image's pixels and shape: equal for exact duplicates only."""
    image = np.ascontiguousarray(image)
    return hashlib.sha256(image.tobytes() + str(image.shape).encode()).hexdigest()


def grey(image: np.ndarray) -> np.ndarray:
    """Float32 luma (0-255) of an RGB uint8 image."""
    return image.reshape(-1, 3).astype(np.float32) @ GREY_WEIGHTS


def modality_features(image: np.ndarray) -> dict[str, float]:
    """The colour statistics `modality_cluster` clusters on (mean of each channel, grey mean and std)."""
    means = image.reshape(-1, 3).mean(axis=0, dtype=np.float64)
    luma = grey(image)
    values = (*means, luma.mean(dtype=np.float64), luma.std(dtype=np.float64))
    return {name: round(float(v), 4) for name, v in zip(MODALITY_FEATURES, values)}


def modality_hint(image: np.ndarray) -> str:
    """Coarse imaging look from colour statistics: fluorescence, brightfield or he."""
    mean = image.reshape(-1, 3).mean(axis=0)
    spread = float(mean.max() - mean.min())
    if mean.mean() < 100:
        return "fluorescence"
    return "he" if spread > 20 else "brightfield"
