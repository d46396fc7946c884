"""The typed PQ table: per-class PQ under the store's type names, mPQ over the types, blank without a type head."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nucleiflow.segmentation.reports.typed_pq import typed_pq_table
from nucleiflow.workflow.targets import typed_pq_experiments

NAMES = ["background", "other", "inflammatory", "epithelial", "spindle-shaped"]
CELL = {"arch": "unet", "encoder": "resnet18", "reg": "none"}


def _per_image(typed: bool) -> pd.DataFrame:
    frame = pd.DataFrame(
        {"image_id": ["a", "b"], "pq": [0.5, 0.7], "aji": [0.4, 0.6], "dq": [0.6, 0.8], "sq": [0.8, 0.9]}
    )
    if typed:
        frame["mpq"] = [0.3, 0.5]
        frame["pq_class_1"] = [np.nan, np.nan]  # no image holds an "other" nucleus: skipped
        frame["pq_class_2"] = [0.2, 0.4]
        frame["pq_class_3"] = [0.6, np.nan]
        frame["pq_class_4"] = [0.1, 0.3]
        frame["pq_class_5"] = [np.nan, np.nan]  # the type head's unused sixth channel: not a named class
    return frame


def test_named_columns_and_mpq_over_the_types():
    table = typed_pq_table([_per_image(True)], [CELL], NAMES)
    row = table.iloc[0]
    assert row["Model"] == "U-Net / ResNet-18 (none)" and row["Images"] == 2
    assert row["PQ"] == pytest.approx(0.6) and row["AJI"] == pytest.approx(0.5)
    assert row["inflammatory PQ"] == pytest.approx(0.3) and row["epithelial PQ"] == pytest.approx(0.6)
    assert np.isnan(row["other PQ"])
    assert row["mPQ"] == pytest.approx(np.mean([0.3, 0.6, 0.2]))
    assert not any("pq_class" in c or "neoplastic" in c for c in table.columns)


def test_without_a_type_head_only_the_binary_scores():
    row = typed_pq_table([_per_image(False)], [CELL], NAMES).iloc[0]
    assert row["PQ"] == pytest.approx(0.6) and np.isnan(row["mPQ"]) and np.isnan(row["epithelial PQ"])


def test_experiments_on_named_type_data():
    config = {
        "datasets": {"consep": {"format": "hovernet_mat"}, "pannuke": {"format": "pannuke"}},
        "segmentation": {
            "a": {"dataset": "consep", "evaluate_splits": ["test"]},
            "b": {"dataset": "pannuke", "evaluate_splits": ["test"]},
            "c": {"dataset": "consep", "evaluate_splits": ["val"]},
        },
    }
    assert typed_pq_experiments(config) == ["a"]
