"""Nucleus outlines as polygons, and back: the geometry shared by every annotation format.

Coordinates are in pixels of the image, x to the right and y down, with pixel
(row r, column c) the unit square [c, c+1) x [r, r+1): the convention of QuPath
and of GeoJSON exports, so pixel centres sit at half-integers. A polygon is an
(N, 2) float array of (x, y) vertices, open (the first vertex is not repeated).

Polygons -> instance map (`rasterise`): a pixel belongs to a polygon when its
centre lies inside it (even-odd rule, so a self-intersecting outline fills as
drawn). Two stated rules make every input give one answer:

* degenerate: a polygon with fewer than three distinct vertices, or zero area,
  covers nothing; it is skipped and counted (`RasterStats.degenerate`). So is a
  valid polygon too thin to contain any pixel centre (`RasterStats.empty`).
* border: a polygon crossing the image border is clipped to the image and
  counted (`clipped`: annotators' outlines of nuclei cut by the border often
  run a pixel or two past it); a polygon wholly outside the image
  (`outside_image`) is an input error the readers report.
* overlap: where polygons overlap, the pixel goes to the smaller polygon (by
  area; ties: the one listed first), so a nucleus drawn over a larger one is
  never swallowed. Pixels claimed by more than one polygon are counted
  (`RasterStats.overlap_pixels`), as are nuclei that lost pixels to a smaller
  one (`overlapped`) and nuclei left with no pixel at all (`covered`).

Instance map -> polygons (`label_polygons`): one polygon per nucleus, traced
along pixel edges, so rasterising it gives back exactly the nucleus's pixels;
the rings equal those of the union of its pixel squares (shapely), which
sorts out the rare nucleus in several pieces.
A nucleus whose pixels form several pieces (touching only at corners, or
apart) keeps its largest piece (`LabelPolygon.dropped_pixels` says how much
was left out); holes are kept as interior rings. Outlines are valid shapely
polygons with collinear vertices removed; `offset` shifts them (e.g. by a
tile's position in a slide).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from skimage.draw import polygon as fill_polygon


@dataclass
class RasterStats:
    """What `rasterise` did with each polygon (module docstring: the degenerate and overlap rules)."""

    polygons: int = 0
    drawn: int = 0
    degenerate: int = 0
    empty: int = 0
    overlap_pixels: int = 0
    overlapped: int = 0
    covered: int = 0
    clipped: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class LabelPolygon:
    """The outline of one nucleus: exterior ring and holes as (N, 2) x, y arrays."""

    label: int
    exterior: np.ndarray
    holes: tuple[np.ndarray, ...] = ()
    dropped_pixels: int = 0
    area: float = field(default=0.0)


# ---------------------------------------------------------------- polygon checks


def as_vertices(points, where: str = "polygon") -> np.ndarray:
    """(N, 2) float64 x, y vertices of `points`, the closing vertex dropped; non-finite values are an error."""
    vertices = np.asarray(points, dtype=np.float64)
    if vertices.size == 0:
        return vertices.reshape(0, 2)
    if vertices.ndim != 2 or vertices.shape[1] != 2:
        raise ValueError(f"{where}: vertices must be (x, y) pairs, got shape {vertices.shape}")
    if not np.isfinite(vertices).all():
        raise ValueError(f"{where}: non-finite vertex coordinates")
    if len(vertices) > 1 and np.array_equal(vertices[0], vertices[-1]):
        vertices = vertices[:-1]
    return vertices


def signed_area(vertices: np.ndarray) -> float:
    """Shoelace area of a ring (positive when counter-clockwise in x-right, y-up axes)."""
    x, y = vertices[:, 0], vertices[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def is_degenerate(vertices: np.ndarray) -> bool:
    """Fewer than three distinct vertices, or no area: the polygon outlines nothing."""
    return len(vertices) < 3 or len(np.unique(vertices, axis=0)) < 3 or signed_area(vertices) == 0.0


def outside_image(vertices: np.ndarray, shape: tuple[int, int]) -> bool:
    """Whether the polygon lies wholly outside the image of `shape` (rows, columns): its box misses the image."""
    h, w = shape
    (x0, y0), (x1, y1) = vertices.min(axis=0), vertices.max(axis=0)
    return bool(x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h)


def crosses_border(vertices: np.ndarray, shape: tuple[int, int]) -> bool:
    """Whether a vertex lies outside the image: the polygon is clipped to the image where it is drawn."""
    h, w = shape
    (x0, y0), (x1, y1) = vertices.min(axis=0), vertices.max(axis=0)
    return bool(x0 < 0 or y0 < 0 or x1 > w or y1 > h)


# ---------------------------------------------------------------- polygons -> instance map


def polygon_pixels(vertices: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of the pixels whose centres lie inside the polygon, clipped to the image."""
    # Pixel (r, c) has its centre at (c + 0.5, r + 0.5); skimage tests integer positions.
    return fill_polygon(vertices[:, 1] - 0.5, vertices[:, 0] - 0.5, shape)


def _ring_mask(rings: Sequence[np.ndarray], shape) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of an exterior ring minus its holes (rows, columns)."""
    rows, cols = polygon_pixels(rings[0], shape)
    if len(rings) == 1 or not len(rows):
        return rows, cols
    flat = rows * shape[1] + cols
    inside = np.ones(len(rows), bool)
    for hole in rings[1:]:
        hole_rows, hole_cols = polygon_pixels(hole, shape)
        inside &= ~np.isin(flat, hole_rows * shape[1] + hole_cols)
    return rows[inside], cols[inside]


def rasterise(polygons: Sequence, shape: tuple[int, int]) -> tuple[np.ndarray, RasterStats]:
    """(int32 instance map, stats) of polygons; nucleus i of the input gets id i + 1 if it is drawn.

    Each entry is an (N, 2) x, y vertex array, or a sequence of such rings
    (exterior first, then holes). Skipped polygons leave their id unused, so
    ids stay aligned with the input; `relabel` packs them if needed.
    """
    shape = (int(shape[0]), int(shape[1]))
    stats = RasterStats(polygons=len(polygons))
    pixels: list[tuple[int, float, np.ndarray]] = []
    for index, entry in enumerate(polygons):
        rings = _rings(entry, f"polygon {index}")
        if is_degenerate(rings[0]):
            stats.degenerate += 1
            continue
        stats.clipped += int(crosses_border(rings[0], shape))
        rows, cols = _ring_mask(rings, shape)
        if not len(rows):
            stats.empty += 1
            continue
        pixels.append((index, abs(signed_area(rings[0])), rows * shape[1] + cols))
    instances = np.zeros(shape[0] * shape[1], np.int32)
    claims = np.zeros(shape[0] * shape[1], np.int32)
    # Largest first, so each smaller polygon overwrites (equal areas: the first listed is drawn last and wins).
    for index, _, flat in sorted(pixels, key=lambda item: (-item[1], -item[0])):
        instances[flat] = index + 1
        claims[flat] += 1
    stats.overlap_pixels = int(np.count_nonzero(claims > 1))
    for index, _, flat in pixels:
        kept = np.count_nonzero(instances[flat] == index + 1)
        stats.overlapped += int(0 < kept < len(flat))
        stats.covered += int(kept == 0)
    stats.drawn = len(pixels) - stats.covered
    return instances.reshape(shape), stats


def _rings(entry, where: str) -> list[np.ndarray]:
    """[exterior, *holes] of one `rasterise` entry: a vertex array, or a sequence of rings."""
    if isinstance(entry, np.ndarray) and entry.dtype != object:
        return [as_vertices(entry, where)]
    entry = list(entry)
    if entry and np.ndim(entry[0]) == 1:  # a flat list of (x, y) pairs
        return [as_vertices(entry, where)]
    if not entry:
        raise ValueError(f"{where}: no vertices")
    return [as_vertices(ring, f"{where} ring {i}") for i, ring in enumerate(entry)]


def relabel(instances: np.ndarray) -> np.ndarray:
    """The instance map with ids packed to 1..n in order of first id (0 stays background)."""
    ids = np.unique(instances)
    ids = ids[ids > 0]
    lookup = np.zeros(int(instances.max(initial=0)) + 1, np.int32)
    lookup[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    return lookup[instances]


# ---------------------------------------------------------------- instance map -> polygons


def label_polygons(labels: np.ndarray, offset: tuple[float, float] = (0.0, 0.0)) -> list[LabelPolygon]:
    """One pixel-exact outline per nucleus of `labels` (int, 0 background), in id order (module docstring)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"label image must be 2-D, got shape {labels.shape}")
    ox, oy = float(offset[0]), float(offset[1])
    out = []
    for label, box in enumerate(ndimage.find_objects(labels.astype(np.int64, copy=False)), start=1):
        if box is None:
            continue
        mask = labels[box] == label
        outline = _traced_outline(mask)
        if outline is None:  # several pieces: shapely sorts them out
            outline = _shapely_outline(mask)
        exterior, holes, dropped, area = outline
        shift = np.array([box[1].start + ox, box[0].start + oy])
        out.append(LabelPolygon(label, exterior + shift, tuple(h + shift for h in holes), dropped, area))
    return out


# Unit steps along pixel edges: +x, +y, -x, -y. Turning left (x right, y down: towards +y from +x) is +1.
_STEPS = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]])


def _traced_outline(mask: np.ndarray):
    """(exterior, holes, dropped pixels, area) of a one-piece mask, traced along its pixel edges; None when
    the mask is in several pieces (pixels touching only at corners count as apart, as in a union of squares).

    Every edge between a mask pixel and a background pixel is walked with the mask on its left, so the
    exterior runs counter-clockwise (positive area, as `shapely.geometry.polygon.orient(sign=1)` leaves it)
    and holes clockwise. Where four pixels meet in a checkerboard the walk turns left; a ring that then
    meets itself at a corner is cut there into two rings, which touch at that point, as valid polygons do.
    """
    height, width = mask.shape
    padded = np.zeros((height + 2, width + 2), bool)  # np.pad costs as much as the rest of a small nucleus
    padded[1:-1, 1:-1] = mask
    below, above = padded[1:, 1:-1], padded[:-1, 1:-1]  # (height + 1, width): the pixels each side of y = row
    right, left = padded[1:-1, 1:], padded[1:-1, :-1]  # (height, width + 1): each side of x = column
    span = width + 1  # vertex (x, y) is y * span + x
    starts, steps = [], []
    for ys, xs, step, dx, dy in (
        (*np.nonzero(below & ~above), 0, 0, 0),  # +x along y = row, mask below
        (*np.nonzero(above & ~below), 2, 1, 0),  # -x, mask above: starts at the right end
        (*np.nonzero(left & ~right), 1, 0, 0),  # +y along x = column, mask to the left
        (*np.nonzero(right & ~left), 3, 0, 1),  # -y, mask to the right: starts at the bottom end
    ):
        starts.append((ys + dy) * span + xs + dx)
        steps.append(np.full(len(ys), step))
    start, step = np.concatenate(starts), np.concatenate(steps)
    end = start + _STEPS[step, 1] * span + _STEPS[step, 0]
    order = np.argsort(start, kind="stable")
    ordered = start[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]
    first_out = dict(zip(ordered[first].tolist(), order[first].tolist()))
    second_out = dict(zip(ordered[~first].tolist(), order[~first].tolist()))
    start_l, end_l, step_l = start.tolist(), end.tolist(), step.tolist()
    used = bytearray(len(start_l))
    rings = []
    for edge in range(len(start_l)):
        if used[edge]:
            continue
        ring = []
        while not used[edge]:
            used[edge] = 1
            ring.append(edge)
            vertex = end_l[edge]
            following = first_out[vertex]
            other = second_out.get(vertex)
            if other is not None and step_l[following] != (step_l[edge] + 1) % 4:
                following = other
            edge = following
        rings += _split_at_touches(ring, start_l)
    polygons = []
    for ring in rings:
        turns = [e for i, e in enumerate(ring) if step_l[e] != step_l[ring[i - 1]]]  # drop collinear vertices
        vertices = np.array([[start_l[e] % span, start_l[e] // span] for e in turns], dtype=float)
        x, y = vertices[:, 0], vertices[:, 1]
        twice_area = np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]) + x[-1] * y[0] - x[0] * y[-1]  # shoelace
        polygons.append((vertices, 0.5 * float(twice_area)))
    exteriors = [p for p in polygons if p[1] > 0]
    if len(exteriors) != 1:
        return None
    holes = tuple(v for v, area in polygons if area < 0)
    return exteriors[0][0], holes, 0, float(sum(area for _, area in polygons))


def _split_at_touches(ring: list[int], start: list[int]) -> list[list[int]]:
    """A closed walk of edges cut into rings that pass through each vertex once."""
    seen: dict[int, int] = {}
    for position, edge in enumerate(ring):
        vertex = start[edge]
        if vertex in seen:
            first = seen[vertex]
            return _split_at_touches(ring[first:position], start) + _split_at_touches(
                ring[:first] + ring[position:], start
            )
        seen[vertex] = position
    return [ring]


def _shapely_outline(mask: np.ndarray):
    """(exterior, holes, dropped pixels, area) of a mask's largest piece, from the union of its pixels."""
    import shapely

    shape = _pixel_union(mask, shapely)
    dropped = 0
    if shape.geom_type == "MultiPolygon":
        parts = sorted(shape.geoms, key=lambda g: -g.area)
        dropped = int(round(sum(g.area for g in parts[1:])))
        shape = parts[0]
    shape = shapely.geometry.polygon.orient(shape.simplify(0), sign=1.0)
    exterior = np.asarray(shape.exterior.coords)[:-1]
    holes = tuple(np.asarray(ring.coords)[:-1] for ring in shape.interiors)
    return exterior, holes, dropped, float(shape.area)


def _pixel_union(mask: np.ndarray, shapely):
    """The union of a mask's pixel squares, built from one rectangle per run of pixels in a row."""
    steps = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)  # +1 where a run starts, -1 after it
    rows, starts = np.nonzero(steps == 1)
    stops = np.nonzero(steps == -1)[1]  # row-major order: the k-th stop ends the k-th run
    return shapely.union_all(shapely.box(starts, rows, stops, rows + 1))


def to_shapely(outline: LabelPolygon):
    """The outline as a shapely Polygon (valid by construction)."""
    import shapely

    return shapely.Polygon(outline.exterior, list(outline.holes))
