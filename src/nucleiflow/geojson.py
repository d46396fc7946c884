"""QuPath GeoJSON: nuclei as a FeatureCollection, written and read back.

The writer (`label_features`, `write_feature_collection`) gives one Polygon
Feature per nucleus of a label image, as QuPath's "Export objects as GeoJSON"
does::

    {"type": "Feature", "id": "<uuid>",
     "geometry": {"type": "Polygon", "coordinates": [[[x, y], ...]]},
     "properties": {"objectType": "detection",
                    "classification": {"name": "epithelial", "color": [r, g, b]},
                    "measurements": {"Area px^2": 123.0, ...}}}

Coordinates are pixels of the image (or of the slide, with `offset`), pixel
(r, c) the square [c, c+1) x [r, r+1) (`nucleiflow.polygons`); rings are
closed, exterior first, holes after. The file is written atomically.

The reader (`read_features`, `features_to_instances`) takes what QuPath
exports: a FeatureCollection, a plain list of Features, or one Feature;
objectType ``annotation``, ``detection`` or ``cell`` (a cell's nucleus is its
``nucleusGeometry`` when present); Polygon or MultiPolygon geometries (the
parts of a MultiPolygon are one nucleus); ``classification.name`` as the
nucleus's type; measurements as a mapping (QuPath 0.4+) or a list of
{name, value} (0.2/0.3); colours as [r, g, b] or QuPath's packed integer.
Features of other geometries (points, lines) are skipped and counted.
Rasterising follows the rules of `nucleiflow.polygons.rasterise`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nucleiflow.errors import DataFormatError
from nucleiflow.io import atomic_path
from nucleiflow.polygons import RasterStats, as_vertices, label_polygons, outside_image, rasterise

OBJECT_TYPES = ("detection", "annotation", "cell")
AREA_GEOMETRIES = ("Polygon", "MultiPolygon")
# seaborn's "colorblind" palette (Waskom 2021), as 0-255 RGB: the default class colours.
COLORBLIND = (
    (1, 115, 178),
    (222, 143, 5),
    (2, 158, 115),
    (213, 94, 0),
    (204, 120, 188),
    (202, 145, 97),
    (251, 175, 228),
    (148, 148, 148),
    (236, 225, 51),
    (86, 180, 233),
)


def class_color(index: int) -> list[int]:
    """The default [r, g, b] of class `index` (1-based; cycles through the colour-blind-safe palette)."""
    return list(COLORBLIND[(index - 1) % len(COLORBLIND)])


# ---------------------------------------------------------------- writing


def polygon_geometry(exterior: np.ndarray, holes: Sequence[np.ndarray] = ()) -> dict:
    """A GeoJSON Polygon of an exterior ring and holes ((N, 2) x, y arrays, open or closed)."""
    rings = []
    for ring in (exterior, *holes):
        ring = np.asarray(ring, dtype=float)
        if not np.array_equal(ring[0], ring[-1]):
            ring = np.vstack([ring, ring[:1]])
        whole = np.trunc(ring)
        if np.array_equal(ring, whole):
            # Label outlines run along pixel corners: integer vertices, converted in one call (a whole
            # slide's GeoJSON is mostly this; the per-vertex path below is ten times slower).
            rings.append(whole.astype(np.int64).tolist())
        else:
            rings.append([[_number(x), _number(y)] for x, y in ring])
    return {"type": "Polygon", "coordinates": rings}


def _number(value: float):
    value = float(value)
    return int(value) if value.is_integer() else round(value, 4)


def feature(
    geometry: dict,
    object_type: str = "detection",
    classification: str | None = None,
    color: Sequence[int] | None = None,
    measurements: Mapping[str, float] | None = None,
    properties: Mapping | None = None,
    feature_id: str | None = None,
) -> dict:
    """One QuPath Feature (module docstring); `properties` adds keys beside objectType/classification/measurements."""
    if object_type not in OBJECT_TYPES:
        raise ValueError(f"objectType {object_type!r} is not valid; choose one of: {', '.join(OBJECT_TYPES)}")
    props: dict = {"objectType": object_type}
    if classification is not None:
        props["classification"] = {"name": str(classification), "color": [int(c) for c in (color or class_color(1))]}
    if measurements:
        props["measurements"] = {str(k): float(v) for k, v in measurements.items()}
    props.update(properties or {})
    return {"type": "Feature", "id": feature_id or str(uuid.uuid4()), "geometry": geometry, "properties": props}


def label_features(
    labels: np.ndarray,
    *,
    types: Mapping[int, int] | None = None,
    class_names: Sequence[str] | None = None,
    colors: Mapping[str, Sequence[int]] | None = None,
    object_type: str = "detection",
    offset: tuple[float, float] = (0.0, 0.0),
    measurements: Mapping[int, Mapping[str, float]] | None = None,
    properties: Mapping[int, Mapping] | None = None,
) -> list[dict]:
    """One Polygon Feature per nucleus of `labels` (int, 0 background), in id order.

    `types` maps a nucleus id to its class id and `class_names[class id]` names
    it (index 0 is background: a nucleus of type 0 is unclassified);
    `measurements` / `properties` map a nucleus id to its values. Each nucleus
    gets ``Area px^2`` (its pixel count) among its measurements, and its
    label id as the ``label`` property, so the file can be matched to the map.
    """
    features = []
    for outline in label_polygons(labels, offset):
        name, color = None, None
        if types is not None:
            kind = int(types.get(outline.label, 0))
            if kind > 0:
                name = class_names[kind] if class_names is not None else str(kind)
                color = (colors or {}).get(name) or class_color(kind)
        values = {"Area px^2": outline.area, **((measurements or {}).get(outline.label) or {})}
        extra = {"label": int(outline.label), **((properties or {}).get(outline.label) or {})}
        features.append(
            feature(polygon_geometry(outline.exterior, outline.holes), object_type, name, color, values, extra)
        )
    return features


def feature_collection(features: Sequence[dict]) -> dict:
    return {"type": "FeatureCollection", "features": list(features)}


def write_feature_collection(path: str | Path, features: Iterable[dict]) -> Path:
    """Write `features` as one FeatureCollection to `path`, atomically (a killed job leaves no partial file).

    Features are written one at a time as the iterable yields them, so a generator (a whole slide's nuclei,
    chunk by chunk) keeps one in memory; the text is that of `json.dumps(feature_collection(...))`.
    """
    with atomic_path(path) as tmp, open(tmp, "w") as out:
        out.write('{"type":"FeatureCollection","features":[')
        for index, item in enumerate(features):
            out.write(("," if index else "") + json.dumps(item, separators=(",", ":")))
        out.write("]}\n")
    return Path(path)


# ---------------------------------------------------------------- reading


@dataclass
class GeoJSONNuclei:
    """The nuclei of one GeoJSON file: instance map, class map, and what was skipped."""

    instances: np.ndarray  # int32 (H, W), 0 background, 1..n in file order
    classes: np.ndarray  # uint8 (H, W): class id of each nucleus pixel, 0 background or unclassified
    types: dict[int, int]  # nucleus id -> class id
    stats: RasterStats
    not_areas: int  # features of other geometries (points, lines), skipped

    def summary(self) -> dict:
        return {**self.stats.as_dict(), "not_areas": self.not_areas, "nuclei": len(self.types)}


def read_features(path: str | Path) -> list[dict]:
    """The Features of a QuPath GeoJSON export (a FeatureCollection, a list of Features, or one Feature)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataFormatError(f"{path}: not a readable GeoJSON file ({type(err).__name__}: {err})") from None
    if isinstance(data, Mapping) and data.get("type") == "FeatureCollection":
        features = data.get("features")
    elif isinstance(data, Mapping) and data.get("type") == "Feature":
        features = [data]
    else:
        features = data
    if not isinstance(features, list):
        raise DataFormatError(f"{path}: expected a FeatureCollection, a list of Features or a Feature")
    for index, item in enumerate(features):
        if not isinstance(item, Mapping) or item.get("type") != "Feature":
            raise DataFormatError(f"{path}: features[{index}] is not a GeoJSON Feature (type {_type(item)!r})")
    return features


def _type(item):
    return item.get("type") if isinstance(item, Mapping) else type(item).__name__


def nucleus_geometry(item: Mapping) -> dict | None:
    """The geometry that outlines the nucleus: a cell's `nucleusGeometry` if it has one, else `geometry`."""
    props = item.get("properties") or {}
    if props.get("objectType") == "cell" and isinstance(props.get("nucleusGeometry"), Mapping):
        return props["nucleusGeometry"]
    return item.get("geometry")


def class_name(item: Mapping) -> str | None:
    """`properties.classification.name` (None when unclassified); older exports also put a bare name there."""
    classification = (item.get("properties") or {}).get("classification")
    if isinstance(classification, Mapping):
        name = classification.get("name")
        return None if name is None else str(name)
    return None if classification is None else str(classification)


def measurements(item: Mapping) -> dict[str, float | None]:
    """A Feature's measurements, from QuPath 0.4+'s mapping or 0.2/0.3's list of {name, value}."""
    raw = (item.get("properties") or {}).get("measurements") or {}
    if isinstance(raw, Mapping):
        return {str(k): v for k, v in raw.items()}
    return {str(m.get("name")): m.get("value") for m in raw if isinstance(m, Mapping)}


def _geometry_rings(geometry: Mapping, where: str) -> list[list[np.ndarray]]:
    """[[exterior, *holes], ...] of a Polygon (one part) or MultiPolygon (several parts)."""
    coordinates = geometry.get("coordinates")
    parts = [coordinates] if geometry["type"] == "Polygon" else (coordinates or [])
    try:
        return [[as_vertices(ring, where) for ring in part] for part in parts if part]
    except (TypeError, ValueError) as err:
        raise DataFormatError(f"{where}: malformed coordinates ({err})") from None


def features_to_instances(
    features: Sequence[Mapping],
    shape: tuple[int, int],
    class_ids: Mapping[str, int] | None = None,
    where: str = "geojson",
    offset: tuple[float, float] = (0.0, 0.0),
) -> GeoJSONNuclei:
    """Rasterise Features onto an image of `shape` (rows, columns); `offset` (x, y) is subtracted first.

    `class_ids` maps `classification.name` to a class id (1..); a name it lacks
    is a one-line error naming the feature; None types every nucleus 0. A
    polygon with a vertex outside the image is an error naming the feature.
    """
    shift = np.asarray(offset, dtype=float)
    polygons, kinds, not_areas = [], [], 0
    for index, item in enumerate(features):
        label = f"{where}: features[{index}]" + (f" (id {item['id']})" if item.get("id") is not None else "")
        geometry = nucleus_geometry(item)
        if not isinstance(geometry, Mapping) or geometry.get("type") not in AREA_GEOMETRIES:
            not_areas += 1
            continue
        parts = [[ring - shift for ring in rings] for rings in _geometry_rings(geometry, label)]
        for rings in parts:
            if outside_image(rings[0], shape):
                lo, hi = rings[0].min(axis=0), rings[0].max(axis=0)
                raise DataFormatError(
                    f"{label}: polygon outside the image (x {lo[0]:g}..{hi[0]:g}, y {lo[1]:g}..{hi[1]:g}; "
                    f"image {shape[1]} x {shape[0]} px)"
                )
        name = class_name(item)
        if class_ids is None or name is None:
            kind = 0
        elif name in class_ids:
            kind = int(class_ids[name])
        else:
            raise DataFormatError(
                f"{label}: classification {name!r} is not a class of the dataset; classes: {', '.join(class_ids)}"
            )
        polygons.append(parts)
        kinds.append(kind)
    instances, stats = _rasterise_parts(polygons, shape)
    types = {i + 1: kinds[i] for i in range(len(kinds)) if (instances == i + 1).any()}
    lookup = np.zeros(len(kinds) + 1, np.uint8)
    lookup[1:] = kinds
    nuclei = GeoJSONNuclei(instances, lookup[instances], types, stats, not_areas)
    return nuclei


def _rasterise_parts(polygons: list[list[list[np.ndarray]]], shape) -> tuple[np.ndarray, RasterStats]:
    """`rasterise` where a nucleus may have several parts (a MultiPolygon): its parts share its id."""
    flat, owner = [], []
    for index, parts in enumerate(polygons):
        for rings in parts:
            flat.append(rings)
            owner.append(index + 1)
    drawn, stats = rasterise(flat, shape)
    lookup = np.zeros(len(flat) + 1, np.int32)
    lookup[1:] = owner
    instances = lookup[drawn]
    stats.polygons = len(polygons)
    stats.drawn = int(len(np.unique(instances)) - (instances.min(initial=0) == 0)) if instances.size else 0
    return instances, stats
