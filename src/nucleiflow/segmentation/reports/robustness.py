"""The robustness sweep's report: degradation curves, the area under each, the degradation figure.

Torch-free (the report env): reads the per-cell sweep tables that
`robustness.sweep_from_spec` writes (one row per image, perturbation and
severity; severity 0 = the clean evaluation; the stain-normalised condition has
no severity). The area under a curve is divided by its severity range, so it
is the mean metric over the swept range and comparable across perturbations:
a model that keeps its accuracy scores its clean value, one that collapses
scores near 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from nucleiflow.catalog import STAIN_NORMALISED as NORMALISED
from nucleiflow.errors import DataFormatError, require_columns
from nucleiflow.reporting import figures

SEVERITY_LABELS = {
    "gaussian_noise": "noise sigma (grey levels)",
    "gaussian_blur": "blur sigma (px)",
    "jpeg": "100 - JPEG quality",
    "brightness_contrast": "brightness/contrast change",
    "stain": "H&E concentration change",
}


def collect(paths: list[str], cells: list[dict]) -> pd.DataFrame:
    """The sweeps of every cell in one frame, with a `model` label (arch/encoder/reg)."""
    frames = []
    for path, cell in zip(paths, cells, strict=True):
        frames.append(pd.read_csv(path).assign(model=f"{cell['arch']}/{cell['encoder']}/{cell['reg']}"))
    return pd.concat(frames, ignore_index=True)


def normalised_auc(severity, value) -> float:
    """Area under a metric-vs-severity curve divided by the severity range (the curve's mean height)."""
    x, y = np.asarray(severity, float), np.asarray(value, float)
    order = np.argsort(x)
    x, y = x[order], y[order]
    if len(x) < 2 or x[-1] == x[0]:
        raise DataFormatError("a degradation curve needs at least two distinct severities")
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


def degradation_curves(per_image: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Mean metric per model, perturbation and severity (long: model, perturbation, severity, metric, value)."""
    require_columns(per_image, ["model", "perturbation", "severity", *metrics], "robustness sweep")
    curves = per_image[per_image["perturbation"] != NORMALISED]
    curves = curves.groupby(["model", "perturbation", "severity"], sort=False)[metrics].mean().reset_index()
    curves = curves.sort_values(["model", "perturbation", "severity"], kind="stable")
    return curves.melt(id_vars=["model", "perturbation", "severity"], var_name="metric", value_name="value")


def auc_table(per_image: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """One row per model and metric: clean value, normalised AUC per perturbation, their mean, stain-normalised value.

    Models are ranked within each metric by clean value (`rank_clean`) and by
    mean AUC (`rank_robust`), 1 = best.
    """
    curves = degradation_curves(per_image, metrics)
    order = list(dict.fromkeys(per_image.loc[per_image["perturbation"] != NORMALISED, "perturbation"]))
    rows = []
    for (metric, model), curve in curves.groupby(["metric", "model"], sort=False):
        clean = curve.loc[curve["severity"] == 0, "value"]
        row = {"metric": metric, "model": model, "clean": float(clean.iloc[0]) if len(clean) else np.nan}
        for name in order:
            part = curve[curve["perturbation"] == name]
            row[f"auc_{name}"] = normalised_auc(part["severity"], part["value"]) if len(part) else np.nan
        normalised = per_image.loc[(per_image["model"] == model) & (per_image["perturbation"] == NORMALISED), metric]
        if len(normalised):
            row[NORMALISED] = float(normalised.mean())
        rows.append(row)
    table = pd.DataFrame(rows)
    aucs = [f"auc_{name}" for name in order]
    table.insert(table.columns.get_loc(aucs[-1]) + 1, "auc_mean", table[aucs].mean(axis=1))
    table["rank_clean"] = table.groupby("metric")["clean"].rank(ascending=False, method="min").astype(int)
    table["rank_robust"] = table.groupby("metric")["auc_mean"].rank(ascending=False, method="min").astype(int)
    return table


def degradation_figure(per_image: pd.DataFrame, metrics: list[str], palette: dict[str, str] | None = None) -> Figure:
    """Metric against severity: one row of panels per metric, one panel per perturbation, one line per model.

    The stain-normalised condition, when swept, is a last panel: each model's
    clean value beside its value after normalisation.
    """
    figures.use_style()
    curves = degradation_curves(per_image, metrics)
    perturbations = list(dict.fromkeys(curves["perturbation"]))
    normalised = per_image[per_image["perturbation"] == NORMALISED]
    ncols = len(perturbations) + (not normalised.empty)
    palette = palette or figures.model_palette(curves["model"])
    fig = Figure(figsize=(3.0 * ncols + 1.5, 2.6 * len(metrics)), layout="constrained")
    axes = fig.subplots(len(metrics), ncols, squeeze=False, sharey="row")
    for row, metric in enumerate(metrics):
        for col, name in enumerate(perturbations):
            ax = axes[row, col]
            part = curves[(curves["metric"] == metric) & (curves["perturbation"] == name)]
            sns.lineplot(part, x="severity", y="value", hue="model", palette=palette, marker="o", ax=ax, legend=False)
            ax.set_xlabel(SEVERITY_LABELS.get(name, name))
            ax.set_ylabel(figures.metric_label(metric) if col == 0 else "")
            if row == 0:
                ax.set_title(name.replace("_", " "))
        if not normalised.empty:
            _normalised_panel(axes[row, -1], per_image, normalised, metric, palette)
            if row == 0:
                axes[row, -1].set_title("stain normalised")
    handles = [Line2D([], [], color=palette[m], marker="o", label=m) for m in sorted(curves["model"].unique())]
    fig.legend(handles=handles, loc="outside right upper", frameon=False, title="model")
    return fig


def _normalised_panel(ax, per_image: pd.DataFrame, normalised: pd.DataFrame, metric: str, palette) -> None:
    """Per model: the clean mean (open marker) and the stain-normalised mean (filled), joined by a line."""
    clean = per_image[(per_image["perturbation"] != NORMALISED) & (per_image["severity"] == 0)]
    clean = clean.drop_duplicates(["model", "image_id"]).groupby("model")[metric].mean()
    after = normalised.groupby("model")[metric].mean()
    for x, model in enumerate(sorted(after.index)):
        ax.plot([x, x], [clean.get(model, np.nan), after[model]], color=palette[model])
        ax.plot(x, clean.get(model, np.nan), "o", mfc="white", color=palette[model])
        ax.plot(x, after[model], "o", color=palette[model])
    ax.set_xticks(range(len(after)), ["" for _ in after.index])
    ax.set_xlabel("model (open: clean, filled: normalised)")
