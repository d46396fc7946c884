"""A slide's summary table and overview figure, written beside the nuclei in a process of their own.

`gather_slide` (`nucleiflow.slides.stage`) starts that process as the gather begins: it imports the
plotting and table libraries (matplotlib, seaborn, pandas' LaTeX writer: seconds on a CPU) while the
gather reads the chunks, then writes `tables/summary.{csv,md,tex}` and `figures/overview.{png,pdf}`
while the main process writes the GeoJSON, table and label pyramid (`nucleiflow.slides.outputs`).
It imports nothing of the stage's reading or post-processing.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from nucleiflow.catalog import UNTYPED
from nucleiflow.io import write_table


def warm_up() -> None:
    """Import what the summary and figure need, before they are asked for."""
    import matplotlib.pyplot  # noqa: F401
    import pandas.io.formats.style  # noqa: F401  (DataFrame.to_latex)
    import seaborn  # noqa: F401

    import nucleiflow.reporting.figures  # noqa: F401


def read_mask(path) -> np.ndarray:
    return np.asarray(Image.open(path)) > 0


def write_summary_and_overview(
    row: dict, summary_path, figure_path, thumbnail_path, mask_path, points: np.ndarray, plan: dict, title: str
) -> None:
    """The summary table (one row) and the overview figure of one slide, each written atomically."""
    write_table(summary_path, pd.DataFrame([row]), caption=f"Nuclei of slide {row['slide']}")
    thumbnail = np.asarray(Image.open(thumbnail_path).convert("RGB"))
    overview_figure(thumbnail, read_mask(mask_path), points, plan, figure_path, title=title)


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
