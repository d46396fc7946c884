"""Nuclei as objects: the PanNuke benchmark table of an experiment and the cross-validation summary.

Torch-free (the report env); reads the evaluate stage's `<subset>_per_image.csv`
files. The PanNuke scores come from `pannuke_metrics` (bPQ/mPQ per image, then
`tissue_summary`: per tissue the mean over its images, then the mean over
tissues), so this module only arranges them.

* `pannuke_pq_table`: per model, one row per tissue and an overall row (bPQ and
  mPQ as the benchmark defines them, mean over tissues), with the PQ of each
  nucleus type (the benchmark's per-class PQ: mean over all images holding
  that type). A model without a type head has no mPQ and no per-class PQ.
* `fold_scores`, `cross_validation_summary`, `cross_validation_table`: the
  test-split scores of every model on every fold (mean over images of Dice,
  IoU, AJI, PQ, mAP; bPQ/mPQ by `tissue_summary` where the data is typed),
  then mean ± sample std (ddof = 1) across folds, beside the published
  results of other methods (`reporting.reference_results`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from nucleiflow.catalog import model_label
from nucleiflow.errors import DataFormatError, require_columns
from nucleiflow.io import write_csv, write_table
from nucleiflow.reporting.reference_results import reference_results
from nucleiflow.reporting.tables import mean_std_column
from nucleiflow.segmentation.evaluation.pannuke_metrics import (
    PANNUKE_CLASS_IDS,
    PANNUKE_COLUMNS,
    class_pq_column,
    tissue_summary,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# PanNuke's nucleus types by class id, as datasets.pannuke.CLASS_NAMES holds them (not imported: the
# converters need packages the report env lacks; test_instance_report checks they agree).
PANNUKE_TYPES = dict(zip(PANNUKE_CLASS_IDS, ("neoplastic", "inflammatory", "connective", "dead", "epithelial")))
CLASS_COLUMNS = {class_pq_column(c): name for c, name in PANNUKE_TYPES.items()}
OVERALL = "mean over tissues"
CV_PIXEL_METRICS = ("dice", "iou", "aji", "pq", "map")  # mean over a fold's test images
CV_PANNUKE_METRICS = ("bpq", "mpq")  # tissue_summary of a fold's test images
LABELS = {"dice": "Dice", "iou": "IoU", "aji": "AJI", "pq": "PQ", "map": "mAP", "bpq": "bPQ", "mpq": "mPQ"}
MEAN_STD = "mean ± std"
REFERENCE_BENCHMARK = "pannuke"
DIGITS = 4
NAN = float("nan")


def _label(cell: dict) -> str:
    return model_label(cell["arch"], cell["encoder"], cell["reg"])


def _mean(values) -> float:
    """Mean of the non-NaN values; NaN when there are none (no warning)."""
    values = pd.to_numeric(pd.Series(values, dtype=float), errors="coerce")
    return float(values.mean()) if values.notna().any() else NAN


# ---------------------------------------------------------------- PanNuke per tissue


def pannuke_model_rows(per_image: pd.DataFrame, model: str) -> list[dict]:
    """One model's rows: one per tissue (alphabetical), then the overall row."""
    require_columns(per_image, ["image_id", *PANNUKE_COLUMNS], f"per-image results of {model}")
    if per_image.empty:
        raise DataFormatError(f"per-image results of {model} hold no image")
    summary = tissue_summary(per_image)
    tissues = per_image["tissue"].astype(str)
    rows = []
    for tissue in sorted(summary["tissue_bpq"]):
        members = per_image[tissues == tissue]
        rows.append(
            {
                "Model": model,
                "Tissue": tissue,
                "Images": len(members),
                "bPQ": summary["tissue_bpq"][tissue],
                "mPQ": summary["tissue_mpq"][tissue],
                **{f"{name} PQ": _mean(members[column]) for column, name in CLASS_COLUMNS.items()},
            }
        )
    rows.append(
        {
            "Model": model,
            "Tissue": OVERALL,
            "Images": len(per_image),
            "bPQ": summary["bpq"],
            "mPQ": summary["mpq"],
            # the benchmark's per-class PQ: over all images of every tissue, not over tissues
            **{f"{name} PQ": _mean(per_image[column]) for column, name in CLASS_COLUMNS.items()},
        }
    )
    return rows


def pannuke_pq_table(per_image: Sequence[pd.DataFrame], cells: Sequence[dict]) -> pd.DataFrame:
    """Per model (in `cells` order) its tissue rows and overall row; NaN: skipped or no type head."""
    if len(per_image) != len(cells) or not cells:
        raise DataFormatError(
            f"the PanNuke table needs one per-image table per model; got {len(per_image)} for {len(cells)}"
        )
    rows = [row for frame, cell in zip(per_image, cells) for row in pannuke_model_rows(frame, _label(cell))]
    table = pd.DataFrame(rows)
    value_columns = [c for c in table.columns if c not in ("Model", "Tissue", "Images")]
    table[value_columns] = table[value_columns].astype(float)
    return table


def write_pannuke_pq_table(paths: Sequence[str], cells: Sequence[dict], out: str, experiment: str) -> pd.DataFrame:
    """Read the test split's per-image tables of `cells` and write the PanNuke table (CSV + Markdown + LaTeX)."""
    table = pannuke_pq_table([pd.read_csv(path) for path in paths], cells)
    caption = (
        f"PanNuke benchmark, experiment {experiment}, test split: bPQ and mPQ per tissue (mean over the tissue's "
        f"images) and {OVERALL} (Gamper et al. 2020); per-class PQ over the images holding the class. "
        "Blank: no type head, or no image to score"
    )
    write_table(out, table, caption=caption)
    return table


# ---------------------------------------------------------------- cross-validation


def fold_scores(per_image: Sequence[pd.DataFrame], cells: Sequence[dict]) -> pd.DataFrame:
    """One row per model and fold: model, arch, encoder, reg, fold, experiment and the fold's test scores.

    `cells` carry `fold` (the fold's split name) and `experiment` besides arch/encoder/reg. Pixel and
    object metrics are the mean over the fold's images; bPQ and mPQ come from `tissue_summary` when the
    per-image table holds the PanNuke columns (NaN otherwise, mPQ also NaN without a type head).
    """
    if len(per_image) != len(cells) or not cells:
        raise DataFormatError(f"cross-validation needs one per-image table per model and fold; got {len(per_image)}")
    rows = []
    for frame, cell in zip(per_image, cells):
        what = f"per-image results of {cell['experiment']} {_label(cell)}"
        require_columns(frame, list(CV_PIXEL_METRICS), what)
        if frame.empty:
            raise DataFormatError(f"{what} hold no image")
        row = {
            "model": _label(cell),
            "arch": cell["arch"],
            "encoder": cell["encoder"],
            "reg": cell["reg"],
            "fold": cell["fold"],
            "experiment": cell["experiment"],
            "images": len(frame),
            **{metric: _mean(frame[metric]) for metric in CV_PIXEL_METRICS},
        }
        if {"tissue", "bpq", "mpq"} <= set(frame.columns):
            summary = tissue_summary(frame)
            row |= {"bpq": summary["bpq"], "mpq": summary["mpq"]}
        else:
            row |= {"bpq": NAN, "mpq": NAN}
        rows.append(row)
    scores = pd.DataFrame(rows)
    duplicated = scores.duplicated(["model", "fold"])
    if duplicated.any():
        first = scores[duplicated].iloc[0]
        raise DataFormatError(f"cross-validation: model {first['model']} appears twice in fold {first['fold']!r}")
    return scores


def cv_metrics(scores: pd.DataFrame) -> list[str]:
    """The metrics with at least one value (bPQ/mPQ only on typed data, mPQ only with a type head)."""
    return [m for m in (*CV_PIXEL_METRICS, *CV_PANNUKE_METRICS) if m in scores and scores[m].notna().any()]


def cross_validation_summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Per model: folds, and `<m>_mean`, `<m>_std` (sample std across folds, ddof = 1) of every metric."""
    metrics = [m for m in (*CV_PIXEL_METRICS, *CV_PANNUKE_METRICS) if m in scores]
    grouped = scores.groupby("model", sort=False)
    summary = grouped[metrics].agg(["mean", "std"])  # pandas' std is the sample std (ddof = 1)
    summary.columns = [f"{metric}_{stat}" for metric, stat in summary.columns]
    summary.insert(0, "folds", grouped["fold"].nunique())
    return summary.reset_index()


def cross_validation_table(scores: pd.DataFrame, published: bool = True) -> pd.DataFrame:
    """Model rows: each fold's scores, then mean ± std across folds; then the published reference rows."""
    metrics = cv_metrics(scores)
    summary = cross_validation_summary(scores).set_index("model")
    rows = []
    for model, folds in scores.groupby("model", sort=False):
        for _, fold in folds.iterrows():
            rows.append(
                {
                    "Model": model,
                    "Fold": fold["fold"],
                    **{LABELS[m]: mean_std_column([fold[m]], None, DIGITS)[0] for m in metrics},
                    "Source": "",
                }
            )
        stats = summary.loc[model]
        rows.append(
            {
                "Model": model,
                "Fold": f"{MEAN_STD} ({int(stats['folds'])} folds)",
                **{LABELS[m]: mean_std_column([stats[f"{m}_mean"]], [stats[f"{m}_std"]], DIGITS)[0] for m in metrics},
                "Source": "",
            }
        )
    if published:
        rows += _reference_rows(metrics)
    return pd.DataFrame(rows, columns=["Model", "Fold", *(LABELS[m] for m in metrics), "Source"])


def _reference_rows(metrics: Sequence[str]) -> list[dict]:
    """One row per published method: its checked values in our metric columns, the source of each."""
    reference = reference_results(REFERENCE_BENCHMARK)
    rows = []
    for method, values in reference.groupby("method", sort=False):
        values = values.set_index("metric")
        if not values.index.isin(metrics).any():  # nothing of it to set beside ours
            continue
        row = {"Model": f"{method} (published)", "Fold": "published, 3 folds"}
        for metric in metrics:
            mean, std = (values.at[metric, "mean"], values.at[metric, "std"]) if metric in values.index else (NAN, NAN)
            row[LABELS[metric]] = mean_std_column([mean], [std], DIGITS)[0]
        sources = list(dict.fromkeys(values["source"]))
        row["Source"] = "; ".join([values["paper"].iloc[0], *sources])
        rows.append(row)
    return rows


def cross_validation_figure(scores: pd.DataFrame, published: bool = True) -> Figure:
    """One panel per metric: per model the mean across folds (bar, ± sample std), each fold a dot.

    With `published`, the bPQ/mPQ panels carry the published results as horizontal lines.
    """
    # matplotlib and seaborn load only when a figure is drawn: the table jobs need neither (about 1 s)
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from nucleiflow.reporting import figures

    require_columns(scores, ["model", "fold"], "cross-validation scores")
    metrics = cv_metrics(scores)
    models = list(dict.fromkeys(scores["model"]))
    palette = figures.model_palette(models)
    summary = cross_validation_summary(scores).set_index("model")
    reference = reference_results(REFERENCE_BENCHMARK) if published else None
    folds = list(dict.fromkeys(scores["fold"]))
    markers = dict(zip(folds, "osD^vP*X"))
    ncols = min(len(metrics), 4)
    nrows = int(np.ceil(len(metrics) / ncols))
    fig = Figure(figsize=(max(3.0, 0.7 * len(models) + 1.6) * ncols, 3.0 * nrows), layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for spare in axes[len(metrics) :]:
        spare.remove()
    x = np.arange(len(models))
    ref_styles = ("--", ":", "-.")  # one per published method, the same in every panel
    ref_handles: dict[str, str] = {}
    for ax, metric in zip(axes, metrics):
        means = [summary.at[m, f"{metric}_mean"] for m in models]
        stds = [np.nan_to_num(summary.at[m, f"{metric}_std"]) for m in models]
        ax.bar(x, means, 0.6, yerr=stds, capsize=3, color=[palette[m] for m in models], alpha=0.85)
        for i, model in enumerate(models):
            rows = scores[scores["model"] == model]
            for _, row in rows.iterrows():
                ax.plot(i, row[metric], markers[row["fold"]], color="0.15", markersize=4)
        if reference is not None:
            for method, values in reference[reference["metric"] == metric].groupby("method", sort=False):
                style = ref_styles[list(reference["method"].unique()).index(method) % len(ref_styles)]
                ax.axhline(values["mean"].iloc[0], color="0.3", linestyle=style, linewidth=1.0)
                ref_handles.setdefault(method, style)
        ax.set_xticks(x, models, rotation=30, ha="right", fontsize="x-small")
        ax.set_title(LABELS[metric])
        ax.set_ylim(0, 1)
    handles = [Line2D([], [], marker=markers[f], color="0.15", linestyle="", label=f"fold {f}") for f in folds]
    handles += [
        Line2D([], [], color="0.3", linestyle=style, label=f"{m} (published)") for m, style in ref_handles.items()
    ]
    fig.legend(handles=handles, loc="outside right upper", frameon=False, fontsize="x-small")
    fig.suptitle("Test-split scores across folds: mean ± sample std (bars), each fold (markers)", fontsize=9)
    return fig


def write_cross_validation(
    paths: Sequence[str], cells: Sequence[dict], outputs: dict, name: str, published: bool
) -> pd.DataFrame:
    """Read every fold's test per-image tables and write the table, the numeric fold scores and the figure.

    `outputs` maps `table` (CSV stem: + Markdown + LaTeX), `folds` (CSV) and `figure` (PNG; PDF beside).
    """
    scores = fold_scores([pd.read_csv(path) for path in paths], cells)
    table = cross_validation_table(scores, published)
    caption = (
        f"Cross-validation {name}: test-split scores of every model on each fold (mean over images; bPQ and mPQ "
        "per the PanNuke benchmark: mean over tissues), then mean ± sample standard deviation across folds"
        + ("; published results of other methods with their sources" if published else "")
    )
    write_table(outputs["table"], table, caption=caption)
    write_csv(outputs["folds"], scores)
    from nucleiflow.reporting import figures  # see cross_validation_figure

    figures.use_style()
    figures.save_figure(cross_validation_figure(scores, published), outputs["figure"])
    return table
