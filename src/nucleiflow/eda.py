"""Exploratory data analysis of a store (section 4 of the residual U-Net study).

`measure_store` reads every image once and returns two tables: one row per
nucleus (area, perimeter, circularity 4*pi*A/P^2, touching) and one row per
image (size, nuclei, mean area and circularity, share of touching nuclei,
overlapping pixels, grey mean and contrast, modality). `summary_table`
condenses the per-image table per modality, and `eda_figure` draws the
six-panel overview. Nothing here writes files.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from scipy import ndimage
from skimage.measure import regionprops_table

from nucleiflow.errors import require_columns
from nucleiflow.image_keys import modality_features, modality_hint
from nucleiflow.reporting.figures import model_palette
from nucleiflow.store import Store

log = logging.getLogger(__name__)

ALL = "all"  # the summary row over every modality
SIDE_GREYS = {"height": "0.25", "width": "0.65"}  # neutral, so they do not read as modalities
TOUCHING_FOOTPRINT = np.ones((3, 3), bool)  # a 1-pixel dilation reaches the 8 neighbours
PER_IMAGE_COLUMNS = (
    "image_id",
    "modality",
    "height",
    "width",
    "n_nuclei",
    "mean_area",
    "mean_circularity",
    "n_touching",
    "touching_share",
    "n_overlap_pixels",
    "mean_intensity",
    "contrast",
)
NUCLEUS_COLUMNS = ("image_id", "modality", "label", "area", "perimeter", "circularity", "touching")


@dataclass
class EdaTables:
    """The two tables of `measure_store` (columns: PER_IMAGE_COLUMNS, NUCLEUS_COLUMNS)."""

    per_image: pd.DataFrame
    nuclei: pd.DataFrame


# ---------------------------------------------------------------- per image


def touching_labels(instances: np.ndarray) -> np.ndarray:
    """Labels of nuclei that another nucleus reaches after a 1-pixel (8-neighbour) dilation."""
    foreground = instances > 0
    if not foreground.any():
        return np.zeros(0, instances.dtype)
    # A pixel sees a different nucleus in its 3x3 window iff the window's max or
    # (background-free) min label differs from its own.
    beyond = np.iinfo(instances.dtype).max  # stands for background (and outside) in the min filter
    highest = ndimage.maximum_filter(instances, footprint=TOUCHING_FOOTPRINT, mode="constant", cval=0)
    lowest = ndimage.minimum_filter(
        np.where(foreground, instances, beyond), footprint=TOUCHING_FOOTPRINT, mode="constant", cval=beyond
    )
    meets_other = foreground & ((highest != instances) | (lowest != instances))
    return np.unique(instances[meets_other])


def nucleus_table(image_id: str, instances: np.ndarray) -> pd.DataFrame:
    """Area, perimeter, circularity (4*pi*A/P^2; NaN when P is 0) and touching flag per nucleus."""
    props = regionprops_table(instances, properties=("label", "area", "perimeter"))
    table = pd.DataFrame(props)
    table.insert(0, "image_id", image_id)
    perimeter = table["perimeter"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        table["circularity"] = np.where(perimeter > 0, 4 * math.pi * table["area"] / perimeter**2, np.nan)
    table["touching"] = table["label"].isin(touching_labels(instances))
    return table


def image_row(image_id: str, image: np.ndarray, nuclei: pd.DataFrame, meta: dict, modality: str) -> dict:
    """One per-image row from the image, its nucleus table and its store metadata."""
    colour = modality_features(image)
    n = len(nuclei)
    n_touching = int(nuclei["touching"].sum())
    return {
        "image_id": image_id,
        "modality": modality,
        "height": int(image.shape[0]),
        "width": int(image.shape[1]),
        "n_nuclei": n,
        "mean_area": float(nuclei["area"].mean()) if n else np.nan,
        "mean_circularity": float(nuclei["circularity"].mean()) if n else np.nan,
        "n_touching": n_touching,
        "touching_share": n_touching / n if n else np.nan,
        "n_overlap_pixels": _overlap_pixels(meta),
        "mean_intensity": colour["grey_mean"],
        "contrast": colour["grey_std"],
    }


def _overlap_pixels(meta: dict) -> float:
    """The converter's overlap count; NaN where the layout cannot know it."""
    value = meta.get("n_overlap_pixels")
    return np.nan if value is None or pd.isna(value) else float(value)


def _modality(meta: dict, image: np.ndarray) -> str:
    """The store's `modality_hint`, else the same colour rule applied here (e.g. PanNuke -> he)."""
    hint = meta.get("modality_hint")
    return str(hint) if isinstance(hint, str) and hint else modality_hint(image)


def measure_store(store: Store) -> EdaTables:
    """Per-image and per-nucleus tables of every image in the store (one pass, one image in memory)."""
    metadata = store.metadata.set_index("image_id", drop=False)
    rows, nucleus_tables = [], []
    for count, image_id in enumerate(store.labelled_ids, start=1):  # unlabelled images hold no nuclei to measure
        sample = store[image_id]
        meta = metadata.loc[image_id].to_dict()
        modality = _modality(meta, sample.image)
        nuclei = nucleus_table(image_id, sample.instances)
        nuclei.insert(1, "modality", modality)
        nucleus_tables.append(nuclei)
        rows.append(image_row(image_id, sample.image, nuclei, meta, modality))
        if count % 500 == 0:
            log.info("EDA: %d of %d images measured", count, len(store))
    nuclei = pd.concat(nucleus_tables, ignore_index=True) if nucleus_tables else pd.DataFrame(columns=NUCLEUS_COLUMNS)
    return EdaTables(pd.DataFrame(rows, columns=list(PER_IMAGE_COLUMNS)), nuclei[list(NUCLEUS_COLUMNS)])


# ---------------------------------------------------------------- summary


def summary_table(per_image: pd.DataFrame) -> pd.DataFrame:
    """One row per modality and an `all` row: counts, size range, nuclei, shape, touching, overlaps, intensity."""
    require_columns(per_image, PER_IMAGE_COLUMNS, "per-image EDA table")
    groups = [(str(m), rows) for m, rows in per_image.groupby("modality", sort=True)]
    rows = [_summary_row(name, table) for name, table in groups]
    if len(groups) != 1:
        rows.append(_summary_row(ALL, per_image))
    return pd.DataFrame(rows)


def _summary_row(name: str, table: pd.DataFrame) -> dict:
    nuclei = int(table["n_nuclei"].sum())
    overlap = table["n_overlap_pixels"]
    return {
        "modality": name,
        "images": len(table),
        "nuclei": nuclei,
        "nuclei_per_image_mean": float(table["n_nuclei"].mean()),
        "nuclei_per_image_median": float(table["n_nuclei"].median()),
        "nuclei_per_image_max": int(table["n_nuclei"].max()),
        "empty_images": int((table["n_nuclei"] == 0).sum()),
        "height_min": int(table["height"].min()),
        "height_max": int(table["height"].max()),
        "width_min": int(table["width"].min()),
        "width_max": int(table["width"].max()),
        # Image means weighted by nuclei count = the mean over all nuclei.
        "mean_area": _weighted_mean(table["mean_area"], table["n_nuclei"]),
        "mean_circularity": _weighted_mean(table["mean_circularity"], table["n_nuclei"]),
        "touching_share": table["n_touching"].sum() / nuclei if nuclei else np.nan,
        "images_with_overlaps": int((overlap > 0).sum()),
        "overlap_pixels": float(overlap.sum()) if overlap.notna().any() else np.nan,
        "mean_intensity": float(table["mean_intensity"].mean()),
        "contrast": float(table["contrast"].mean()),
    }


def _weighted_mean(values: pd.Series, weights: pd.Series) -> float:
    ok = values.notna() & (weights > 0)
    return float(np.average(values[ok], weights=weights[ok])) if ok.any() else np.nan


# ---------------------------------------------------------------- figure


def eda_figure(per_image: pd.DataFrame, nuclei: pd.DataFrame) -> Figure:
    """Six histograms: image size, nuclei per image, nucleus area, circularity, and grey mean / contrast by modality.

    Call `figures.use_style()` first; colours follow `figures.model_palette` over the modalities.
    """
    palette = model_palette(per_image["modality"])
    hue = {"hue": "modality", "hue_order": sorted(palette), "palette": palette}
    stacked = {**hue, "multiple": "stack"}
    by_modality = {**hue, "element": "step", "common_norm": False, "stat": "density"}
    sizes = per_image.melt(value_vars=["height", "width"], var_name="side", value_name="pixels")
    fig = Figure(figsize=(11, 6.4), layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    _histogram(
        axes[0], sizes, "pixels", "Image size", "Pixels", hue="side", palette=SIDE_GREYS, multiple="dodge", shrink=0.8
    )
    _histogram(axes[1], per_image, "n_nuclei", "Nuclei per image", "Nuclei", **stacked)
    _histogram(axes[2], nuclei, "area", "Nucleus area", "Area (pixels)", log_scale=True, **stacked)
    _histogram(
        axes[3], nuclei.dropna(subset=["circularity"]), "circularity", "Circularity", r"$4\pi A / P^2$", **stacked
    )
    _histogram(axes[4], per_image, "mean_intensity", "Mean intensity by modality", "Grey mean (0-255)", **by_modality)
    _histogram(axes[5], per_image, "contrast", "Contrast by modality", "Grey std", **by_modality)
    for ax in axes[2:]:  # the modality legend of panel 2 serves every panel
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    return fig


def _histogram(ax, data: pd.DataFrame, x: str, title: str, xlabel: str, **style) -> None:
    """A seaborn histogram, or a note when there is nothing to count (e.g. a store without nuclei)."""
    if data.empty:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    else:
        sns.histplot(data, x=x, ax=ax, **style)
    ax.set(title=title, xlabel=xlabel)
