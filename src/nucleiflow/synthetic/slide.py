"""A synthetic whole-slide image: a tiled pyramidal OME-TIFF with H&E tissue pieces on glass.

The slide is rendered procedurally, tile by tile and level by level (no level is ever whole in memory),
so a 50k x 50k slide costs one tile of memory: nuclei sit one per cell of a square grid (`spacing_um`),
each present, placed, sized and shaped by a hash of its cell; tissue is the union of wobbly ellipses
given as fractions of the slide. Pixel values follow Beer-Lambert with the H&E stain vectors of
`shapes` (purple nuclei, pink stroma, near-white glass).

`synthetic_nuclei` lists the nuclei (level-0 centres and radii) of a small slide: the ground truth
the slide-stage tests count against.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nucleiflow.slides.pyramid import write_pyramid
from nucleiflow.synthetic.shapes import EOSIN, HEMATOXYLIN

# Tissue pieces (centre y, centre x, radius y, radius x) as fractions of the slide's height and width.
DEFAULT_TISSUE = ((0.35, 0.30, 0.22, 0.20), (0.60, 0.70, 0.25, 0.22))
GLASS_RGB = 244.0


@dataclass(frozen=True)
class SyntheticSlide:
    """The look of a synthetic slide: size, resolution, tissue pieces, nucleus grid and sizes (um)."""

    width: int
    height: int
    mpp: float = 0.5
    seed: int = 0
    tissue: tuple = DEFAULT_TISSUE
    spacing_um: float = 14.0
    radius_um: tuple = (2.0, 3.2)
    presence: float = 0.7  # fraction of tissue grid cells holding a nucleus
    tile: int = 512
    extra: dict = field(default_factory=dict)

    @property
    def spacing_px(self) -> float:
        return self.spacing_um / self.mpp


def _hash(a: np.ndarray, b: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """Uniform [0, 1) floats from integer cell coordinates (a splitmix64-style mix)."""
    x = (a.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ (b.astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9))
    x ^= np.uint64((seed * 1000003 + salt * 7919) & 0xFFFFFFFFFFFFFFFF)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _tissue(slide: SyntheticSlide, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Whether level-0 points (y, x) lie in tissue: inside a wobbly ellipse of `slide.tissue`."""
    inside = np.zeros(np.broadcast(y, x).shape, bool)
    for k, (cy, cx, ry, rx) in enumerate(slide.tissue):
        dy = (y / slide.height - cy) / ry
        dx = (x / slide.width - cx) / rx
        angle = np.arctan2(dy, dx)
        wobble = 1.0 + 0.08 * np.sin(3 * angle + k) + 0.05 * np.sin(7 * angle + 2 * k)
        inside |= dy**2 + dx**2 <= wobble**2
    return inside


def _touches_tissue(slide: SyntheticSlide, y0: float, x0: float, y1: float, x1: float) -> bool:
    """Whether the level-0 box may hold tissue (each piece's bounding box, its wobble and a nucleus of margin)."""
    margin = slide.spacing_px
    for cy, cx, ry, rx in slide.tissue:
        reach_y, reach_x = 1.14 * ry * slide.height + margin, 1.14 * rx * slide.width + margin
        near_y = y0 < cy * slide.height + reach_y and y1 > cy * slide.height - reach_y
        if near_y and x0 < cx * slide.width + reach_x and x1 > cx * slide.width - reach_x:
            return True
    return False


def _cell_nuclei(slide: SyntheticSlide, row: np.ndarray, col: np.ndarray):
    """Per grid cell: present, centre (y, x) in level-0 px, semi-axes (a, b) px, angle."""
    s = slide.spacing_px
    r_lo, r_hi = (r / slide.mpp for r in slide.radius_um)
    radius = r_lo + (r_hi - r_lo) * _hash(row, col, slide.seed, 3)
    ratio = 1.0 + 0.5 * _hash(row, col, slide.seed, 4)
    a, b = radius * np.sqrt(ratio), radius / np.sqrt(ratio)
    room = np.maximum(s / 2 - a - 1.5, 0)  # the nucleus stays inside its cell: neighbours never merge
    cy = (row + 0.5) * s + (2 * _hash(row, col, slide.seed, 1) - 1) * room
    cx = (col + 0.5) * s + (2 * _hash(row, col, slide.seed, 2) - 1) * room
    present = (_hash(row, col, slide.seed, 0) < slide.presence) & _tissue(slide, cy, cx)
    angle = math.pi * _hash(row, col, slide.seed, 5)
    return present, cy, cx, a, b, angle


def render_tile(slide: SyntheticSlide, level: int, y: int, x: int, height: int, width: int) -> np.ndarray:
    """(height, width, 3) uint8 of pyramid `level` (2**level downsample) at that level's pixel (y, x)."""
    scale = 2**level
    if not _touches_tissue(slide, y * scale, x * scale, (y + height) * scale, (x + width) * scale):
        return np.full((height, width, 3), round(GLASS_RGB), np.uint8)  # glass: what the renderer gives there
    yy = (np.arange(y, y + height)[:, None] + 0.5) * scale
    xx = (np.arange(x, x + width)[None, :] + 0.5) * scale
    s = slide.spacing_px
    row, col = np.floor(yy / s).astype(np.int64), np.floor(xx / s).astype(np.int64)
    row, col = np.broadcast_to(row, (height, width)), np.broadcast_to(col, (height, width))
    present, cy, cx, a, b, angle = _cell_nuclei(slide, row, col)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    nucleus = present & ((u / a) ** 2 + (v / b) ** 2 <= 1.0)
    tissue = _tissue(slide, yy, xx)
    texture = 0.85 + 0.3 * _hash(np.floor(yy / 3).astype(np.int64), np.floor(xx / 3).astype(np.int64), slide.seed, 9)
    hematoxylin = np.where(nucleus, 1.3 * texture, 0.04 * texture * tissue)
    eosin = np.where(tissue, np.where(nucleus, 0.15, 0.35) * texture, 0.0)
    density = hematoxylin[..., None] * HEMATOXYLIN + eosin[..., None] * EOSIN
    rgb = GLASS_RGB * np.exp(-density)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def write_synthetic_slide(path: str | os.PathLike, slide: SyntheticSlide) -> Path:
    """Write `slide` as a tiled pyramidal OME-TIFF (zlib tiles, 2x levels, microns per pixel), atomically."""

    def tile_of(level, y, x, h, w):
        return render_tile(slide, level, y, x, h, w)

    return write_pyramid(
        path,
        slide.height,
        slide.width,
        tile_of,
        samples=3,
        mpp=slide.mpp,
        tile=slide.tile,
        name=Path(path).name,
    )


def synthetic_nuclei(slide: SyntheticSlide) -> dict[str, np.ndarray]:
    """Every nucleus of a (small) slide: level-0 centres `y`, `x` and mean radius `radius` in pixels."""
    s = slide.spacing_px
    row, col = np.mgrid[: math.ceil(slide.height / s), : math.ceil(slide.width / s)]
    present, cy, cx, a, b, _ = _cell_nuclei(slide, row, col)
    inside = present & (cy >= 0) & (cy < slide.height) & (cx >= 0) & (cx < slide.width)
    return {"y": cy[inside], "x": cx[inside], "radius": np.sqrt(a * b)[inside]}


# The demo's slide: two tissue pieces on glass, 20x (0.5 um/px), small enough for seconds of inference.
DEMO_SLIDE = SyntheticSlide(width=640, height=480, mpp=0.5, seed=11, tile=256)
