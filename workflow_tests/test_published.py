"""Published values: the package data loads, every number is plausible, comparisons subtract the paper."""

import math
from importlib import resources

import pandas as pd
import pytest

from nucleiflow.catalog import ARCH_ENCODERS, CLASSIFIER_NAMES
from nucleiflow.errors import ConfigError, DataFormatError
from nucleiflow.reporting.published import beside_published, load_published, published_table, published_tables

# Plausible range per metric: fractions, seconds per image, minutes of training, parameter counts.
SANE_RANGES = {
    "acc": (0.0, 1.0),
    "dice": (0.0, 1.0),
    "iou": (0.0, 1.0),
    "f1": (0.0, 1.0),
    "accuracy": (0.0, 1.0),
    "val_accuracy": (0.0, 1.0),
    "dropout": (0.0, 1.0),
    "l2": (0.0, 1.0),
    "inference_s": (0.0, 60.0),
    "training_min": (0.0, 10_000.0),
    "parameters": (1e5, 1e9),
}


def all_tables():
    return [(study, table) for study, names in published_tables().items() for table in names]


def test_the_yaml_is_installed_package_data():
    assert resources.files("nucleiflow.reporting").joinpath("published_values.yaml").is_file()
    studies = load_published()
    assert {"pannuke", "resunet_dsb2018", "classic_unet_dsb2018", "classification"} <= set(studies)


def test_load_returns_a_private_copy():
    load_published()["pannuke"]["tables"].clear()
    assert load_published()["pannuke"]["tables"]


@pytest.mark.parametrize("study, table", all_tables())
def test_every_value_is_a_number_in_a_sane_range(study, table):
    frame = published_table(study, table)
    spec = load_published()[study]["tables"][table]
    assert list(frame.columns) == [*spec["keys"], *spec["metrics"], "source", "note"]
    assert frame["source"].str.len().gt(0).all()
    for metric in spec["metrics"]:
        low, high = SANE_RANGES[metric]
        known = frame[metric].dropna()
        assert len(known) or "unknown" in " ".join(frame["note"]), f"{study}/{table}: {metric} all unknown"
        assert known.between(low, high).all(), f"{study}/{table}: {metric} out of [{low}, {high}]"


@pytest.mark.parametrize("study, table", all_tables())
def test_keys_use_the_workflow_names(study, table):
    frame = published_table(study, table)
    assert not frame.duplicated(load_published()[study]["tables"][table]["keys"]).any()
    if "arch" in frame:
        for arch, encoder in zip(frame["arch"], frame["encoder"]):
            assert encoder in ARCH_ENCODERS[arch]
    if "classifier" in frame:
        assert set(frame["classifier"]) <= set(CLASSIFIER_NAMES)


def test_quoted_values_are_where_the_issue_puts_them():
    pannuke = published_table("pannuke", "test_metrics").set_index(["arch", "encoder"])
    assert pannuke.loc[("deeplabv3plus", "resnet50"), ["dice", "iou", "acc"]].tolist() == [0.8356, 0.7280, 0.9455]
    assert math.isnan(pannuke.loc[("unet", "resnet50"), "dice"])  # not quoted: unknown, not invented
    timing = published_table("pannuke", "timing").set_index(["arch", "encoder"])
    assert timing.loc[("deeplabv3plus", "resnet50")].tolist()[:2] == [0.50, 23.37]
    assert "ASSUMPTION" in timing["note"].iloc[0]
    reg = published_table("pannuke", "regularization").set_index(["arch", "encoder"])
    assert reg.loc[("deeplabv3plus", "efficientnet-b4"), ["dropout", "l2"]].tolist() == [0.25, 0.01]
    assert published_table("classic_unet_dsb2018", "model_size")["parameters"].iloc[0] == 31_043_521
    assert published_table("classification", "cnn")["val_accuracy"].iloc[0] == 0.9722


def test_comparison_gives_ours_minus_paper():
    ours = pd.DataFrame(
        {
            "arch": ["deeplabv3plus", "unet"],
            "encoder": ["resnet50", "resnet50"],
            "split": ["test", "test"],
            "dice_mean": [0.8456, 0.81],
            "iou_mean": [0.70, 0.69],
            "acc_mean": [0.95, 0.94],
        }
    )
    table = beside_published(ours, "pannuke", "test_metrics")
    row = table.set_index(["arch", "encoder"]).loc[("deeplabv3plus", "resnet50")]
    assert row["dice_ours"] == 0.8456 and row["dice_paper"] == 0.8356
    assert row["dice_diff"] == pytest.approx(0.01)
    assert row["iou_diff"] == pytest.approx(0.70 - 0.7280)
    assert "Table" in row["source"]
    # Unknown paper values leave the difference empty; published rows we did not run stay.
    assert math.isnan(table.set_index(["arch", "encoder"]).loc[("unet", "resnet50"), "dice_diff"])
    assert len(table) == 4


def test_comparison_with_chosen_keys_and_metrics():
    ours = pd.DataFrame({"classifier": ["Random Forest", "SVM"], "variant": ["base", "base"], "accuracy": [0.80, 0.7]})
    table = beside_published(ours, "classification", "classic_ml", keys=["classifier", "variant"], metrics=["accuracy"])
    assert list(table.columns) == [
        "classifier",
        "variant",
        "accuracy_ours",
        "accuracy_paper",
        "accuracy_diff",
        "source",
    ]
    rf = table.set_index("classifier").loc["Random Forest"]
    assert rf["accuracy_diff"] == pytest.approx(0.02)
    assert pd.isna(table.set_index("classifier").loc["SVM", "accuracy_paper"])


def test_comparison_needs_our_metric_columns():
    ours = pd.DataFrame({"arch": ["resunet"], "encoder": ["none"]})
    with pytest.raises(DataFormatError, match="iou"):
        beside_published(ours, "resunet_dsb2018", "test_metrics")


def test_unknown_names_list_the_choices():
    with pytest.raises(
        ConfigError, match="choose one of: classic_unet_dsb2018, classification, pannuke, resunet_dsb2018"
    ):
        published_table("monuseg", "test_metrics")
    with pytest.raises(ConfigError, match="'pannuke'.*choose one of: regularization, test_metrics, timing"):
        beside_published(pd.DataFrame(), "pannuke", "table9")


def test_a_malformed_entry_is_named_in_one_line():
    import yaml

    from nucleiflow.reporting.published import _check_document

    document = yaml.safe_load(resources.files("nucleiflow.reporting").joinpath("published_values.yaml").read_text())
    # yaml reads 1.94e6 (no exponent sign) as a string: the loader must refuse it, not compare text.
    document["studies"]["resunet_dsb2018"]["tables"]["model_size"]["rows"][0]["parameters"] = yaml.safe_load("1.94e6")
    with pytest.raises(DataFormatError, match=r"resunet_dsb2018/model_size row 0 metric 'parameters' is '1.94e6'"):
        _check_document(document)
