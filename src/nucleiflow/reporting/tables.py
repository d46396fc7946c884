"""Paper tables as DataFrames: metrics as mean ± std, comparisons with published values, model sizes.

Builders return DataFrames; writing (CSV + Markdown + LaTeX) is `io.write_table`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from nucleiflow.catalog import METRIC_DISPLAY_NAMES as DISPLAY_NAMES
from nucleiflow.errors import DataFormatError, require_columns

# Record key -> column header of the model-size table, in display order.
MODEL_SIZE_COLUMNS = {
    "method": "Method",
    "backbone": "Backbone",
    "dropout": "Dropout",
    "l2": "L2",
    "kernel": "Kernel",
    "parameters": "Parameters",
    "size_mb": "Size (MB)",
}


def _format_mean_std(mean: float, std: float, digits: int) -> str:
    if pd.isna(mean):
        return ""
    if pd.isna(std):  # e.g. a single image or run: there is no spread to show
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def mean_std_column(mean, std, digits: int = 4) -> pd.Series:
    """Strings "0.8356 ± 0.0123"; a missing std shows the mean alone, a missing mean is ""."""
    index = mean.index if isinstance(mean, pd.Series) else None
    means = np.asarray(mean, dtype=float)
    stds = np.broadcast_to(np.asarray(np.nan if std is None else std, dtype=float), means.shape)
    return pd.Series([_format_mean_std(m, s, digits) for m, s in zip(means, stds)], index=index, dtype=object)


def _metric_label(metric: str) -> str:
    return DISPLAY_NAMES.get(metric, metric.replace("_", " ").capitalize())


def _mean_std_cell_column(summary: pd.DataFrame, metric: str, digits: int) -> pd.Series:
    """`<m>_mean` ± `<m>_std` (std optional), or a plain `<m>` column shown as is."""
    if f"{metric}_mean" in summary:
        return mean_std_column(summary[f"{metric}_mean"], summary.get(f"{metric}_std"), digits)
    if metric in summary:
        return mean_std_column(summary[metric], None, digits)
    raise DataFormatError(f"summary has no column {metric}_mean or {metric}; have {list(summary.columns)}")


def metrics_table(
    summary: pd.DataFrame,
    metrics: Sequence[str] = ("loss", "acc", "dice", "sensitivity", "iou"),
    label_cols: str | Sequence[str] = "model",
    digits: int = 4,
) -> pd.DataFrame:
    """The papers' layout: one row per summary row, label columns then "mean ± std" per metric.

    Metric columns get the papers' labels (Loss, Acc, DCS, SN, IoU, ...).
    Filter `summary` to one split first, or include the split in `label_cols`.
    """
    label_cols = [label_cols] if isinstance(label_cols, str) else list(label_cols)
    require_columns(summary, label_cols, "summary")
    table = summary[label_cols].reset_index(drop=True)
    for metric in metrics:
        table[_metric_label(metric)] = _mean_std_cell_column(summary, metric, digits).to_numpy()
    return table


def _value_column(df: pd.DataFrame, metric: str, what: str) -> pd.Series:
    """A plain `<m>` column, else `<m>_mean` (the output of `metrics.summarize`)."""
    for column in (metric, f"{metric}_mean"):
        if column in df:
            return df[column]
    raise DataFormatError(f"{what} has no column {metric} or {metric}_mean; have {list(df.columns)}")


def _metric_values(df: pd.DataFrame, keys: list[str], metrics: Sequence[str], what: str) -> pd.DataFrame:
    require_columns(df, keys, what)
    values = df[keys].copy()
    for metric in metrics:
        values[metric] = _value_column(df, metric, what).to_numpy()
    return values


def comparison_table(
    ours: pd.DataFrame, published: pd.DataFrame, keys: str | Sequence[str], metrics: Sequence[str]
) -> pd.DataFrame:
    """Our values beside the published ones: `<m>_ours`, `<m>_paper`, `<m>_diff` (ours - paper).

    Rows are matched on `keys`; a row present on one side only is kept with
    NaN for the other, so nothing disappears silently. Each side must have
    at most one row per key.
    """
    keys = [keys] if isinstance(keys, str) else list(keys)
    left = _metric_values(ours, keys, metrics, "our results")
    right = _metric_values(published, keys, metrics, "published results")
    try:
        merged = left.merge(right, on=keys, how="outer", suffixes=("_ours", "_paper"), validate="one_to_one")
    except pd.errors.MergeError as err:
        raise DataFormatError(f"comparison keys {keys} are not unique in our or the published results") from err
    table = merged[keys].copy()
    for metric in metrics:
        table[f"{metric}_ours"] = merged[f"{metric}_ours"]
        table[f"{metric}_paper"] = merged[f"{metric}_paper"]
        table[f"{metric}_diff"] = merged[f"{metric}_ours"] - merged[f"{metric}_paper"]
    return table


def model_size_table(records: Sequence[Mapping]) -> pd.DataFrame:
    """Model-size table from records with keys method, backbone, dropout, l2, kernel, parameters, size_mb."""
    for i, record in enumerate(records):
        missing = [key for key in MODEL_SIZE_COLUMNS if key not in record]
        if missing:
            raise DataFormatError(f"model-size record {i} lacks key(s) {missing}; have {sorted(record)}")
    table = pd.DataFrame(
        [{key: record[key] for key in MODEL_SIZE_COLUMNS} for record in records], columns=list(MODEL_SIZE_COLUMNS)
    )
    return table.rename(columns=MODEL_SIZE_COLUMNS)
