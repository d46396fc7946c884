"""The gather: every chunk of a slide into its nuclei outputs, in bounded memory, each written atomically.

Under `results/slides/<name>/<slide>/`:

* `nuclei.geojson`: a QuPath FeatureCollection of detections (one Polygon per nucleus in level-0 pixels,
  `objectType: detection`, a `classification` with name and colour when the model has a type head, the
  measurements as properties), written feature by feature;
* `nuclei.parquet`: one row per nucleus (`TABLE_COLUMNS`), one row group per chunk;
* `labels.ome.tif`: the nuclei as a tiled pyramidal OME-TIFF label image (uint32, 0 background, the
  table's `nucleus_id`), level 0 on the slide's level-0 pixel grid, composed tile by tile from the chunks;
* `tables/summary.{csv,md,tex}`, `figures/overview.{png,pdf}` (thumbnail, tissue outline, nucleus density):
  `nucleiflow.slides.overview`, from the tallies `Chunks` takes as it checks the chunks.

Nucleus ids are given in chunk order (chunk 0's nuclei first), so a scattered run gathers the same ids.
"""

from __future__ import annotations

import math
import uuid
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd

from nucleiflow.catalog import UNTYPED
from nucleiflow.geojson import class_color, feature, polygon_geometry, write_feature_collection
from nucleiflow.io import atomic_path
from nucleiflow.slides.chunks import NUCLEUS_COLUMNS, chunk_path, read_chunk
from nucleiflow.slides.pyramid import write_pyramid

TABLE_COLUMNS = ("nucleus_id", *NUCLEUS_COLUMNS, "type_name")


# ---------------------------------------------------------------- reading the chunks back


class Chunks:
    """The finished chunks of one slide, in chunk order, with each one's first nucleus id."""

    def __init__(self, plan: dict, chunk_dir: str | Path, key: str, type_names=()):
        self.plan, self.dir, self.key = plan, Path(chunk_dir), key
        self.type_names = [UNTYPED, *type_names]
        self.offsets, self.boxes = {}, {}
        self.type_counts: dict[str, int] = {}
        points = []
        next_id = 1
        missing = []
        for chunk in plan["chunks"]:
            data = read_chunk(chunk_path(self.dir, chunk["index"]), key)
            if data is None:
                missing.append(chunk["index"])
                continue
            self.offsets[chunk["index"]] = next_id
            n = len(data["area_um2"])
            next_id += n
            points.append(np.stack([data["centroid_x_px"], data["centroid_y_px"]], axis=1).astype(np.float32))
            for value, count in zip(*np.unique(data["type"].astype(np.int64), return_counts=True)):
                name = self.type_name(int(value))
                self.type_counts[name] = self.type_counts.get(name, 0) + int(count)
            if n:
                (oy, ox), (h, w) = data["origin"], data["labels"].shape
                self.boxes[chunk["index"]] = (int(oy), int(ox), int(oy) + h, int(ox) + w)
        if missing:
            from nucleiflow.errors import DataFormatError

            raise DataFormatError(
                f"{self.dir}: chunk(s) {missing[:5]} of {plan['slide']} are missing or from another run; "
                "run their segment jobs first"
            )
        self.n_nuclei = next_id - 1
        # Every nucleus's level-0 centroid (x, y): the overview's density map.
        self.points = np.concatenate(points) if points else np.zeros((0, 2), np.float32)
        self._cache: OrderedDict = OrderedDict()

    def type_name(self, value: int) -> str:
        return self.type_names[value] if 0 <= value < len(self.type_names) else UNTYPED

    def __iter__(self):
        """(chunk, its arrays, first nucleus id) in chunk order."""
        for chunk in self.plan["chunks"]:
            yield chunk, read_chunk(chunk_path(self.dir, chunk["index"])), self.offsets[chunk["index"]]

    def table(self, data: dict, first_id: int) -> pd.DataFrame:
        n = len(data["area_um2"])
        frame = pd.DataFrame({column: data[column] for column in NUCLEUS_COLUMNS})
        frame.insert(0, "nucleus_id", np.arange(first_id, first_id + n, dtype=np.int64))
        frame["type"] = frame["type"].astype(np.int64)
        frame["type_name"] = [self.type_name(t) for t in frame["type"]]
        return frame

    def _level_crop(self, index: int, step: int):
        """A chunk's level-0 label crop sampled every `step` pixels (global ids), with its origin at that level."""
        key = (index, step)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        data = read_chunk(chunk_path(self.dir, index))
        crop = data["labels"].astype(np.uint32)
        crop[crop > 0] += np.uint32(self.offsets[index] - 1)
        oy, ox = (int(v) for v in data["origin"])
        first_y = math.ceil((oy - step // 2) / step)
        first_x = math.ceil((ox - step // 2) / step)
        sampled = crop[first_y * step + step // 2 - oy :: step, first_x * step + step // 2 - ox :: step]
        value = (first_y, first_x, np.ascontiguousarray(sampled))
        self._cache[key] = value
        while sum(v[2].nbytes for v in self._cache.values()) > 256 * 2**20 and len(self._cache) > 1:
            self._cache.popitem(last=False)
        return value

    def label_tile(self, level: int, y: int, x: int, height: int, width: int) -> np.ndarray:
        """uint32 labels of pyramid `level` (2**level downsample of level 0, nearest) at that level's (y, x)."""
        step = 2**level
        out = np.zeros((height, width), np.uint32)
        top, left = y * step, x * step
        bottom, right = (y + height) * step, (x + width) * step
        for index, (by0, bx0, by1, bx1) in self.boxes.items():
            if by0 >= bottom or by1 <= top or bx0 >= right or bx1 <= left:
                continue
            first_y, first_x, crop = self._level_crop(index, step)
            ya, xa = max(y, first_y), max(x, first_x)
            yb, xb = min(y + height, first_y + crop.shape[0]), min(x + width, first_x + crop.shape[1])
            if ya >= yb or xa >= xb:
                continue
            piece = crop[ya - first_y : yb - first_y, xa - first_x : xb - first_x]
            target = out[ya - y : yb - y, xa - x : xb - x]
            np.copyto(target, piece, where=piece > 0)
        return out


# ---------------------------------------------------------------- the writers


def nucleus_feature(row, rings: list[np.ndarray], type_names, slide: str) -> dict:
    """One QuPath detection (`geojson.feature`): outline in level-0 px, classification, measurements.

    The feature id is a UUID of the slide and nucleus id, so reruns and scattered runs write the same file.
    """
    measurements = {
        "Area um^2": row.area_um2,
        "Perimeter um": row.perimeter_um,
        "Eccentricity": row.eccentricity,
        "Solidity": row.solidity,
        "Hematoxylin OD mean": row.mean_hematoxylin,
        "Eosin OD mean": row.mean_eosin,
    }
    name = color = None
    if type_names and row.type > 0:
        name, color = row.type_name, class_color(int(row.type))
        measurements["Type probability"] = row.type_probability
    return feature(
        polygon_geometry(rings[0], rings[1:]),
        "detection",
        name,
        color,
        measurements,
        properties={"nucleus_id": int(row.nucleus_id)},
        feature_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"nucleiflow/slides/{slide}/{int(row.nucleus_id)}")),
    )


def _rings(data: dict, i: int) -> list[np.ndarray]:
    coords, offsets, first = data["ring_coords"], data["ring_offsets"], data["nucleus_rings"]
    return [coords[offsets[r] : offsets[r + 1]] for r in range(first[i], first[i + 1])]


def write_nuclei(chunks: Chunks, out: dict, type_names=()) -> None:
    """Write the nuclei of every chunk as GeoJSON, Parquet table and label pyramid, each atomically.

    `out`: paths of geojson, table (parquet) and labels (OME-TIFF). Memory: one chunk (and the pyramid's
    crop cache).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    plan = chunks.plan
    slide = Path(plan["slide"]).name
    integers = ("nucleus_id", "type")
    schema = pa.schema(
        [(c, pa.int64() if c in integers else pa.string() if c == "type_name" else pa.float64()) for c in TABLE_COLUMNS]
    )

    def features(writer):
        for _, data, first_id in chunks:
            frame = chunks.table(data, first_id)
            if len(frame):
                writer.write_table(
                    pa.Table.from_pandas(frame[list(TABLE_COLUMNS)], schema=schema, preserve_index=False)
                )
            for i, row in enumerate(frame.itertuples(index=False)):
                yield nucleus_feature(row, _rings(data, i), type_names, slide)

    with atomic_path(out["table"]) as table_tmp:
        writer = pq.ParquetWriter(table_tmp, schema)
        try:
            write_feature_collection(out["geojson"], features(writer))
        finally:
            writer.close()
    width, height = plan["dimensions"]
    write_pyramid(
        out["labels"], height, width, chunks.label_tile, dtype=np.uint32, mpp=plan["slide_mpp"], name="nuclei"
    )
