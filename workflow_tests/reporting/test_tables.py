"""Paper tables: mean ± std cells, the metrics layout, comparisons with published values, model sizes."""

import math

import pandas as pd
import pytest

from nucleiflow.errors import DataFormatError
from nucleiflow.io import write_table
from nucleiflow.reporting.tables import comparison_table, mean_std_column, metrics_table, model_size_table


def summary():
    return pd.DataFrame(
        {
            "model": ["U-Net", "DeepLabV3+"],
            "split": ["test", "test"],
            "loss_mean": [0.21, 0.25],
            "loss_std": [0.01, 0.02],
            "acc_mean": [0.95, 0.94],
            "acc_std": [0.012, 0.02],
            "dice_mean": [0.83561, 0.8],
            "dice_std": [0.01234, 0.03],
            "dice_pooled": [0.85, 0.81],
            "sensitivity_mean": [0.8, 0.79],
            "sensitivity_std": [0.05, 0.04],
            "iou_mean": [0.72, 0.7],
            "iou_std": [0.04, 0.05],
        }
    )


def test_mean_std_column_formats_and_keeps_the_index():
    cells = mean_std_column(pd.Series([0.83561, 0.5], index=[3, 7]), pd.Series([0.01234, 0.1], index=[3, 7]))
    assert list(cells) == ["0.8356 ± 0.0123", "0.5000 ± 0.1000"]
    assert list(cells.index) == [3, 7]
    assert list(mean_std_column([1 / 3], [0.25], digits=2)) == ["0.33 ± 0.25"]


def test_mean_std_column_missing_values():
    cells = mean_std_column([0.5, math.nan, 0.25], [math.nan, 0.1, None])
    assert list(cells) == ["0.5000", "", "0.2500"]
    assert list(mean_std_column([0.5], None)) == ["0.5000"]


def test_metrics_table_has_the_paper_layout():
    table = metrics_table(summary(), label_cols="model")
    assert list(table.columns) == ["model", "Loss", "Acc", "DCS", "SN", "IoU"]
    assert list(table["model"]) == ["U-Net", "DeepLabV3+"]
    assert table.loc[0, "DCS"] == "0.8356 ± 0.0123"


def test_metrics_table_with_several_labels_and_plain_columns():
    df = summary().drop(columns="iou_std").assign(mcc=[0.7, 0.6])
    table = metrics_table(df, metrics=("iou", "mcc"), label_cols=["model", "split"], digits=2)
    assert list(table.columns) == ["model", "split", "IoU", "MCC"]
    assert list(table["IoU"]) == ["0.72", "0.70"]
    assert list(table["MCC"]) == ["0.70", "0.60"]


def test_metrics_table_missing_metric_is_a_readable_error():
    with pytest.raises(DataFormatError, match="f1_mean"):
        metrics_table(summary(), metrics=("f1",))


def test_comparison_table_matches_rows_and_computes_differences():
    published = pd.DataFrame({"model": ["DeepLabV3+", "U-Net", "FCN"], "dice": [0.82, 0.84, 0.7]})
    table = comparison_table(summary(), published, keys="model", metrics=["dice"])
    assert list(table.columns) == ["model", "dice_ours", "dice_paper", "dice_diff"]
    rows = table.set_index("model")
    assert rows.loc["U-Net", "dice_ours"] == pytest.approx(0.83561)
    assert rows.loc["U-Net", "dice_paper"] == pytest.approx(0.84)
    assert rows.loc["DeepLabV3+", "dice_diff"] == pytest.approx(0.8 - 0.82)
    # A published row we did not run stays, with no value of ours.
    assert math.isnan(rows.loc["FCN", "dice_ours"]) and math.isnan(rows.loc["FCN", "dice_diff"])


def test_comparison_table_refuses_duplicate_keys():
    published = pd.DataFrame({"model": ["U-Net", "U-Net"], "dice": [0.8, 0.9]})
    with pytest.raises(DataFormatError, match="not unique"):
        comparison_table(summary(), published, keys=["model"], metrics=["dice"])


def size_records():
    return [
        {
            "method": "U-Net",
            "backbone": "ResNet-50",
            "dropout": 0.5,
            "l2": 1e-4,
            "kernel": 3,
            "parameters": 32_521_250,
            "size_mb": 124.1,
        },
        {
            "method": "DeepLabV3+",
            "backbone": "EfficientNet-B4",
            "dropout": 0.5,
            "l2": 1e-4,
            "kernel": 3,
            "parameters": 18_600_000,
            "size_mb": 71.0,
            "extra": 1,
        },
    ]


def test_model_size_table_columns_and_values():
    table = model_size_table(size_records())
    assert list(table.columns) == ["Method", "Backbone", "Dropout", "L2", "Kernel", "Parameters", "Size (MB)"]
    assert table.loc[0, "Parameters"] == 32_521_250
    assert table.loc[1, "Backbone"] == "EfficientNet-B4"
    assert len(model_size_table([])) == 0


def test_model_size_table_missing_key_names_record_and_key():
    records = size_records()
    del records[1]["size_mb"]
    with pytest.raises(DataFormatError, match=r"record 1 lacks key\(s\) \['size_mb'\]"):
        model_size_table(records)


def test_tables_write_in_three_formats(tmp_path):
    paths = write_table(tmp_path / "table", metrics_table(summary()), caption="Test-set metrics")
    assert "0.8356 ± 0.0123" in paths[1].read_text()
    assert "DCS" in paths[2].read_text()
