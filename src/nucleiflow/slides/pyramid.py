"""Tiled pyramidal OME-TIFF, written tile by tile: the label images of the slide stage and the synthetic slides.

Level 0 and its 2x downsamples (sub-IFDs, as QuPath, napari and Bio-Formats read OME pyramids) are written
from a tile function, one tile in memory at a time, so a 50k x 50k image costs one tile of memory. Each
level's tile is asked of `tile_of(level, y, x, height, width)` in that level's pixels; the caller renders or
composes it at that scale (no level is read back to build the next).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import tifffile

from nucleiflow.io import atomic_path

TILE = 512  # pixels a side: QuPath's and Bio-Formats' usual tile


def level_shapes(height: int, width: int, min_size: int = TILE) -> list[tuple[int, int]]:
    """(height, width) of level 0 and each 2x downsample until both sides fit in `min_size`."""
    shapes = [(height, width)]
    while max(shapes[-1]) > min_size:
        h, w = shapes[-1]
        shapes.append((math.ceil(h / 2), math.ceil(w / 2)))
    return shapes


def _tiles(tile_of, level: int, shape, samples: int, dtype, tile: int) -> Iterator[np.ndarray]:
    height, width = shape
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            h, w = min(tile, height - y), min(tile, width - x)
            data = np.asarray(tile_of(level, y, x, h, w), dtype=dtype)
            padded = np.zeros((tile, tile, samples) if samples > 1 else (tile, tile), dtype)
            padded[:h, :w] = data
            yield padded


def write_pyramid(
    path: str | Path,
    height: int,
    width: int,
    tile_of: Callable[[int, int, int, int, int], np.ndarray],
    *,
    dtype=np.uint8,
    samples: int = 1,
    mpp: float | None = None,
    tile: int = TILE,
    compression: str = "zlib",
    name: str | None = None,
) -> Path:
    """Write a tiled pyramidal OME-TIFF at `path` atomically; `samples` 3: RGB, 1: one channel (labels).

    `mpp` (microns per pixel of level 0) goes into the OME PhysicalSizeX/Y and the TIFF resolution tags.
    """
    shapes = level_shapes(height, width, tile)
    axes = "YXS" if samples > 1 else "YX"
    metadata = {"axes": axes}
    if name:
        metadata["Name"] = name
    options = {
        "tile": (tile, tile),
        "compression": compression,
        "photometric": "rgb" if samples == 3 else "minisblack",
        "dtype": dtype,
    }
    with atomic_path(path, suffix=".ome.tif") as tmp, tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tif:
        for level, shape in enumerate(shapes):
            full = (*shape, samples) if samples > 1 else shape
            level_options = dict(options)
            if mpp:
                scale = width / shape[1]
                level_options["resolution"] = (1e4 / (mpp * scale), 1e4 / (mpp * scale))
                level_options["resolutionunit"] = "CENTIMETER"
            if level == 0:
                if mpp:
                    metadata.update(
                        PhysicalSizeX=mpp, PhysicalSizeY=mpp, PhysicalSizeXUnit="µm", PhysicalSizeYUnit="µm"
                    )
                tif.write(
                    _tiles(tile_of, level, shape, samples, dtype, tile),
                    shape=full,
                    subifds=len(shapes) - 1,
                    metadata=metadata,
                    **level_options,
                )
            else:
                tif.write(
                    _tiles(tile_of, level, shape, samples, dtype, tile),
                    shape=full,
                    subfiletype=1,
                    metadata=None,
                    **level_options,
                )
    return Path(path)
