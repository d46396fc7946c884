"""The plan of a slide (resolution, source level, region chunks over tissue) and the segmentation of one chunk.

Three coordinate frames:

* level 0: the slide's full-resolution pixels (what QuPath shows, where every output is placed);
* the run frame: pixels at the model's resolution (`run_mpp`, its training data's microns per pixel),
  covering the region of interest, `scale` = slide mpp / run mpp run pixels per level-0 pixel; the
  source level (closest to run_mpp, `reader.best_level`) is resampled to it;
* the tissue mask: the low-resolution level the tissue was detected on (`tissue.low_resolution`).

The run frame is cut into square chunks (`chunk_size`, over tissue only). A chunk is segmented with a
halo: its window (chunk plus `halo` on each side) is read, cut into overlapping tiles on one grid shared
by the whole slide, the tiles' maps averaged, and the nuclei found on the whole window's maps. A nucleus
belongs to the one chunk that holds its centroid, and the halo holds it whole: nuclei across chunk and
tile borders are found once and whole, the rule of the `inference:` stage (nuclei from the stitched maps,
never per tile). Every tile lies on the slide's grid and the halo holds each tile that covers a pixel
within `NUCLEUS_MARGIN_UM` of the chunk, so the maps there are the same whichever chunk, job or run
computes them.

Each chunk's nuclei (table, polygons, level-0 label crop) are written atomically as one `.npz` carrying
the plan's fingerprint, so a killed job resumes from the chunks it finished and a scattered run (parts
of the chunk list in several jobs) gathers exactly what one job writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from skimage.color import rgb2hed
from skimage.measure import regionprops

from nucleiflow.errors import ConfigError, DataFormatError
from nucleiflow.io import atomic_path
from nucleiflow.slides.reader import Region, Slide, best_level, open_slide
from nucleiflow.slides.stain import plan_normaliser, plan_stains
from nucleiflow.slides.tissue import TissueSettings, low_resolution, tissue_mask

log = logging.getLogger(__name__)

WHITE = 255
PLAN_VERSION = 1
# How far (um) a nucleus may reach from its centroid: a chunk's window holds this much beyond the chunk
# with the maps of the whole slide, so the nuclei it keeps are whole (large tumour nuclei are ~20 um across).
NUCLEUS_MARGIN_UM = 16.0
# The per-nucleus columns a chunk stores (numeric); the gather adds `nucleus_id` and the type name.
NUCLEUS_COLUMNS = (
    "centroid_x_px",
    "centroid_y_px",
    "centroid_x_um",
    "centroid_y_um",
    "area_um2",
    "perimeter_um",
    "eccentricity",
    "solidity",
    "type",
    "type_probability",
    "mean_hematoxylin",
    "mean_eosin",
)


@dataclass(frozen=True)
class SlideOptions:
    """How one slide is cut and read (`slides.<name>` settings, with the model's tile size)."""

    run_mpp: float
    tile_size: int = 256
    tile_overlap: int = 32
    chunk_size: int = 2048
    region: Region | None = None
    level: int | None = None
    tissue: TissueSettings = field(default_factory=TissueSettings)
    stain_normalisation: dict | None = None  # {"reference": image path or None}: Macenko, one transform per slide

    @property
    def stride(self) -> int:
        return self.tile_size - self.tile_overlap

    @property
    def margin(self) -> int:
        """Run pixels a nucleus owned by a chunk may reach beyond it (`NUCLEUS_MARGIN_UM`)."""
        return math.ceil(NUCLEUS_MARGIN_UM / self.run_mpp)

    @property
    def halo(self) -> int:
        """The window's reach beyond its chunk, on the tile grid: every tile covering a pixel within `margin`
        of the chunk lies in the window, so those pixels' maps are the ones any other window computes."""
        return self.stride * ((self.margin + self.tile_size - 1) // self.stride)

    @property
    def chunk(self) -> int:
        """The chunk side, rounded up to the tile grid."""
        return max(1, math.ceil(self.chunk_size / self.stride)) * self.stride

    def check(self) -> None:
        if self.tile_size % 32 or self.tile_size <= 0:
            raise ConfigError(f"slides tile_size: {self.tile_size} must be a positive multiple of 32")
        if not 0 <= self.tile_overlap < self.tile_size:
            raise ConfigError(f"slides tile_overlap: {self.tile_overlap} must be >= 0 and < tile_size")


# ---------------------------------------------------------------- the plan


def make_plan(path: str | Path, options: SlideOptions, slide_mpp: float | None = None) -> tuple[dict, dict]:
    """(plan, images) of one slide: the plan is JSON (frames, level, chunk list); images: thumbnail, tissue mask.

    Raises a one-line DataFormatError for a slide without microns per pixel (and no `slide_mpp`), a level
    or region outside the slide. No tissue gives a plan without chunks (empty outputs and a note).
    """
    options.check()
    with open_slide(path, slide_mpp) as slide:
        if slide.mpp is None:
            raise DataFormatError(f"{path}: the slide records no microns per pixel; set slides.<name>.slide_mpp for it")
        region = options.region or Region(0, 0, *slide.dimensions)
        slide.check_region(region)
        level = best_level(slide, options.run_mpp) if options.level is None else options.level
        slide.check_level(level)
        low, thumb_mpp = low_resolution(slide, options.tissue.mpp)
        mask = tissue_mask(low, thumb_mpp, options.tissue)
        # The overview's thumbnail: about 1,200 px on the long side, never finer than the mask needs.
        side_um = max(slide.dimensions) * slide.mpp
        thumbnail, picture_mpp = low_resolution(slide, min(thumb_mpp, max(slide.mpp, side_um / 1200)))
        factor = thumb_mpp / slide.mpp  # level-0 px per mask px
        inside = np.zeros_like(mask)
        y0, x0 = math.floor(region.y / factor), math.floor(region.x / factor)
        y1, x1 = math.ceil(region.y1 / factor), math.ceil(region.x1 / factor)
        inside[y0:y1, x0:x1] = True
        mask &= inside
        scale = slide.mpp / options.run_mpp
        run_w, run_h = max(1, round(region.width * scale)), max(1, round(region.height * scale))
        plan = {
            "version": PLAN_VERSION,
            "slide": str(path),
            "backend": slide.backend,
            "dimensions": list(slide.dimensions),
            "level_dimensions": [list(d) for d in slide.level_dimensions],
            "level_downsamples": list(slide.level_downsamples),
            "slide_mpp": slide.mpp,
            "mpp_source": "metadata" if slide_mpp is None or slide.mpp != slide_mpp else "slides.<name>.slide_mpp",
            "level": level,
            "level_mpp": slide.level_mpp(level),
            "run_mpp": options.run_mpp,
            "scale": scale,
            "region": asdict(region),
            "run_size": [run_w, run_h],
            "tile_size": options.tile_size,
            "tile_overlap": options.tile_overlap,
            "stride": options.stride,
            "halo": options.halo,
            "chunk": options.chunk,
            "mask_mpp": thumb_mpp,
            "thumbnail_mpp": picture_mpp,
            "mask_factor": factor,
            "tissue_area_mm2": float(mask.sum()) * (thumb_mpp / 1000.0) ** 2,
        }
        plan["chunks"] = chunk_list(plan, mask)
        plan["stain"] = plan_stains(thumbnail, mask, options.stain_normalisation)
    plan["fingerprint"] = fingerprint(plan)
    return plan, {"thumbnail": thumbnail, "mask": mask}


def fingerprint(plan: dict, extra: str = "") -> str:
    """A digest of everything a chunk's result depends on except the model (added by the caller)."""
    keys = {k: v for k, v in plan.items() if k not in ("fingerprint", "tissue_area_mm2")}
    return hashlib.sha256((json.dumps(keys, sort_keys=True) + extra).encode()).hexdigest()[:16]


def _mask_window(plan: dict, mask: np.ndarray, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    """The tissue mask pixels under run-frame window [y0, y1) x [x0, x1) (clipped to the mask)."""
    region, scale, factor = plan["region"], plan["scale"], plan["mask_factor"]
    my0 = max(0, math.floor((region["y"] + y0 / scale) / factor))
    mx0 = max(0, math.floor((region["x"] + x0 / scale) / factor))
    my1 = min(mask.shape[0], math.ceil((region["y"] + y1 / scale) / factor))
    mx1 = min(mask.shape[1], math.ceil((region["x"] + x1 / scale) / factor))
    return mask[my0:my1, mx0:mx1]


def chunk_list(plan: dict, mask: np.ndarray) -> list[dict]:
    """The chunks (run-frame y, x, height, width) that hold tissue, row by row."""
    run_w, run_h = plan["run_size"]
    step = plan["chunk"]
    chunks = []
    for y in range(0, run_h, step):
        for x in range(0, run_w, step):
            h, w = min(step, run_h - y), min(step, run_w - x)
            if _mask_window(plan, mask, y, x, y + h, x + w).any():
                chunks.append({"index": len(chunks), "y": y, "x": x, "height": h, "width": w})
    return chunks


def part_chunks(plan: dict, part: int, parts: int) -> list[dict]:
    """The chunks job `part` of `parts` segments: every parts-th chunk, so each job gets tissue of every row."""
    if not 0 <= part < parts:
        raise ConfigError(f"slides part {part} is outside 0-{parts - 1}")
    return [chunk for chunk in plan["chunks"] if chunk["index"] % parts == part]


# ---------------------------------------------------------------- reading a window in the run frame


def read_run_window(slide: Slide, plan: dict, y0: int, x0: int, height: int, width: int) -> np.ndarray:
    """RGB uint8 of run-frame window [y0, y0+height) x [x0, x0+width): the source level resampled, white outside.

    Each run pixel is sampled at the same source position whatever window asks for it (bilinear, the
    source position a function of the run pixel alone), so overlapping windows agree pixel for pixel.
    """
    region, scale = plan["region"], plan["scale"]
    level = plan["level"]
    downsample = plan["level_downsamples"][level]
    per_run = 1.0 / (scale * downsample)  # source-level px per run px
    # Source-level coordinate (pixel-centre convention) of run pixel i: (i + 0.5) * per_run - 0.5 + offset.
    left = (region["x"] / downsample) + (x0 + 0.5) * per_run - 0.5
    top = (region["y"] / downsample) + (y0 + 0.5) * per_run - 0.5
    sx0, sy0 = math.floor(left) - 1, math.floor(top) - 1
    sw = math.ceil(width * per_run) + 3
    sh = math.ceil(height * per_run) + 3
    level_w, level_h = plan["level_dimensions"][level]
    # Reading outside the slide (the halo at its edges) gives white; keep the read within the region.
    source = slide.read_region(round(sx0 * downsample), round(sy0 * downsample), level, sw, sh)
    _whiten_outside(source, plan, sx0, sy0, downsample, level_w, level_h)
    if per_run == 1.0 and left == round(left) and top == round(top):
        oy, ox = round(top) - sy0, round(left) - sx0
        return np.ascontiguousarray(source[oy : oy + height, ox : ox + width])
    matrix = np.array([[per_run, 0.0, left - sx0], [0.0, per_run, top - sy0]], np.float64)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(
        source, matrix, (width, height), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=(WHITE,) * 3
    )


def _whiten_outside(source, plan, sx0, sy0, downsample, level_w, level_h) -> None:
    """Pixels of a source read outside the region of interest are glass (nothing there is segmented)."""
    region = plan["region"]
    rx0, ry0 = region["x"] / downsample - sx0, region["y"] / downsample - sy0
    rx1, ry1 = (region["x"] + region["width"]) / downsample - sx0, (region["y"] + region["height"]) / downsample - sy0
    h, w = source.shape[:2]
    ix0, iy0 = max(0, math.floor(rx0)), max(0, math.floor(ry0))
    ix1, iy1 = min(w, math.ceil(rx1)), min(h, math.ceil(ry1))
    if ix0 > 0:
        source[:, :ix0] = WHITE
    if iy0 > 0:
        source[:iy0] = WHITE
    if ix1 < w:
        source[:, max(ix1, 0) :] = WHITE
    if iy1 < h:
        source[max(iy1, 0) :] = WHITE


# ---------------------------------------------------------------- one chunk


def chunk_window(plan: dict, chunk: dict) -> tuple[int, int, int, int]:
    """(y0, x0, height, width) of a chunk's window: the chunk and its halo, on the tile grid."""
    halo = plan["halo"]
    y0, x0 = chunk["y"] - halo, chunk["x"] - halo
    stride, tile = plan["stride"], plan["tile_size"]
    height = _grid_length(chunk["height"] + 2 * halo, tile, stride)
    width = _grid_length(chunk["width"] + 2 * halo, tile, stride)
    return y0, x0, height, width


def _grid_length(length: int, tile: int, stride: int) -> int:
    """The smallest tile-grid length (tile + k * stride) covering `length`."""
    return tile + max(0, math.ceil((length - tile) / stride)) * stride


def window_tiles(plan: dict, mask: np.ndarray, y0: int, x0: int, height: int, width: int) -> list[tuple[int, int]]:
    """Tile origins (window px) on the slide's tile grid whose area holds tissue: glass is never run."""
    tile, stride = plan["tile_size"], plan["stride"]
    origins = []
    for ty in range(0, height - tile + 1, stride):
        for tx in range(0, width - tile + 1, stride):
            if _mask_window(plan, mask, y0 + ty, x0 + tx, y0 + ty + tile, x0 + tx + tile).any():
                origins.append((ty, tx))
    return origins


def window_maps(
    model, image: np.ndarray, origins: list[tuple[int, int]], tile: int
) -> tuple[np.ndarray | None, tuple[int, int]]:
    """(maps (C, h, w), their (y, x) in the window): the tiles' maps (batched), averaged where tiles overlap,
    over the tiles' bounding box only (the rest of the window is glass or outside the slide); None without tiles.

    Pixels of the box no tile covers keep zero maps (no nucleus).
    """
    if not origins:
        return None, (0, 0)
    top, left = min(y for y, _ in origins), min(x for _, x in origins)
    bottom, right = max(y for y, _ in origins) + tile, max(x for _, x in origins) + tile
    total, hits = None, np.zeros((bottom - top, right - left), np.float32)
    for start in range(0, len(origins), model.batch_size):
        batch = origins[start : start + model.batch_size]
        tiles = [image[y : y + tile, x : x + tile] for y, x in batch]
        for (y, x), maps in zip(batch, model.predict_maps_batch(tiles)):
            if total is None:
                total = np.zeros((maps.shape[0], *hits.shape), np.float32)
            total[:, y - top : y - top + tile, x - left : x - left + tile] += maps
            hits[y - top : y - top + tile, x - left : x - left + tile] += 1
    np.divide(total, hits, out=total, where=hits > 0)
    return total, (top, left)


def _on_tissue(plan: dict, mask: np.ndarray, y: float, x: float) -> bool:
    """Whether run-frame point (y, x) is on tissue or within one mask pixel of it (glass holds no nuclei)."""
    region, scale, factor = plan["region"], plan["scale"], plan["mask_factor"]
    my = int((region["y"] + (y + 0.5) / scale) / factor)
    mx = int((region["x"] + (x + 0.5) / scale) / factor)
    return bool(mask[max(0, my - 1) : my + 2, max(0, mx - 1) : mx + 2].any())


# skimage's `regionprops` eccentricity and solidity, with the same values (a test holds them equal) at a
# third of the cost: they were a third of a chunk's post-processing, which is the stage's slowest step on
# a CPU. skimage builds the hull with qhull from each pixel's four edge midpoints; the hull is the same
# from the midpoints of each row's first and last pixel, and OpenCV finds it without qhull's overhead.
_EDGE_MIDPOINTS = np.array([[-0.5, 0.0], [0.5, 0.0], [0.0, -0.5], [0.0, 0.5]])


def convex_area(image: np.ndarray) -> int:
    """Pixels of the convex hull image of a nucleus's mask (skimage's `area_convex`, borders included)."""
    from skimage.measure import grid_points_in_poly

    rows = np.flatnonzero(image.any(axis=1))
    first = image[rows].argmax(axis=1)
    last = image.shape[1] - 1 - image[rows, ::-1].argmax(axis=1)
    ends = np.concatenate([np.column_stack([rows, first]), np.column_stack([rows, last])])
    points = (ends[:, None, :] + _EDGE_MIDPOINTS).reshape(-1, 2).astype(np.float32)
    hull = cv2.convexHull(points)[:, 0, :].astype(np.float64)
    return int(np.count_nonzero(grid_points_in_poly(image.shape, hull, binarize=False) >= 1))


def eccentricity(image: np.ndarray) -> float:
    """Eccentricity of the ellipse with the mask's second moments (skimage's `eccentricity`)."""
    rows, cols = np.nonzero(image)
    var_r, var_c = rows.var(), cols.var()
    cov = ((rows - rows.mean()) * (cols - cols.mean())).mean()
    mean, spread = (var_r + var_c) / 2, np.hypot((var_r - var_c) / 2, cov)
    major, minor = mean + spread, max(mean - spread, 0.0)
    return 0.0 if major == 0 else float(np.sqrt(1 - minor / major))


def chunk_nuclei(
    model, plan: dict, chunk: dict, image: np.ndarray, maps: np.ndarray | None, mask=None, offset=(0, 0)
) -> dict:
    """The nuclei a chunk owns (centroid in the chunk, on tissue): table columns, outlines, a level-0 label crop.

    `image` and `maps` cover the part of the chunk's window at `offset` (y, x) within it.
    """
    from nucleiflow.polygons import label_polygons

    y0, x0, _, _ = chunk_window(plan, chunk)
    y0, x0 = y0 + offset[0], x0 + offset[1]
    if maps is None:
        return _empty_result()
    labels, types, type_maps = model.nuclei(maps)
    labels = np.asarray(labels)
    core_y0, core_x0 = chunk["y"] - y0, chunk["x"] - x0
    core_y1, core_x1 = core_y0 + chunk["height"], core_x0 + chunk["width"]
    owned = []
    for prop in regionprops(labels):
        cy, cx = prop.centroid
        inside = core_y0 - 0.5 <= cy < core_y1 - 0.5 and core_x0 - 0.5 <= cx < core_x1 - 0.5
        if inside and (mask is None or _on_tissue(plan, mask, y0 + cy, x0 + cx)):
            owned.append(prop)
    if not owned:
        return _empty_result()
    run_mpp, scale, region, slide_mpp = plan["run_mpp"], plan["scale"], plan["region"], plan["slide_mpp"]
    rows = {column: [] for column in NUCLEUS_COLUMNS}
    own_labels = np.zeros(labels.shape, np.int32)
    for local, prop in enumerate(owned, start=1):
        sl = prop.slice
        own_labels[sl][prop.image] = local
        cy, cx = prop.centroid
        px = region["x"] + (x0 + cx + 0.5) / scale
        py = region["y"] + (y0 + cy + 0.5) / scale
        pixels = rgb2hed(image[sl][prop.image][None])[0]  # per nucleus: no window-sized float64 copies
        kind = int(types.get(prop.label, 0)) if types is not None else 0
        if type_maps is not None and kind > 0:
            kind_prob = float(type_maps[kind][sl][prop.image].mean())
        else:
            kind_prob = float("nan")
        values = (
            px,
            py,
            px * slide_mpp,
            py * slide_mpp,
            prop.area * run_mpp**2,
            prop.perimeter * run_mpp,
            eccentricity(prop.image),
            prop.area / convex_area(prop.image),  # solidity
            kind,
            kind_prob,
            float(pixels[:, 0].mean()),
            float(pixels[:, 1].mean()),
        )
        for column, value in zip(NUCLEUS_COLUMNS, values):
            rows[column].append(value)
    # Pixel-exact outlines in window px (pixel corners), then level-0 px: exterior first, holes after.
    rings, nucleus_rings = [], [0]
    for outline in label_polygons(own_labels):
        for ring in (outline.exterior, *outline.holes):
            rings.append(
                np.column_stack([region["x"] + (x0 + ring[:, 0]) / scale, region["y"] + (y0 + ring[:, 1]) / scale])
            )
        nucleus_rings.append(len(rings))
    crop, origin = level0_crop(own_labels, plan, y0, x0)
    return {
        **{column: np.asarray(values, np.float64) for column, values in rows.items()},
        "ring_coords": np.concatenate(rings).astype(np.float64),
        "ring_offsets": np.cumsum([0] + [len(r) for r in rings]).astype(np.int64),
        "nucleus_rings": np.asarray(nucleus_rings, np.int64),
        "labels": crop.astype(np.uint32),
        "origin": np.asarray(origin, np.int64),
    }


def _empty_result() -> dict:
    return {
        **{column: np.zeros(0, np.float64) for column in NUCLEUS_COLUMNS},
        "ring_coords": np.zeros((0, 2), np.float64),
        "ring_offsets": np.zeros(1, np.int64),
        "nucleus_rings": np.zeros(1, np.int64),
        "labels": np.zeros((0, 0), np.uint32),
        "origin": np.zeros(2, np.int64),
    }


def level0_crop(run_labels: np.ndarray, plan: dict, y0: int, x0: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The owned nuclei's labels resampled (nearest) onto level-0 pixels: (crop, its level-0 (y, x) origin)."""
    rows = np.flatnonzero(run_labels.any(axis=1))
    cols = np.flatnonzero(run_labels.any(axis=0))
    region, scale = plan["region"], plan["scale"]
    # Level-0 pixels whose centres fall in the owned nuclei's run-frame bounding box.
    top = math.floor(region["y"] + (y0 + rows[0]) / scale)
    bottom = math.ceil(region["y"] + (y0 + rows[-1] + 1) / scale)
    left = math.floor(region["x"] + (x0 + cols[0]) / scale)
    right = math.ceil(region["x"] + (x0 + cols[-1] + 1) / scale)
    ys = np.floor((np.arange(top, bottom) + 0.5 - region["y"]) * scale).astype(np.int64) - y0
    xs = np.floor((np.arange(left, right) + 0.5 - region["x"]) * scale).astype(np.int64) - x0
    ys = ys.clip(0, run_labels.shape[0] - 1)
    xs = xs.clip(0, run_labels.shape[1] - 1)
    return np.ascontiguousarray(run_labels[ys[:, None], xs[None, :]]), (top, left)


# ---------------------------------------------------------------- one job's chunks, resumable


def chunk_path(chunk_dir: str | Path, index: int) -> Path:
    return Path(chunk_dir) / f"chunk_{index:06d}.npz"


def read_chunk(path: str | Path, fingerprint_value: str | None = None) -> dict | None:
    """A finished chunk's arrays, or None when absent, unreadable or of another plan or model."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            result = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError):
        return None
    if fingerprint_value is not None and str(result.get("fingerprint")) != fingerprint_value:
        return None
    return result


def write_chunk(path: str | Path, result: dict, fingerprint_value: str) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, fingerprint=np.asarray(fingerprint_value), **result)


def segment_part(
    plan: dict,
    mask: np.ndarray,
    model,
    chunk_dir: str | Path,
    *,
    part: int = 0,
    parts: int = 1,
    model_fingerprint: str = "",
    slide_mpp: float | None = None,
    progress=None,
    workers: int = 0,
) -> dict:
    """Segment the chunks of job `part` of `parts` into `chunk_dir` (one atomic file each); skip finished ones.

    Reading the next window overlaps with the current chunk's inference (a reader thread). With `workers`
    > 0, each chunk's post-processing (nuclei from its maps, measurements, outlines, the chunk file) runs in
    that many worker processes while the model works on the next chunks: `model.postprocessor()` (or the
    model itself when it has none) finds the nuclei there; the chunk files are the same either way. Returns a
    summary: chunks, done before (resumed), nuclei, tiles, seconds.
    """
    key = plan["fingerprint"] + model_fingerprint
    mine = part_chunks(plan, part, parts)
    Path(chunk_dir).mkdir(parents=True, exist_ok=True)
    for chunk in mine:  # temporaries a killed run of this part left behind (other parts' are theirs)
        for stale in Path(chunk_dir).glob(f".{chunk_path(chunk_dir, chunk['index']).stem}.*.tmp.npz"):
            stale.unlink(missing_ok=True)
    todo = [c for c in mine if read_chunk(chunk_path(chunk_dir, c["index"]), key) is None]
    # Most tissue tiles first: the last chunk's post-processing runs after the network's last batch, with
    # nothing to overlap it, so it should be a small one (longest first, as schedulers order jobs). The
    # chunk files, and the ids the gather gives in plan order, do not depend on this order.
    todo.sort(key=lambda c: -len(window_tiles(plan, mask, *chunk_window(plan, c))))
    summary = {"part": part, "parts": parts, "chunks": len(mine), "resumed": len(mine) - len(todo)}
    started = time.perf_counter()
    nuclei = tiles = 0
    if todo:
        finder = model.postprocessor() if workers and hasattr(model, "postprocessor") else model
        with open_slide(plan["slide"], slide_mpp) as slide, _chunk_pool(workers) as pool:
            pending: list = []

            def collect(done) -> None:
                nonlocal nuclei
                chunk, found = done[0], done[1].result()
                nuclei += found
                if progress:
                    progress(chunk, found)

            for chunk, image, model_image in _prefetch(slide, plan, todo):
                window = chunk_window(plan, chunk)
                origins = window_tiles(plan, mask, *window)
                maps, (top, left) = window_maps(model, model_image, origins, plan["tile_size"])
                if maps is not None:
                    image = image[top : top + maps.shape[1], left : left + maps.shape[2]]
                args = (finder, plan, chunk, image, maps, mask, (top, left), chunk_path(chunk_dir, chunk["index"]), key)
                pending.append((chunk, pool.submit(finish_chunk, *args)))
                tiles += len(origins)
                while len(pending) > max(1, workers):  # bounded: at most `workers` chunks' maps in flight
                    collect(pending.pop(0))
            for done in pending:
                collect(done)
    summary.update(nuclei=nuclei, tiles=tiles, seconds=time.perf_counter() - started, fingerprint=key)
    return summary


def finish_chunk(finder, plan, chunk, image, maps, mask, offset, path, key) -> int:
    """A chunk's nuclei from its window's maps (`chunk_nuclei`), written atomically; returns how many."""
    result = chunk_nuclei(finder, plan, chunk, image, maps, mask, offset)
    write_chunk(path, result, key)
    return len(result["area_um2"])


class _InProcess:
    """`concurrent.futures`' submit/result, run at once in this process (no workers)."""

    def submit(self, fn, *args):
        from concurrent.futures import Future

        future: Future = Future()
        future.set_result(fn(*args))
        return future

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _chunk_pool(workers: int):
    """A process pool of `workers` post-processing workers (forked: the plan and finder need no re-import)."""
    if workers <= 0:
        return _InProcess()
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    # The workers are forked now, before the window reader thread starts: a fork never copies a lock that
    # thread holds.
    pool.submit(int).result()
    return pool


def _prefetch(slide: Slide, plan: dict, chunks: list[dict], depth: int = 2):
    """(chunk, window image, the image the model sees) in order, the next windows read by a thread while the
    caller computes; the model's image is stain-normalised when the plan says so (`stain.plan_normaliser`)."""
    out: queue.Queue = queue.Queue(maxsize=depth)
    normaliser = plan_normaliser(plan)

    def read_all():
        try:
            for chunk in chunks:
                image = read_run_window(slide, plan, *chunk_window(plan, chunk))
                out.put((chunk, image, normaliser(image) if normaliser else image))
        except BaseException as err:  # handed to the consumer, which raises it
            out.put(err)
            return
        out.put(None)

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    while True:
        item = out.get()
        if item is None:
            break
        if isinstance(item, BaseException):
            raise item
        yield item
    reader.join()
