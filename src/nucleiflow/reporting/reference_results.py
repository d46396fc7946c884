"""Published results of other methods on a benchmark we also run (`reference_results.yaml`), with their sources.

Unlike `published` (the numbers of the studies this workflow reproduces, set
beside the same models), these are other methods' results on a shared
benchmark (CellViT on PanNuke's three folds), printed next to ours for scale.
A value the file holds as null (not checked against its source) never reaches
a table.
"""

from __future__ import annotations

import copy
import functools
from numbers import Real

import pandas as pd

from nucleiflow.errors import DataFormatError, choices_error
from nucleiflow.reporting.published import read_package_yaml

DATA_FILE = "reference_results.yaml"
FORMAT_VERSION = 1
VALUE_FIELDS = ("mean", "std", "source", "note")
COLUMNS = ("method", "metric", "mean", "std", "source", "paper")


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _text(mapping: dict, field: str, where: str) -> None:
    value = mapping.get(field)
    if not isinstance(value, str) or not value.strip():
        raise DataFormatError(f"{DATA_FILE}: {where} needs a non-empty {field!r}")


def _check_value(value, where: str) -> None:
    if not isinstance(value, dict):
        raise DataFormatError(f"{DATA_FILE}: {where} must be a mapping with {VALUE_FIELDS}")
    unknown = sorted(set(value) - set(VALUE_FIELDS))
    if unknown:
        raise DataFormatError(f"{DATA_FILE}: {where} has unknown field(s) {unknown}; valid: {list(VALUE_FIELDS)}")
    for field in ("mean", "std"):
        if value.get(field) is not None and not _is_number(value[field]):
            raise DataFormatError(f"{DATA_FILE}: {where} {field} is {value[field]!r}, not a number or null")
    if value.get("mean") is None:
        _text(value, "note", f"{where} (null mean: say why)")
        if value.get("std") is not None:
            raise DataFormatError(f"{DATA_FILE}: {where} has a std without a mean")
    else:
        _text(value, "source", where)


def _check_document(document) -> None:
    if not isinstance(document, dict) or document.get("format_version") != FORMAT_VERSION:
        raise DataFormatError(f"{DATA_FILE}: format_version must be {FORMAT_VERSION}")
    for name, benchmark in document.get("benchmarks", {}).items():
        metrics = benchmark.get("metrics")
        if not isinstance(metrics, list) or not metrics:
            raise DataFormatError(f"{DATA_FILE}: benchmark {name!r} needs a non-empty metrics list")
        for i, method in enumerate(benchmark.get("methods") or []):
            where = f"{name} method {i}"
            _text(method, "method", where)
            _text(method, "paper", where)
            values = method.get("values") or {}
            stray = sorted(set(values) - set(metrics))
            if stray:
                raise DataFormatError(f"{DATA_FILE}: {where} values name unknown metric(s) {stray}; valid: {metrics}")
            for metric, value in values.items():
                _check_value(value, f"{where} {metric}")


@functools.lru_cache(maxsize=1)
def _parsed() -> dict:
    document = read_package_yaml(DATA_FILE)
    _check_document(document)
    return document


def load_reference_results() -> dict:
    """benchmark -> {title, metrics, methods} as the file holds it (a private copy)."""
    return copy.deepcopy(_parsed()["benchmarks"])


def reference_results(benchmark: str) -> pd.DataFrame:
    """One row per checked number: method, metric, mean, std (NaN: not given), source, paper."""
    benchmarks = _parsed()["benchmarks"]
    if benchmark not in benchmarks:
        raise choices_error("reference benchmark", benchmark, benchmarks)
    rows = [
        {
            "method": method["method"],
            "metric": metric,
            "mean": float(value["mean"]),
            "std": float(value["std"]) if value.get("std") is not None else float("nan"),
            "source": value["source"],
            "paper": method["paper"],
        }
        for method in benchmarks[benchmark]["methods"]
        for metric, value in method["values"].items()
        if value.get("mean") is not None
    ]
    return pd.DataFrame(rows, columns=list(COLUMNS))
