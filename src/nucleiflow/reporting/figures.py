"""Paper figures: metric curves, bar comparisons, error overlays, contours.

Builders RETURN a matplotlib Figure and write nothing; `save_figure` writes
PNG + PDF atomically. Figures are plain `matplotlib.figure.Figure` objects
(no pyplot state), so many can be built in one process without leaking.
Colours come from one style (`use_style`) and `model_palette`, so a model
has the same colour in every figure when callers pass one shared palette.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from skimage.measure import find_contours

from nucleiflow.catalog import METRIC_DISPLAY_NAMES as DISPLAY_NAMES
from nucleiflow.errors import DataFormatError, require_columns
from nucleiflow.io import atomic_path

matplotlib.use("Agg")  # headless cluster nodes have no display; also after pyplot is imported

PALETTE_NAME = "colorblind"
DPI = 200
SPLIT_ORDER = ("train", "val", "test")
SPLIT_STYLES = {"train": "-", "val": "--"}
# The PanNuke paper's convention for error overlays (RGB in [0, 1]).
OVERLAY_COLORS = {"TP": (0.0, 0.0, 1.0), "FP": (1.0, 0.0, 0.0), "FN": (0.0, 1.0, 0.0)}
CONTOUR_COLORS = {"ground truth": "#00ff00", "prediction": "#ffff00"}


def use_style() -> None:
    """Apply the one style shared by all figures."""
    sns.set_theme(context="paper", style="whitegrid", palette=PALETTE_NAME)


def model_palette(names: Iterable) -> dict[str, str]:
    """Hex colour per label, assigned in sorted label order.

    Sorting makes the mapping independent of row order; build it once from
    all model labels of a study and pass it to every builder so subsets keep
    their colours. More than ten labels cycle through the palette.
    """
    labels = sorted({str(n) for n in names})
    colors = sns.color_palette(PALETTE_NAME, len(labels))
    return {label: to_hex(color) for label, color in zip(labels, colors)}


def save_figure(fig: Figure, png_path: str | os.PathLike) -> list[Path]:
    """Write `fig` as PNG (dpi 200) and a PDF with the same stem, atomically; close it."""
    png_path = Path(png_path).with_suffix(".png")
    paths = [png_path, png_path.with_suffix(".pdf")]
    try:
        for path in paths:
            with atomic_path(path) as tmp:
                fig.savefig(tmp, dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)  # a no-op for figures not created by pyplot
    return paths


def metric_label(metric: str) -> str:
    """The papers' label for a metric column name."""
    if metric == "auc":
        return "AUC"
    return DISPLAY_NAMES.get(metric, metric.replace("_", " ").capitalize())


def _new_figure(n_panels: int, ncols: int, panel_size=(3.6, 2.8)) -> tuple[Figure, list]:
    """Figure with exactly `n_panels` axes on a grid of `ncols` columns (spare cells removed)."""
    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for spare in axes[n_panels:]:
        spare.remove()
    return fig, axes[:n_panels]


# ---------------------------------------------------------------- curves


def _split_columns(history: pd.DataFrame, metric: str) -> dict[str, str]:
    """{split: column} for the train/val curves of `metric`; a bare `metric` column counts as train."""
    columns = {split: f"{split}_{metric}" for split in SPLIT_STYLES if f"{split}_{metric}" in history}
    if not columns and metric in history:
        columns = {"train": metric}
    if not columns:
        raise DataFormatError(
            f"history has no column train_{metric}, val_{metric} or {metric}; have {list(history.columns)}"
        )
    return columns


def _draw_split_curves(ax, history: pd.DataFrame, metric: str, group_col: str, palette: dict[str, str]) -> None:
    """One colour per group; solid train and dashed validation lines over epochs."""
    columns = _split_columns(history, metric)
    for group, rows in history.groupby(group_col, sort=False):
        rows = rows.sort_values("epoch")
        for split, column in columns.items():
            ax.plot(rows["epoch"], rows[column], color=palette[str(group)], linestyle=SPLIT_STYLES[split])
    ax.set_xlabel("Epoch")
    ax.set_ylabel(metric_label(metric))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers


def _curve_legend(fig: Figure, palette: dict[str, str], groups: Iterable) -> None:
    """Figure legend: a colour entry per group, then a line-style entry per split."""
    handles = [Line2D([], [], color=palette[str(g)], label=str(g)) for g in dict.fromkeys(groups)]
    handles += [
        Line2D([], [], color="0.3", linestyle=style, label=split.capitalize()) for split, style in SPLIT_STYLES.items()
    ]
    fig.legend(handles=handles, loc="outside right upper", frameon=False)


def metric_curves(
    history: pd.DataFrame,
    metrics: Sequence[str] = ("loss", "acc", "dice", "sensitivity", "iou"),
    model_col: str = "model",
    palette: dict[str, str] | None = None,
) -> Figure:
    """One panel per metric over epochs: solid train, dashed validation, one colour per model.

    `history` has columns `<model_col>, epoch, train_<m>, val_<m>` (Figures 6-10 of the PanNuke paper).
    """
    require_columns(history, [model_col, "epoch"], "history")
    palette = palette or model_palette(history[model_col])
    fig, axes = _new_figure(len(metrics), ncols=3)
    for ax, metric in zip(axes, metrics):
        _draw_split_curves(ax, history, metric, model_col, palette)
        ax.set_title(metric_label(metric))
    _curve_legend(fig, palette, history[model_col])
    return fig


# ---------------------------------------------------------------- bars


def _legend_outside(fig: Figure, ax) -> None:
    """Move the axes' legend to the right of the figure, where it cannot hide bars."""
    handles, labels = ax.get_legend_handles_labels()
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    fig.legend(handles, labels, loc="outside right upper", frameon=False)


def _value_column(summary: pd.DataFrame, metric: str) -> str:
    """`<metric>_mean` from `metrics.summarize`, or a plain `<metric>` column."""
    for column in (f"{metric}_mean", metric):
        if column in summary:
            return column
    raise DataFormatError(f"summary has no column {metric}_mean or {metric}; have {list(summary.columns)}")


def _ordered_splits(splits: Iterable) -> list:
    """train, val, test first, any other split after in order of appearance."""
    present = list(dict.fromkeys(splits))
    return [s for s in SPLIT_ORDER if s in present] + [s for s in present if s not in SPLIT_ORDER]


def _split_label(split) -> str:
    """The standard splits capitalised (Train, Val, Test); any other split name as it is."""
    return str(split).capitalize() if split in SPLIT_ORDER else str(split)


def metric_bars(
    summary: pd.DataFrame,
    metric: str,
    model_col: str = "model",
    split_col: str = "split",
    palette: dict[str, str] | None = None,
) -> Figure:
    """Grouped bars: one group per split (train/val/test), one bar per model (Figures 13-15).

    Error bars show `<metric>_std` when that column exists. With a single split (a test-only
    evaluation) the models themselves go on the x axis, named there: a legend beside one group
    of bars would take more of the figure than the bars.
    """
    require_columns(summary, [model_col, split_col], "summary")
    value_col = _value_column(summary, metric)
    std_col = f"{metric}_std" if f"{metric}_std" in summary else None
    palette = palette or model_palette(summary[model_col])
    splits = _ordered_splits(summary[split_col])
    models = list(dict.fromkeys(summary[model_col]))
    if len(splits) == 1:
        return _single_split_bars(summary, metric, value_col, std_col, model_col, splits[0], models, palette)
    width = 0.8 / len(models)
    fig, (ax,) = _new_figure(1, ncols=1, panel_size=(max(4.0, 1.5 + 0.4 * len(splits) * len(models)), 3.2))
    for i, model in enumerate(models):
        rows = summary[summary[model_col] == model].set_index(split_col).reindex(splits)
        positions = np.arange(len(splits)) + (i - (len(models) - 1) / 2) * width
        errors = rows[std_col].fillna(0) if std_col else None
        ax.bar(positions, rows[value_col], width, yerr=errors, capsize=2, color=palette[str(model)], label=str(model))
    ax.set_xticks(np.arange(len(splits)), [_split_label(s) for s in splits])
    ax.set_ylabel(metric_label(metric))
    _legend_outside(fig, ax)
    return fig


def _single_split_bars(summary, metric, value_col, std_col, model_col, split, models, palette) -> Figure:
    """One bar per model, named on the x axis; the split names the axis."""
    rows = summary.drop_duplicates(model_col).set_index(model_col).reindex(models)
    fig, (ax,) = _new_figure(1, ncols=1, panel_size=(max(3.2, 1.2 + 1.1 * len(models)), 3.4))
    positions = np.arange(len(models))
    errors = rows[std_col].fillna(0) if std_col else None
    colors = [palette[str(model)] for model in models]
    ax.bar(positions, rows[value_col], 0.7, yerr=errors, capsize=3, color=colors)
    ax.set_xticks(positions, [textwrap.fill(str(model), 14, break_long_words=False) for model in models])
    ax.set_xlabel(_split_label(split))
    ax.set_ylabel(metric_label(metric))
    return fig


def classifier_bars(
    results: pd.DataFrame,
    metric: str = "accuracy",
    classifier_col: str = "classifier",
    variant_col: str = "variant",
) -> Figure:
    """Horizontal bars per classifier, one colour per variant (base vs augmented).

    Several rows per classifier and variant (folds, seeds) give a mean with a ±1 sd bar.
    """
    require_columns(results, [classifier_col, variant_col, metric], "results")
    n_classifiers = results[classifier_col].nunique()
    fig, (ax,) = _new_figure(1, ncols=1, panel_size=(5.0, 0.6 + 0.35 * n_classifiers))
    sns.barplot(data=results, y=classifier_col, x=metric, hue=variant_col, errorbar="sd", palette=PALETTE_NAME, ax=ax)
    ax.set_xlabel(metric_label(metric))
    ax.set_ylabel("")
    _legend_outside(fig, ax)
    return fig


# ---------------------------------------------------------------- images


def _as_rgb_float(image) -> np.ndarray:
    """Image as float RGB in [0, 1]: uint8 is scaled, grey is repeated, alpha is dropped."""
    image = np.asarray(image)
    rgb = image.astype(np.float64) / 255.0 if image.dtype == np.uint8 else image.astype(np.float64)
    if rgb.ndim == 2:
        rgb = rgb[..., None]
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    return np.clip(rgb[..., :3], 0.0, 1.0)


def overlay_rgb(image, pred, target, alpha: float = 0.5) -> np.ndarray:
    """Float RGB image with TP blended towards blue, FP red, FN green by `alpha`; TN untouched."""
    pred = np.asarray(pred, dtype=bool)
    target = np.asarray(target, dtype=bool)
    rgb = _as_rgb_float(image)
    if pred.shape != target.shape or pred.shape != rgb.shape[:2]:
        raise ValueError(f"image {rgb.shape[:2]}, prediction {pred.shape} and target {target.shape} differ in size")
    regions = {"TP": pred & target, "FP": pred & ~target, "FN": ~pred & target}
    for name, region in regions.items():
        rgb[region] = (1 - alpha) * rgb[region] + alpha * np.asarray(OVERLAY_COLORS[name])
    return rgb


def _overlay_legend(ax) -> None:
    handles = [Patch(color=color, label=name) for name, color in OVERLAY_COLORS.items()]
    ax.legend(handles=handles, loc="upper right", fontsize="x-small", framealpha=0.8)


def _show_image(ax, image, title: str = "") -> None:
    ax.imshow(_as_rgb_float(image), interpolation="nearest")
    ax.set_title(title)
    ax.set_axis_off()


def mask_contours(mask) -> list[np.ndarray]:
    """(row, col) contour lines of a binary mask, closed also where objects touch the border."""
    # Padding with background closes contours that would otherwise stop at the edge.
    padded = np.pad(np.asarray(mask, dtype=float), 1)
    return [contour - 1 for contour in find_contours(padded, 0.5)]


def _draw_contours(ax, mask, color: str) -> None:
    for contour in mask_contours(mask):
        ax.plot(contour[:, 1], contour[:, 0], color=color, linewidth=1)


def prediction_grid(samples: Sequence[tuple[str, object, object, object]], alpha: float = 0.5) -> Figure:
    """One row per (title, image, pred, target): image / ground truth / prediction / error overlay."""
    if not samples:
        raise ValueError("prediction_grid needs at least one sample")
    columns = ("Image", "Ground truth", "Prediction", "Overlay")
    fig, axes = _new_figure(len(columns) * len(samples), ncols=len(columns), panel_size=(2.4, 2.4))
    for row, (title, image, pred, target) in enumerate(samples):
        panels = (image, target, pred, overlay_rgb(image, pred, target, alpha))
        row_axes = axes[row * len(columns) : (row + 1) * len(columns)]
        for ax, column, panel in zip(row_axes, columns, panels):
            _show_image(ax, panel, column if row == 0 else "")
        # Axis-off hides the y label, so the row title goes in as text.
        row_axes[0].text(-0.05, 0.5, str(title), transform=row_axes[0].transAxes, rotation=90, ha="right", va="center")
    _overlay_legend(axes[len(columns) - 1])
    return fig


def augmentation_preview(samples: Sequence[Sequence[tuple[object, object]]]) -> Figure:
    """One row per image: (image, mask) views, the original first, with mask contours."""
    if not samples:
        raise ValueError("augmentation_preview needs at least one sample")
    n_cols = len(samples[0])
    fig, axes = _new_figure(len(samples) * n_cols, ncols=n_cols, panel_size=(2.2, 2.2))
    for row, views in enumerate(samples):
        for col, (image, mask) in enumerate(views):
            ax = axes[row * n_cols + col]
            _show_image(ax, image, ("Original" if col == 0 else f"Augmented {col}") if row == 0 else "")
            _draw_contours(ax, mask, CONTOUR_COLORS["ground truth"])
    return fig


def overlay_matrix(
    examples: Sequence[tuple[str, object, object]], predictions: dict[str, Sequence[object]], alpha: float = 0.5
) -> Figure:
    """Figure 11 layout: one row per example (image, ground truth), one overlay column per model.

    `examples` holds (title, image, target); `predictions[model][i]` is the
    boolean prediction of that model for example i.
    """
    if not examples or not predictions:
        raise ValueError("overlay_matrix needs at least one example and one model")
    models = list(predictions)
    n_cols = 2 + len(models)
    fig, axes = _new_figure(n_cols * len(examples), ncols=n_cols, panel_size=(2.0, 2.0))
    for row, (title, image, target) in enumerate(examples):
        row_axes = axes[row * n_cols : (row + 1) * n_cols]
        _show_image(row_axes[0], image, "Image" if row == 0 else "")
        _show_image(row_axes[1], target, "Ground truth" if row == 0 else "")
        for ax, model in zip(row_axes[2:], models):
            _show_image(ax, overlay_rgb(image, predictions[model][row], target, alpha), model if row == 0 else "")
            ax.title.set_fontsize("x-small")
        _row_label(row_axes[0], title)
    _overlay_legend(axes[n_cols - 1])
    return fig


def distribution_by_model(
    frame: pd.DataFrame, value: str, label: str, model_col: str = "model", palette: dict[str, str] | None = None
) -> Figure:
    """One box per model with the individual values on top (e.g. inference seconds per image)."""
    require_columns(frame, [model_col, value], "distribution data")
    palette = palette or model_palette(frame[model_col])
    order = list(dict.fromkeys(frame[model_col]))
    fig, (ax,) = _new_figure(1, ncols=1, panel_size=(max(4.0, 0.9 * len(order) + 2), 3.2))
    sns.boxplot(
        data=frame,
        x=model_col,
        y=value,
        hue=model_col,
        order=order,
        palette=palette,
        ax=ax,
        showfliers=False,
        legend=False,
    )
    sns.stripplot(data=frame, x=model_col, y=value, order=order, color="0.25", size=3, ax=ax)
    ax.set_xlabel("")
    ax.set_ylabel(label)
    ax.tick_params(axis="x", rotation=30)
    for tick in ax.get_xticklabels():
        tick.set_horizontalalignment("right")
    return fig


def _instance_rgb(instances, image=None, alpha: float = 0.35) -> np.ndarray:
    """Instances filled in distinct colours (over `image` when given), their boundaries drawn in white."""
    from skimage.color import label2rgb
    from skimage.segmentation import find_boundaries

    instances = np.asarray(instances)
    base = None if image is None else _as_rgb_float(image)
    rgb = label2rgb(instances, image=base, alpha=alpha if base is not None else 1.0, bg_label=0, bg_color=(0, 0, 0))
    rgb[find_boundaries(instances, mode="inner")] = 1.0
    return np.clip(rgb, 0.0, 1.0)


def sample_masks(samples: Sequence[tuple[str, object, object]]) -> Figure:
    """Sample images (top row) and their annotated masks, one colour per nucleus (bottom row).

    `samples` holds (title, image, instance map). The PanNuke paper's Figure 5.
    """
    if not samples:
        raise ValueError("sample_masks needs at least one sample")
    n = len(samples)
    fig, axes = _new_figure(2 * n, ncols=n, panel_size=(2.2, 2.2))
    for col, (title, image, instances) in enumerate(samples):
        _show_image(axes[col], image, str(title))
        axes[col].title.set_fontsize("x-small")
        _show_image(axes[n + col], _instance_rgb(instances), "Mask" if col == 0 else "")
    return fig


def filled_overlays(samples: Sequence[tuple[str, object, object]]) -> Figure:
    """One row per (title, image, instance map): the image and its nuclei filled, boundaries outlined.

    The classic U-Net paper's Figure 1 (sample images and filled boundary overlays).
    """
    if not samples:
        raise ValueError("filled_overlays needs at least one sample")
    fig, axes = _new_figure(2 * len(samples), ncols=2, panel_size=(2.6, 2.6))
    for row, (title, image, instances) in enumerate(samples):
        _show_image(axes[2 * row], image, "Image" if row == 0 else "")
        _show_image(axes[2 * row + 1], _instance_rgb(instances, image), "Filled boundary overlay" if row == 0 else "")
        axes[2 * row].text(
            -0.05,
            0.5,
            str(title),
            transform=axes[2 * row].transAxes,
            rotation=90,
            ha="right",
            va="center",
            fontsize="x-small",
        )
    return fig


def contour_matrix(image, target, predictions: dict[str, object]) -> Figure:
    """Ground-truth contours, then one panel per model with its predicted (yellow) over the true (green) contours.

    The PanNuke paper's Figure 12: every model on the same image.
    """
    if not predictions:
        raise ValueError("contour_matrix needs at least one model")
    n = 1 + len(predictions)
    fig, axes = _new_figure(n, ncols=min(n, 5), panel_size=(2.6, 2.6))
    _show_image(axes[0], image, "Ground truth")
    _draw_contours(axes[0], target, CONTOUR_COLORS["ground truth"])
    for ax, (model, pred) in zip(axes[1:], predictions.items()):
        _show_image(ax, image, model)
        ax.title.set_fontsize("x-small")
        _draw_contours(ax, target, CONTOUR_COLORS["ground truth"])
        _draw_contours(ax, pred, CONTOUR_COLORS["prediction"])
    handles = [Line2D([], [], color=color, label=name.capitalize()) for name, color in CONTOUR_COLORS.items()]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)
    return fig


def confidence_maps(samples: Sequence[tuple[str, object, object, object]], threshold: float = 0.5) -> Figure:
    """One row per (title, image, probability, target): image, ground truth, probability map, thresholded mask."""
    if not samples:
        raise ValueError("confidence_maps needs at least one sample")
    columns = ("Image", "Ground truth", "Confidence (probability)", f"Prediction (p > {threshold:g})")
    fig, axes = _new_figure(len(columns) * len(samples), ncols=len(columns), panel_size=(2.4, 2.4))
    for row, (title, image, probability, target) in enumerate(samples):
        row_axes = axes[row * len(columns) : (row + 1) * len(columns)]
        _show_image(row_axes[0], image, columns[0] if row == 0 else "")
        _show_image(row_axes[1], target, columns[1] if row == 0 else "")
        shown = row_axes[2].imshow(np.asarray(probability, dtype=float), cmap="viridis", vmin=0.0, vmax=1.0)
        row_axes[2].set_title(columns[2] if row == 0 else "")
        row_axes[2].set_axis_off()
        fig.colorbar(shown, ax=row_axes[2], fraction=0.046, pad=0.02)
        _show_image(row_axes[3], np.asarray(probability) > threshold, columns[3] if row == 0 else "")
        for ax in row_axes:
            ax.title.set_fontsize("x-small")
        _row_label(row_axes[0], title)
    return fig


def _row_label(ax, title) -> None:
    """A figure row's name, written vertically to the left of its first panel."""
    ax.text(-0.05, 0.5, str(title), transform=ax.transAxes, rotation=90, ha="right", va="center", fontsize="x-small")
