"""The gather: every chunk of a slide into its outputs, in bounded memory, each written atomically.

Under `results/slides/<name>/<slide>/`:

* `nuclei.geojson`: a QuPath FeatureCollection of detections (one Polygon per nucleus in level-0 pixels,
  `objectType: detection`, a `classification` with name and colour when the model has a type head, the
  measurements as properties), written feature by feature;
* `nuclei.parquet`: one row per nucleus (`TABLE_COLUMNS`), one row group per chunk;
* `labels.ome.tif`: the nuclei as a tiled pyramidal OME-TIFF label image (uint32, 0 background, the
  table's `nucleus_id`), level 0 on the slide's level-0 pixel grid, composed tile by tile from the chunks;
* `tables/summary.{csv,md,tex}`, `figures/overview.{png,pdf}` (thumbnail, tissue outline, nucleus density).

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
from nucleiflow.io import atomic_path, write_table
from nucleiflow.slides.chunks import NUCLEUS_COLUMNS, chunk_path, read_chunk
from nucleiflow.slides.pyramid import write_pyramid

TABLE_COLUMNS = ("nucleus_id", *NUCLEUS_COLUMNS, "type_name")


# ---------------------------------------------------------------- reading the chunks back


class Chunks:
    """The finished chunks of one slide, in chunk order, with each one's first nucleus id."""

    def __init__(self, plan: dict, chunk_dir: str | Path, key: str):
        self.plan, self.dir, self.key = plan, Path(chunk_dir), key
        self.offsets, self.boxes = {}, {}
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
        self._cache: OrderedDict = OrderedDict()

    def __iter__(self):
        """(chunk, its arrays, first nucleus id) in chunk order."""
        for chunk in self.plan["chunks"]:
            yield chunk, read_chunk(chunk_path(self.dir, chunk["index"])), self.offsets[chunk["index"]]

    def table(self, data: dict, first_id: int, type_names) -> pd.DataFrame:
        n = len(data["area_um2"])
        frame = pd.DataFrame({column: data[column] for column in NUCLEUS_COLUMNS})
        frame.insert(0, "nucleus_id", np.arange(first_id, first_id + n, dtype=np.int64))
        frame["type"] = frame["type"].astype(np.int64)
        names = [UNTYPED, *type_names]
        frame["type_name"] = [names[t] if 0 <= t < len(names) else UNTYPED for t in frame["type"]]
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


def gather(
    plan: dict, chunk_dir, out: dict, *, key: str, type_names=(), parts: list[dict] = (), name: str = ""
) -> dict:
    """Write every output of one slide from its finished chunks, each atomically; returns the summary row.

    `out`: paths of geojson, table (parquet), labels (OME-TIFF), summary (table stem). Memory: one chunk.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    chunks = Chunks(plan, chunk_dir, key)
    slide = Path(plan["slide"]).name
    type_counts: dict[str, int] = {}
    points = []
    integers = ("nucleus_id", "type")
    schema = pa.schema(
        [(c, pa.int64() if c in integers else pa.string() if c == "type_name" else pa.float64()) for c in TABLE_COLUMNS]
    )

    def features(writer):
        for _, data, first_id in chunks:
            frame = chunks.table(data, first_id, type_names)
            if len(frame):
                writer.write_table(
                    pa.Table.from_pandas(frame[list(TABLE_COLUMNS)], schema=schema, preserve_index=False)
                )
            for i, row in enumerate(frame.itertuples(index=False)):
                yield nucleus_feature(row, _rings(data, i), type_names, slide)
            for value, count in frame["type_name"].value_counts().items():
                type_counts[value] = type_counts.get(value, 0) + int(count)
            points.append(frame[["centroid_x_px", "centroid_y_px"]].to_numpy(np.float32))

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
    row = summary_row(plan, chunks.n_nuclei, type_counts, type_names, parts, name)
    write_table(out["summary"], pd.DataFrame([row]), caption=f"Nuclei of slide {slide}")
    return {"row": row, "points": np.concatenate(points) if points else np.zeros((0, 2), np.float32)}


def summary_row(plan: dict, n_nuclei: int, type_counts: dict, type_names, parts, name: str) -> dict:
    tissue = plan["tissue_area_mm2"]
    row = {
        "slide": Path(plan["slide"]).name,
        "width_px": plan["dimensions"][0],
        "height_px": plan["dimensions"][1],
        "slide_mpp": plan["slide_mpp"],
        "run_mpp": plan["run_mpp"],
        "level": plan["level"],
        "chunks": len(plan["chunks"]),
        "tissue_area_mm2": tissue,
        "nuclei": n_nuclei,
        "density_per_mm2": n_nuclei / tissue if tissue > 0 else float("nan"),
    }
    for type_name in type_names:
        row[f"fraction_{type_name}"] = type_counts.get(type_name, 0) / n_nuclei if n_nuclei else float("nan")
    if type_names:  # nuclei whose pixels the type head calls background: no type
        row["fraction_untyped"] = type_counts.get(UNTYPED, 0) / n_nuclei if n_nuclei else float("nan")
    row["seconds"] = float(sum(p.get("seconds", 0.0) for p in parts))
    row["note"] = "" if plan["chunks"] else "no tissue found: no nuclei"
    return row


# ---------------------------------------------------------------- the overview figure


def density_map(points: np.ndarray, plan: dict, mask: np.ndarray, bin_um: float) -> tuple[np.ndarray, int]:
    """Nuclei per mm^2 of tissue in square bins of about `bin_um` over the mask grid (NaN: no tissue in a bin).

    Returns (map, mask px per bin).
    """
    per_bin = max(1, round(bin_um / plan["mask_mpp"]))
    bins_y, bins_x = math.ceil(mask.shape[0] / per_bin), math.ceil(mask.shape[1] / per_bin)
    counts = np.zeros((bins_y, bins_x), np.float64)
    if len(points):
        factor = plan["mask_factor"] * per_bin
        by = np.clip((points[:, 1] / factor).astype(int), 0, bins_y - 1)
        bx = np.clip((points[:, 0] / factor).astype(int), 0, bins_x - 1)
        np.add.at(counts, (by, bx), 1)
    padded = np.zeros((bins_y * per_bin, bins_x * per_bin), bool)
    padded[: mask.shape[0], : mask.shape[1]] = mask
    tissue_px = padded.reshape(bins_y, per_bin, bins_x, per_bin).sum(axis=(1, 3))
    tissue_mm2 = tissue_px * (plan["mask_mpp"] / 1000.0) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(tissue_px > 0, counts / tissue_mm2, np.nan), per_bin


def overview_figure(thumbnail: np.ndarray, mask: np.ndarray, points: np.ndarray, plan: dict, path, title: str = ""):
    """Thumbnail with the tissue outline, and the nucleus density (per mm^2) over tissue (PNG and PDF)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from nucleiflow.reporting.figures import mask_contours, save_figure, use_style

    use_style()
    height, width = mask.shape
    bin_um = max(50.0, max(height, width) * plan["mask_mpp"] / 60)
    density, per_bin = density_map(points, plan, mask, bin_um)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.6 * height / max(width, 1) + 0.8), squeeze=True)
    ratio = plan.get("thumbnail_mpp", plan["mask_mpp"]) / plan["mask_mpp"]  # thumbnail px in mask px
    extent = (0, thumbnail.shape[1] * ratio, thumbnail.shape[0] * ratio, 0)
    outline = sns.color_palette("colorblind")[1]
    for ax in axes:
        ax.imshow(thumbnail, extent=extent)
        for contour in mask_contours(mask):
            ax.plot(contour[:, 1] + 0.5, contour[:, 0] + 0.5, color=outline, linewidth=1)
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    axes[0].set_title("Tissue (outline)")
    shown = np.ma.masked_invalid(density)
    heat = axes[1].imshow(
        shown,
        extent=(0, density.shape[1] * per_bin, density.shape[0] * per_bin, 0),
        cmap="viridis",
        alpha=0.75,
        interpolation="nearest",
    )
    axes[1].set_xlim(0, width)
    axes[1].set_ylim(height, 0)
    axes[1].set_title(f"Nuclei per mm$^2$ of tissue ({per_bin * plan['mask_mpp']:.0f} µm bins)")
    fig.colorbar(heat, ax=axes[1], fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
