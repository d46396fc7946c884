"""Published values: the package data loads, every number is plausible and printed in its paper, comparisons
subtract the paper."""

import math
import re
from importlib import resources
from pathlib import Path

import pandas as pd
import pytest
import yaml

from nucleiflow.catalog import ARCH_ENCODERS, CLASSIFIER_NAMES, CNN_MODELS
from nucleiflow.errors import ConfigError, DataFormatError
from nucleiflow.reporting.published import (
    _check_document,
    beside_published,
    load_published,
    published_table,
    published_tables,
)

REPO = Path(__file__).resolve().parents[2]
PAPERS = REPO.parent / "shared" / "papers"
# study -> the paper's full text (both extractions of the PanNuke paper; see the papers' README.md)
PAPER_FILES = {
    "pannuke": ("000_796939b2f203099e.txt", "001_ae198613b77f1cb4.txt"),
    "resunet_dsb2018": ("002_bad9bca13902d083.txt",),
    "classic_unet_dsb2018": ("003_373a15436ed3afaf.txt",),
    "classification": ("004_f439cc05aa13c8a8.txt",),
}

FRACTION = (0.0, 1.0)
# Plausible range per metric: fractions, losses, seconds per image, minutes of training, counts.
SANE_RANGES = {
    **dict.fromkeys(["acc", "dice", "iou", "f1", "precision", "sensitivity", "accuracy", "recall"], FRACTION),
    **dict.fromkeys(
        [f"{s}_{m}" for s in ("train", "val") for m in ("accuracy", "precision", "recall", "auc")], FRACTION
    ),
    **dict.fromkeys(["mean_train_accuracy", "mean_val_accuracy", "dropout", "l2"], FRACTION),
    **dict.fromkeys(["mcc", "kappa"], (-1.0, 1.0)),
    **dict.fromkeys(["acc_std", "dice_std", "iou_std", "sensitivity_std"], (0.0, 0.5)),
    "loss": (0.0, 1.0),  # dice loss / BCE + Dice at the end of training
    "loss_std": (0.0, 2.0),  # the PanNuke paper's Table 2 prints standard deviations above 1
    "train_loss": (0.0, 10.0),
    "val_loss": (0.0, 10_000.0),  # Table V of the classification paper prints 1489.10
    "inference_s": (0.0, 60.0),
    "training_min": (0.0, 10_000.0),
    "parameters": (1e5, 1e9),
    "size_mb": (1.0, 1e4),
    **dict.fromkeys(["train_images", "val_images", "test_images"], (1, 1e5)),
    "value": (0.0, 1e8),  # reference quantities: sizes, counts, settings, EDA statistics
}

# Values each table must hold (rows x metrics as the paper prints them): a guard against dropped rows.
TABLE_VALUES = {
    ("pannuke", "test_metrics"): 4 * 5,  # Table 4
    ("pannuke", "train_metrics"): 4 * 10,  # Table 2, mean and std
    ("pannuke", "val_metrics"): 4 * 10,  # Table 3, mean and std
    ("pannuke", "timing"): 4 * 2,  # Table 5 (prose)
    ("pannuke", "regularization"): 4 * 2,  # Table 1
    ("pannuke", "model_size"): 4,  # Table 1
    ("pannuke", "architecture"): 4,  # Table 1
    ("pannuke", "setup"): 8,
    ("resunet_dsb2018", "test_metrics"): 4,  # Table 1, proposed U-Net
    ("resunet_dsb2018", "other_models"): 2 * 4,  # Table 1, DeepLabV3+ and DeepResNet
    ("resunet_dsb2018", "split_iou"): 3 * 4,  # Table 2
    ("resunet_dsb2018", "seen_data"): 2 * 3,  # Section 5.2
    ("resunet_dsb2018", "timing"): 2,
    ("resunet_dsb2018", "model_size"): 1,
    ("resunet_dsb2018", "eda"): 13,
    ("resunet_dsb2018", "lrp"): 3,
    ("resunet_dsb2018", "setup"): 9,
    ("classic_unet_dsb2018", "test_metrics"): 5,  # Table 1
    ("classic_unet_dsb2018", "model_size"): 1,
    ("classic_unet_dsb2018", "model_summary"): 4,
    ("classic_unet_dsb2018", "per_image"): 3 * 5,  # Table 2
    ("classic_unet_dsb2018", "setup"): 3,
    ("classification", "classic_ml"): 2 * 11 * 6,  # Tables I and II
    ("classification", "cnn"): 4 * 10,  # Tables III-VI, epoch 100
    ("classification", "cnn_epochs"): 4 * 11 * 10,  # Tables III-VI, every epoch
    ("classification", "cnn_average"): 4 * 2,  # Sections IV-B, IV-C
    ("classification", "dataset"): 4,
}


def all_tables():
    return [(study, table) for study, names in published_tables(include_reference=True).items() for table in names]


def _document():
    return yaml.safe_load(resources.files("nucleiflow.reporting").joinpath("published_values.yaml").read_text())


def _values(study: str, table: str):
    """(row, metric, value) of every metric cell of a published table, null cells included."""
    spec = load_published()[study]["tables"][table]
    return [(row, metric, row[metric]) for row in spec["rows"] for metric in spec["metrics"]]


def test_the_yaml_is_installed_package_data():
    assert resources.files("nucleiflow.reporting").joinpath("published_values.yaml").is_file()
    studies = load_published()
    assert {"pannuke", "resunet_dsb2018", "classic_unet_dsb2018", "classification"} <= set(studies)


def test_load_returns_a_private_copy():
    load_published()["pannuke"]["tables"].clear()
    assert load_published()["pannuke"]["tables"]


def test_reference_tables_are_left_out_of_comparisons():
    compared, every = published_tables(), published_tables(include_reference=True)
    assert compared["pannuke"] == ["test_metrics", "train_metrics", "val_metrics", "timing", "regularization"] + [
        "model_size"
    ]
    assert compared["classification"] == ["classic_ml", "cnn"]
    assert {"cnn_epochs", "cnn_average", "dataset"} <= set(every["classification"]) - set(compared["classification"])
    assert {"eda", "lrp", "split_iou", "other_models"} <= set(every["resunet_dsb2018"])
    for study, names in every.items():
        specs = load_published()[study]["tables"]
        assert [n for n in names if specs[n].get("compare", True)] == compared[study]


@pytest.mark.parametrize("study, table", all_tables())
def test_every_value_is_a_number_in_a_sane_range(study, table):
    frame = published_table(study, table)
    spec = load_published()[study]["tables"][table]
    assert list(frame.columns) == [*spec["keys"], *spec["metrics"], "source", "note"]
    assert frame["source"].str.len().gt(0).all()
    for metric in spec["metrics"]:
        low, high = SANE_RANGES[metric]
        known = frame[metric].dropna()
        assert known.between(low, high).all(), f"{study}/{table}: {metric} out of [{low}, {high}]"


@pytest.mark.parametrize("study, table", all_tables())
def test_every_source_names_the_paper_and_where(study, table):
    frame = published_table(study, table)
    where = re.compile(r"\b(Table|Tables|Figure|Section|Sections)\b")
    assert frame["source"].map(lambda source: bool(where.search(source))).all(), f"{study}/{table}"


@pytest.mark.parametrize("study, table", all_tables())
def test_keys_use_the_workflow_names(study, table):
    frame = published_table(study, table)
    assert not frame.duplicated(load_published()[study]["tables"][table]["keys"]).any()
    if "arch" in frame:
        for arch, encoder in zip(frame["arch"], frame["encoder"]):
            assert encoder in ARCH_ENCODERS[arch]
        if "split" in frame:
            assert set(frame["split"]) <= {"train", "val", "test"}
    if "classifier" in frame:
        assert set(frame["classifier"]) <= set(CLASSIFIER_NAMES)
    if "model" in frame and "variant" in frame:
        assert set(frame["model"]) <= set(CNN_MODELS) and set(frame["variant"]) <= {"base", "augmented"}


# ---------------------------------------------------------------- (a) nothing the papers state is null


@pytest.mark.parametrize("study, table", all_tables())
def test_a_null_value_says_the_paper_does_not_state_it(study, table):
    for row, metric, value in _values(study, table):
        if value is None:
            note = row.get("note", "")
            assert re.search(r"not (stated|given|state|give)|unknown", note), f"{study}/{table} {metric}: {note!r}"


def test_the_values_the_papers_state_are_filled_in():
    # Table 4 and the prose of Table 5 give every model: nothing stays unknown.
    for table in ("test_metrics", "train_metrics", "val_metrics", "timing", "regularization", "model_size"):
        frame = published_table("pannuke", table)
        assert len(frame) == 4 and not frame.drop(columns=["source", "note"]).isna().any().any(), table
    classic = published_table("classification", "classic_ml")
    assert len(classic) == 22 and set(classic["classifier"]) == set(CLASSIFIER_NAMES)
    epochs = published_table("classification", "cnn_epochs")
    assert epochs.groupby(["model", "variant"])["epoch"].apply(list).map(lambda e: e == [1, *range(10, 101, 10)]).all()
    for study, table in all_tables():
        assert not any(value is None for _, _, value in _values(study, table)), f"{study}/{table} has a null"


def test_a_null_without_a_note_is_refused():
    document = _document()
    document["studies"]["pannuke"]["tables"]["timing"]["rows"][0]["inference_s"] = None
    with pytest.raises(DataFormatError, match=r"pannuke/timing row 0 metric 'inference_s' is null without a row note"):
        _check_document(document)
    document["studies"]["pannuke"]["tables"]["timing"]["rows"][0]["note"] = "unknown: the paper does not state it"
    _check_document(document)


# ---------------------------------------------------------------- (b) every number is printed in its paper


def _paper_text(study: str) -> str:
    if not PAPERS.is_dir():
        pytest.skip(f"the papers' full text is not here ({PAPERS})")
    missing = [name for name in PAPER_FILES[study] if not (PAPERS / name).is_file()]
    if missing:
        pytest.skip(f"paper text {missing} of study {study!r} is not in {PAPERS}")
    text = "\n".join((PAPERS / name).read_text(encoding="utf-8") for name in PAPER_FILES[study])
    return re.sub(r"\s+", " ", text)


def _exact_decimal_forms(x: float) -> set[str]:
    """`x` written with 0-5 decimals, only where that loses nothing (0.5 -> 0.5, 0.50, 0.500, ...)."""
    forms = set()
    for decimals in range(6):
        form = f"{x:.{decimals}f}"
        if abs(float(form) - x) < 1e-9:
            forms.add(form)
            if form.startswith("0."):
                forms.add(form[1:])  # .88
    return forms


def printed_forms(value) -> set[str]:
    """How a paper may print `value`: as is, in percent, with thousands separators, in millions."""
    forms = _exact_decimal_forms(float(value)) | _exact_decimal_forms(float(value) * 100)
    if float(value).is_integer() and abs(value) >= 1000:
        grouped = f"{int(value):,}"
        forms |= {grouped, grouped.replace(",", "."), grouped.replace(",", " ")}
    if abs(value) >= 1e6:
        forms.add(f"{value / 1e6:g} million")
    return forms


def _is_printed(form: str, text: str) -> bool:
    return re.search(rf"(?<![\d.]){re.escape(form)}(?!\d)", text) is not None


def test_printed_forms_allow_the_papers_formatting():
    assert {"0.88", ".88", "88"} <= printed_forms(0.88)
    assert {"0.5", "0.50", "50"} <= printed_forms(0.5)
    assert {"15,676,865", "15.676.865"} <= printed_forms(15676865)
    assert "1.94 million" in printed_forms(1940000)
    assert (
        _is_printed("0.88", "an IoU of 0.88.") and not _is_printed("0.8", "IoU 0.88") and not _is_printed("8", "0.88")
    )


# Anywhere in the text: the prose values' check. Tabled values are checked at their row and column in
# test_published_positions.py (a value found anywhere proves little: 0.65 or 1.00 occur many times).
@pytest.mark.parametrize("study, table", all_tables())
def test_every_value_is_printed_in_the_paper(study, table):
    text = _paper_text(study)
    missing = []
    for row, metric, value in _values(study, table):
        if value is None:
            continue
        printed = row.get("printed", {}).get(metric)
        forms = {printed} if printed else printed_forms(value)
        if not any(_is_printed(form, text) for form in forms):
            missing.append(f"{metric}={value} (looked for {sorted(forms)})")
    assert not missing, f"{study}/{table}: not in the paper's text: {missing}"


# ---------------------------------------------------------------- (c) no row silently dropped


def test_every_table_is_counted():
    assert set(TABLE_VALUES) == set(all_tables())


@pytest.mark.parametrize("study, table", sorted(TABLE_VALUES))
def test_each_table_holds_every_value_the_paper_prints(study, table):
    known = sum(value is not None for _, _, value in _values(study, table))
    assert known >= TABLE_VALUES[(study, table)], f"{study}/{table}: {known} values"


@pytest.mark.parametrize(
    "study, at_least",
    [("pannuke", 132), ("resunet_dsb2018", 58), ("classic_unet_dsb2018", 28), ("classification", 624)],
)
def test_each_study_holds_at_least_what_its_tables_hold(study, at_least):
    tables = published_tables(include_reference=True)[study]
    assert sum(value is not None for table in tables for _, _, value in _values(study, table)) >= at_least


# ---------------------------------------------------------------- where the numbers are


def test_quoted_values_are_where_the_papers_put_them():
    pannuke = published_table("pannuke", "test_metrics").set_index(["arch", "encoder"])
    assert pannuke.loc[("deeplabv3plus", "resnet50"), ["dice", "iou", "acc", "loss"]].tolist() == [
        0.8356,
        0.7280,
        0.9455,
        0.3212,
    ]
    # Table 4's IoU, not the prose's 0.8116 (the SN column).
    assert pannuke.loc[("unet", "resnet50"), ["sensitivity", "iou"]].tolist() == [0.8116, 0.7121]
    train = published_table("pannuke", "train_metrics").set_index(["arch", "encoder"])
    assert train.loc[("deeplabv3plus", "resnet50"), ["loss", "loss_std", "iou"]].tolist() == [0.25, 1.66, 0.90]
    timing = published_table("pannuke", "timing").set_index(["arch", "encoder"])
    assert timing.loc[("deeplabv3plus", "resnet50")].tolist()[:2] == [0.50, 23.37]
    assert "garbled" in timing["note"].iloc[0]
    reg = published_table("pannuke", "regularization").set_index(["arch", "encoder"])
    assert reg.loc[("deeplabv3plus", "efficientnet-b4"), ["dropout", "l2"]].tolist() == [0.25, 0.01]
    assert published_table("pannuke", "model_size")["parameters"].tolist()[2] == 30_462_849
    resunet = published_table("resunet_dsb2018", "test_metrics").iloc[0]
    assert resunet[["acc", "precision", "sensitivity", "iou"]].tolist() == [0.975, 0.945, 0.951, 0.882]
    assert published_table("resunet_dsb2018", "split_iou")["iou"].tolist() == [0.88, 0.85, 0.83]
    assert published_table("resunet_dsb2018", "timing")["inference_s"].iloc[0] == 0.09937
    assert published_table("classic_unet_dsb2018", "model_size")["parameters"].iloc[0] == 31_043_521
    classic = published_table("classic_unet_dsb2018", "test_metrics").iloc[0]
    assert classic[["acc", "f1", "iou", "precision", "sensitivity"]].tolist() == [0.9715, 0.8973, 0.8269, 0.907, 0.904]
    ml = published_table("classification", "classic_ml").set_index(["classifier", "variant"])
    assert ml.loc[("Random Forest", "base"), "accuracy"] == 0.78
    assert ml.loc[("Extra Trees", "augmented"), ["accuracy", "mcc", "kappa"]].tolist() == [0.71, 0.42, 0.42]
    cnn = published_table("classification", "cnn").set_index(["model", "variant"])
    assert cnn.loc[("inception_resnet_v2", "augmented"), "val_accuracy"] == 0.96  # Table VI, epoch 100
    average = published_table("classification", "cnn_average").set_index(["model", "variant"])
    assert average.loc[("inception_resnet_v2", "augmented"), "mean_val_accuracy"] == 0.9722
    epochs = published_table("classification", "cnn_epochs").set_index(["model", "variant", "epoch"])
    assert epochs.loc[("inception_resnet_v2", "base", 1), "val_loss"] == 1489.10


# ---------------------------------------------------------------- comparisons


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
    table = beside_published(ours, "pannuke", "test_metrics", metrics=["acc", "dice", "iou"])
    row = table.set_index(["arch", "encoder"]).loc[("deeplabv3plus", "resnet50")]
    assert row["dice_ours"] == 0.8456 and row["dice_paper"] == 0.8356
    assert row["dice_diff"] == pytest.approx(0.01)
    assert row["iou_diff"] == pytest.approx(0.70 - 0.7280)
    assert "Table 4" in row["source"]
    # Published rows we did not run stay, with no value of ours and so no difference.
    by_model = table.set_index(["arch", "encoder"])
    assert by_model.loc[("unet", "resnet50"), "dice_diff"] == pytest.approx(0.81 - 0.8286)
    assert math.isnan(by_model.loc[("unet", "efficientnet-b4"), "dice_diff"])
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
    by_name = table[table["variant"] == "base"].set_index("classifier")
    assert by_name.loc["Random Forest", "accuracy_diff"] == pytest.approx(0.02)
    assert by_name.loc["SVM", "accuracy_diff"] == pytest.approx(0.7 - 0.63)
    assert pd.isna(by_name.loc["Voting", "accuracy_ours"]) and by_name.loc["Voting", "accuracy_paper"] == 0.67
    assert by_name.loc["SVM", "source"].startswith("Classification study, Table I")


def test_comparison_needs_our_metric_columns():
    ours = pd.DataFrame({"arch": ["resunet"], "encoder": ["none"]})
    with pytest.raises(DataFormatError, match="iou"):
        beside_published(ours, "resunet_dsb2018", "test_metrics", metrics=["iou"])


def test_unknown_names_list_the_choices():
    with pytest.raises(
        ConfigError, match="choose one of: classic_unet_dsb2018, classification, pannuke, resunet_dsb2018"
    ):
        published_table("monuseg", "test_metrics")
    with pytest.raises(ConfigError, match="'pannuke'.*choose one of: architecture, model_size, regularization"):
        beside_published(pd.DataFrame(), "pannuke", "table9")


# ---------------------------------------------------------------- validation


def test_a_malformed_entry_is_named_in_one_line():
    document = _document()
    # yaml reads 1.94e6 (no exponent sign) as a string: the loader must refuse it, not compare text.
    document["studies"]["resunet_dsb2018"]["tables"]["model_size"]["rows"][0]["parameters"] = yaml.safe_load("1.94e6")
    with pytest.raises(DataFormatError, match=r"resunet_dsb2018/model_size row 0 metric 'parameters' is '1.94e6'"):
        _check_document(document)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.update(compare="no"), r"field 'compare' is 'no', not true or false"),
        (lambda t: t["rows"][0].update(printed={"loss": "2 hours"}), r"'printed' names unknown metric\(s\) \['loss'\]"),
        (lambda t: t["rows"][0].update(printed={"inference_s": 99.37}), r"'printed' must map metrics to the text"),
        (lambda t: t["rows"][0].update(note=""), r"field 'note' must be non-empty text"),
        (lambda t: t.update(metrics=["inference_s", "inference_s"]), r"repeats a column name"),
    ],
)
def test_new_fields_are_checked(change, message):
    document = _document()
    change(document["studies"]["resunet_dsb2018"]["tables"]["timing"])
    with pytest.raises(DataFormatError, match=rf"resunet_dsb2018/timing.*{message}"):
        _check_document(document)


# ---------------------------------------------------------------- each experiment beside the rows of its own split


def _resunet_frame():
    """comparison_frame's layout for one residual U-Net evaluated on train, val and test."""
    rows = []
    for split, iou in (("test", 0.80), ("train", 0.90), ("val", 0.85)):
        rows.append(
            {"arch": "resunet", "encoder": "none", "reg": "none", "split": split, "acc": 0.95, "precision": 0.9}
            | {"sensitivity": 0.9, "iou": iou, "loss": 0.1, "inference_s": 0.05, "training_min": 10.0}
            | {"parameters": 2_000_000}
        )
    return pd.DataFrame(rows)


def test_a_split_variant_is_compared_with_its_own_splits_row():
    from nucleiflow.segmentation.reports.experiment import versus_paper

    table = versus_paper(_resunet_frame(), "resunet_dsb2018", "split_80_10_10")
    iou = table[table["metric"] == "iou"]
    # Table 2's 80/10/10 row (0.85), not Table 1's original-split 0.882.
    assert iou[["table", "dataset_split", "split", "ours", "paper"]].values.tolist() == [
        ["split_iou", "split_80_10_10", "test", 0.80, 0.85]
    ]
    assert not set(table["table"]) & {"test_metrics", "seen_data"}  # measured on the original split
    assert set(table["table"]) == {"split_iou", "timing", "model_size"}
    seventy = versus_paper(_resunet_frame(), "resunet_dsb2018", "split_70_20_10")
    assert seventy.loc[seventy["metric"] == "iou", "paper"].tolist() == [0.83]


def test_the_original_split_is_compared_with_table_1_table_2_and_the_seen_data():
    from nucleiflow.segmentation.reports.experiment import versus_paper

    table = versus_paper(_resunet_frame(), "resunet_dsb2018", "original")
    iou = table[table["metric"] == "iou"].set_index("table")
    assert iou.loc["test_metrics", "paper"] == 0.882 and iou.loc["split_iou", "paper"] == 0.88
    assert (iou.loc[["test_metrics", "split_iou"], "ours"] == 0.80).all()  # both the test split's
    seen = table[table["table"] == "seen_data"].set_index(["split", "metric"])
    assert seen.loc[("train", "iou"), ["ours", "paper"]].tolist() == [0.90, 0.8829]
    assert seen.loc[("val", "loss"), ["ours", "paper"]].tolist() == [0.1, 0.0717]
    # No split known (an experiment without `split:`): the split-keyed Table 2 is left out.
    assert "split_iou" not in set(versus_paper(_resunet_frame(), "resunet_dsb2018")["table"])


def test_dataset_split_must_name_a_split():
    document = _document()
    document["studies"]["resunet_dsb2018"]["tables"]["test_metrics"]["dataset_split"] = ""
    with pytest.raises(DataFormatError, match=r"resunet_dsb2018/test_metrics field 'dataset_split' must name a split"):
        _check_document(document)
