"""Nuclei as objects on data whose nucleus types the config names (CoNSeP, QuPath exports): PQ per named type.

Torch-free (the report env); reads the evaluate stage's `test_per_image.csv`
(`pq`, `aji`, `dq`, `sq` per image and, for a store with a class map,
`pq_class_<c>` per type c = 1, 2, ...) and the store's class names, so the
table says "epithelial PQ", not "pq_class_3" nor a PanNuke name. Per model one
row: the mean over the test images of PQ, AJI, DQ and SQ, the per-class PQ of
each named type (mean over the images holding nuclei of that type: an image
without one is skipped, as PanNuke's evaluation does) and mPQ, the mean of
the per-class PQs over the types (HoVer-Net's multi-class PQ, as the Lizard and
PanNuke benchmarks average it). A model without a type head has no per-class PQ.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from nucleiflow.catalog import model_label
from nucleiflow.errors import DataFormatError, require_columns
from nucleiflow.io import write_table

OBJECT_METRICS = {"pq": "PQ", "aji": "AJI", "dq": "DQ", "sq": "SQ"}


def _mean(values) -> float:
    values = pd.to_numeric(pd.Series(values, dtype=float), errors="coerce")
    return float(values.mean()) if values.notna().any() else float("nan")


def typed_model_row(per_image: pd.DataFrame, model: str, class_names: Sequence[str]) -> dict:
    """One model's row (module docstring); `class_names` are the store's, background first."""
    require_columns(per_image, ["image_id", *OBJECT_METRICS], f"per-image results of {model}")
    if per_image.empty:
        raise DataFormatError(f"per-image results of {model} hold no image")
    row = {"Model": model, "Images": len(per_image)}
    row.update({label: _mean(per_image[column]) for column, label in OBJECT_METRICS.items()})
    per_class = {
        f"{name} PQ": _mean(per_image[f"pq_class_{c}"]) if f"pq_class_{c}" in per_image else float("nan")
        for c, name in enumerate(class_names[1:], start=1)
    }
    typed = "mpq" in per_image and per_image["mpq"].notna().any()
    scores = [v for v in per_class.values() if not np.isnan(v)]
    row["mPQ"] = float(np.mean(scores)) if typed and scores else float("nan")
    row.update(per_class if typed else dict.fromkeys(per_class, float("nan")))
    return row


def typed_pq_table(per_image: Sequence[pd.DataFrame], cells: Sequence[dict], class_names) -> pd.DataFrame:
    if len(per_image) != len(cells) or not cells:
        raise DataFormatError(f"the typed PQ table needs one per-image table per model; got {len(per_image)}")
    rows = [
        typed_model_row(frame, model_label(c["arch"], c["encoder"], c["reg"]), class_names)
        for frame, c in zip(per_image, cells)
    ]
    return pd.DataFrame(rows)


def store_class_names(store_path: str) -> list[str]:
    """The class names a store records (background first), read without loading any image."""
    import json

    import h5py

    with h5py.File(store_path, "r") as f:
        return json.loads(f.attrs["class_names"])


def write_typed_pq_table(paths, cells, store_path: str, out: str, experiment: str) -> pd.DataFrame:
    """Read the test split's per-image tables of `cells`; write the table (CSV + Markdown + LaTeX)."""
    names = store_class_names(store_path)
    table = typed_pq_table([pd.read_csv(p) for p in paths], cells, names)
    caption = (
        f"Experiment {experiment}, test split: PQ, AJI, DQ and SQ (mean over the test images), the PQ of each "
        f"nucleus type ({', '.join(names[1:])}; mean over the images holding it) and mPQ, the mean over the types. "
        "Blank: no type head"
    )
    write_table(out, table, caption=caption)
    return table
