"""The values the reproduced papers published, and our tables beside them.

The numbers live in the package data file `published_values.yaml` (layout
documented at its top): study -> table -> rows of key columns and metric
values, each with a source note. `beside_published` turns any of our result
frames into an "ours / paper / difference" companion via
`tables.comparison_table`.

A table with `compare: false` is reference only: numbers the paper states
that no result of ours sits beside (dataset sizes, EDA statistics, per-epoch
logs). `published_tables()` lists only the comparable tables unless asked
for all; `published_table` and `load_published` read every table.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from importlib import resources
from numbers import Real
from typing import Any

import pandas as pd
import yaml

from nucleiflow.errors import DataFormatError, choices_error
from nucleiflow.reporting.tables import comparison_table

DATA_FILE = "published_values.yaml"
FORMAT_VERSION = 1

TABLE_FIELDS = ("source", "keys", "metrics", "rows")
# dataset_split: the workflow's split of the dataset a table's numbers were measured on (a table-level
# field), or, as a key column, the split each row was measured on; segmentation.reports.experiment.versus_paper uses it.
DATASET_SPLIT = "dataset_split"
OPTIONAL_TABLE_FIELDS = ("note", "compare", DATASET_SPLIT)
ROW_TEXT_FIELDS = ("source", "note")
# metric -> the value exactly as the paper prints it, where that is not a plain number ("99.37ms")
ROW_PRINTED_FIELD = "printed"


# ---------------------------------------------------------------- validation


def _require_fields(mapping, fields: Sequence[str], where: str) -> None:
    if not isinstance(mapping, dict):
        raise DataFormatError(f"{DATA_FILE}: {where} must be a mapping; got {type(mapping).__name__}")
    missing = [field for field in fields if field not in mapping]
    if missing:
        raise DataFormatError(f"{DATA_FILE}: {where} lacks field(s) {missing}; has {sorted(mapping)}")


def _is_number(value) -> bool:
    # bool is an int subclass, and yaml reads "1.9e6" (no exponent sign) as a string: both are mistakes here.
    return isinstance(value, Real) and not isinstance(value, bool)


def _check_row(row, keys: list[str], metrics: list[str], where: str) -> None:
    _require_fields(row, [*keys, *metrics], where)
    unknown = sorted(set(row) - {*keys, *metrics, *ROW_TEXT_FIELDS, ROW_PRINTED_FIELD})
    if unknown:
        raise DataFormatError(
            f"{DATA_FILE}: {where} has unknown field(s) {unknown}; declare them in the table's keys or metrics"
        )
    for field in ROW_TEXT_FIELDS:
        if field in row and (not isinstance(row[field], str) or not row[field].strip()):
            raise DataFormatError(f"{DATA_FILE}: {where} field {field!r} must be non-empty text")
    for metric in metrics:
        value = row[metric]
        if value is not None and not _is_number(value):
            raise DataFormatError(f"{DATA_FILE}: {where} metric {metric!r} is {value!r}, not a number or null")
        if value is None and "note" not in row:
            raise DataFormatError(
                f"{DATA_FILE}: {where} metric {metric!r} is null without a row note saying why the paper gives none"
            )
    printed = row.get(ROW_PRINTED_FIELD, {})
    if not isinstance(printed, dict) or not all(isinstance(text, str) and text for text in printed.values()):
        raise DataFormatError(f"{DATA_FILE}: {where} field 'printed' must map metrics to the text the paper prints")
    stray = sorted(set(printed) - set(metrics))
    if stray:
        raise DataFormatError(f"{DATA_FILE}: {where} field 'printed' names unknown metric(s) {stray}")


def _check_table(table, where: str) -> None:
    _require_fields(table, TABLE_FIELDS, where)
    unknown = sorted(set(table) - {*TABLE_FIELDS, *OPTIONAL_TABLE_FIELDS})
    if unknown:
        raise DataFormatError(f"{DATA_FILE}: {where} has unknown field(s) {unknown}")
    for field in ("keys", "metrics", "rows"):
        if not isinstance(table[field], list) or not table[field]:
            raise DataFormatError(f"{DATA_FILE}: {where} field {field!r} must be a non-empty list")
    if DATASET_SPLIT in table and (not isinstance(table[DATASET_SPLIT], str) or not table[DATASET_SPLIT]):
        raise DataFormatError(f"{DATA_FILE}: {where} field {DATASET_SPLIT!r} must name a split of the dataset")
    if not isinstance(table.get("compare", True), bool):
        raise DataFormatError(f"{DATA_FILE}: {where} field 'compare' is {table['compare']!r}, not true or false")
    clash = sorted(set(table["keys"]) & {*table["metrics"], *ROW_TEXT_FIELDS, ROW_PRINTED_FIELD})
    if clash or len(set(table["keys"])) < len(table["keys"]) or len(set(table["metrics"])) < len(table["metrics"]):
        raise DataFormatError(f"{DATA_FILE}: {where} repeats a column name in keys and metrics {clash}")
    for i, row in enumerate(table["rows"]):
        _check_row(row, table["keys"], table["metrics"], f"{where} row {i}")


def _check_document(document) -> None:
    _require_fields(document, ("format_version", "studies"), "the file")
    if document["format_version"] != FORMAT_VERSION:
        raise DataFormatError(f"{DATA_FILE}: format_version {document['format_version']!r} is not {FORMAT_VERSION}")
    for study_name, study in document["studies"].items():
        _require_fields(study, ("tables",), f"study {study_name!r}")
        for table_name, table in study["tables"].items():
            _check_table(table, f"{study_name}/{table_name}")


# ---------------------------------------------------------------- loading


def read_package_yaml(filename: str) -> Any:
    """A YAML file shipped in `nucleiflow.reporting`, parsed; a one-line DataFormatError naming it if invalid."""
    text = resources.files("nucleiflow.reporting").joinpath(filename).read_text(encoding="utf-8")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise DataFormatError(f"{filename}: not valid YAML ({str(err).splitlines()[0]})") from err


@functools.lru_cache(maxsize=1)
def _parsed() -> dict:
    """The validated document, read once per process from the installed package."""
    document = read_package_yaml(DATA_FILE)
    _check_document(document)
    return document


def load_published() -> dict:
    """study -> {title, tables: {table -> {source, note?, compare?, keys, metrics, rows}}} (a private copy)."""
    return copy.deepcopy(_parsed()["studies"])


def is_compared(spec: dict) -> bool:
    """Whether a table's numbers are meant to sit beside ours (`compare`, default true)."""
    return spec.get("compare", True)


def published_tables(include_reference: bool = False) -> dict[str, list[str]]:
    """study -> names of its tables our results are compared with; with `include_reference`, every table."""
    return {
        study: [name for name, table in spec["tables"].items() if include_reference or is_compared(table)]
        for study, spec in _parsed()["studies"].items()
    }


def _table_spec(study: str, table: str) -> dict:
    studies = _parsed()["studies"]
    if study not in studies:
        raise choices_error("published study", study, studies)
    tables = studies[study]["tables"]
    if table not in tables:
        raise choices_error(f"published table of study {study!r}", table, tables)
    return tables[table]


def published_table(study: str, table: str) -> pd.DataFrame:
    """One row per published entry: the key columns, the metric columns (NaN = unknown), `source`, `note`."""
    spec = _table_spec(study, table)
    records = [
        {
            **{key: row[key] for key in spec["keys"]},
            **{metric: row[metric] for metric in spec["metrics"]},
            "source": row.get("source", spec["source"]),
            "note": row.get("note", spec.get("note", "")),
        }
        for row in spec["rows"]
    ]
    frame = pd.DataFrame(records, columns=[*spec["keys"], *spec["metrics"], "source", "note"])
    frame[spec["metrics"]] = frame[spec["metrics"]].astype(float)  # null -> NaN
    return frame


# ---------------------------------------------------------------- comparison


def beside_published(
    ours: pd.DataFrame,
    study: str,
    table: str,
    keys: str | Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Our values beside the paper's: key columns, `<m>_ours`, `<m>_paper`, `<m>_diff` (ours - paper), `source`.

    `keys` and `metrics` default to the published table's; `ours` needs the
    key columns and, per metric, a `<m>` or `<m>_mean` column (the output of
    `metrics.summarize` works as is). Rows on one side only are kept with NaN.
    """
    spec = _table_spec(study, table)
    keys = spec["keys"] if keys is None else [keys] if isinstance(keys, str) else list(keys)
    metrics = spec["metrics"] if metrics is None else list(metrics)
    published = published_table(study, table)
    companion = comparison_table(ours, published, keys, metrics)
    # Which paper and table each number comes from travels with the row.
    sources = published[[*keys, "source"]]
    return companion.merge(sources, on=keys, how="left", validate="many_to_one")
