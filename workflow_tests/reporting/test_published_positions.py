"""Every tabled value of the four papers at its position: each paper table is parsed by row and column from the
text extractions in ../shared/papers and compared cell by cell with published_values.yaml.

A value found anywhere in the text proves little (0.65, 0.99 and 1.00 occur many times); here a swapped row,
column or model fails. Cells the extractions do not let us locate are listed in `UNLOCATED`, each with the
reason, and a test checks that they are indeed missing there. Values the papers state in prose (not in a
table) are declared in `PROSE_TABLES`; the Keras summary's parameter counts and the PanNuke study's timing
prose are located by their labels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nucleiflow.reporting.published import load_published, published_tables

PAPERS = Path(__file__).resolve().parents[2].parent / "shared" / "papers"
PANNUKE_TEXT, PANNUKE_MARKDOWN = "000_796939b2f203099e.txt", "001_ae198613b77f1cb4.txt"
RESUNET_TEXT, CLASSIC_TEXT, CLASSIFICATION_TEXT = (
    "002_bad9bca13902d083.txt",
    "003_373a15436ed3afaf.txt",
    "004_f439cc05aa13c8a8.txt",
)

PANNUKE_MODELS = {
    "U-Net ResNet50": {"arch": "unet", "encoder": "resnet50"},
    "U-Net eff4": {"arch": "unet", "encoder": "efficientnet-b4"},
    "DLV3+ ResNet50": {"arch": "deeplabv3plus", "encoder": "resnet50"},
    "DLV3+ eff4": {"arch": "deeplabv3plus", "encoder": "efficientnet-b4"},
}
PANNUKE_METRICS = {"Loss": "loss", "Acc": "acc", "DCS": "dice", "SN": "sensitivity", "IOU": "iou"}
CLASSIFIERS = {
    "DT": "Decision Tree",
    "SVM": "SVM",
    "QDA": "QDA",
    "KNN": "K-Nearest Neighbours",
    "AB": "AdaBoost",
    "GNB": "Gaussian Naive Bayes",
    "LR": "Logistic Regression",
    "RF": "Random Forest",
    "ET": "Extra Trees",
    "VC": "Voting",
    "HGB": "Histogram Gradient Boosting",
}
CNN_COLUMNS = {
    "TR-ACC": "train_accuracy",
    "VAL-ACC": "val_accuracy",
    "TR-Loss": "train_loss",
    "VAL-Loss": "val_loss",
    "TR-PRE": "train_precision",
    "TR-REC": "train_recall",
    "TR-AUC": "train_auc",
    "VAL-PRE": "val_precision",
    "VAL-REC": "val_recall",
    "VAL-AUC": "val_auc",
}
CNN_RUNS = {  # paper table number -> (caption after the number, model, variant)
    "III": ("CNN WITH BASE DATA", "small_cnn", "base"),
    "IV": ("CNN WITH AUGMENT DATA", "small_cnn", "augmented"),
    "V": ("INCEPTION RESNET V2 ON BASE DATASET", "inception_resnet_v2", "base"),
    "VI": ("INCEPTION RESNET V2 ON AUGMENT DATASET", "inception_resnet_v2", "augmented"),
}


@dataclass(frozen=True)
class PaperTable:
    """Where one printed table is and how its rows and columns map onto published_values.yaml.

    `caption` is a regular expression of the caption line; the table's header is the first tab-separated
    line `after` (or before) it whose first cell is `header`. `rows` maps a printed row label to the YAML
    key values; `columns` maps a printed column to (yaml table, metric); `transposed` tables print one
    metric per row (label -> metric) in a single value column. `stop` ends the rows (default: the first
    line without a tab after at least one row); `extra_keys` are added to every row's keys.
    """

    name: str
    file: str
    caption: str
    header: str
    columns: dict[str, tuple[str, str]]
    rows: dict[str, dict] | None = None
    after: bool = True
    transposed: bool = False
    stop: str | None = None
    extra_keys: dict = field(default_factory=dict)
    label: object = None  # printed row label -> the key used in `rows` (e.g. joining broken image ids)
    scale: float = 1.0  # printed number x scale = the YAML value (0.01: percent printed without a % sign)


def _pannuke_metric_columns(table: str, with_std: bool) -> dict[str, tuple[str, str]]:
    columns = {f"{printed}": (table, metric) for printed, metric in PANNUKE_METRICS.items()}
    if with_std:
        columns |= {f"{printed} std": (table, f"{metric}_std") for printed, metric in PANNUKE_METRICS.items()}
    return columns


def _pannuke_tables(file: str) -> list[PaperTable]:
    table1 = {
        "Method": ("architecture", "method"),
        "Dropout": ("regularization", "dropout"),
        "Kernel": ("architecture", "kernel"),
        "L2": ("regularization", "l2"),
        "Parameters (M)": ("model_size", "parameters"),
        "Size (MB)": ("architecture", "size_mb"),
    }
    return [
        PaperTable(f"{file} Table 1", file, r"^Table 1\. Comparison of model architectures", "Model", table1),
        PaperTable(
            f"{file} Table 2", file, r"^Table 2\. Performance evaluation on the training set", "Model",
            _pannuke_metric_columns("train_metrics", True), extra_keys={"split": "train"},
        ),
        PaperTable(
            f"{file} Table 3", file, r"^Table 3\. Performance evaluation on the validation set", "Model",
            _pannuke_metric_columns("val_metrics", True), extra_keys={"split": "val"},
        ),
        PaperTable(
            f"{file} Table 4", file, r"^Table 4\. Performance evaluation", "Model",
            _pannuke_metric_columns("test_metrics", False), extra_keys={"split": "test"},
        ),
    ]  # fmt: skip


def _image_id(label: str) -> str:
    """Table 2 of the classic U-Net study breaks each id with a space and prints the file name."""
    return label.replace(" ", "").removesuffix(".jpg")


TABLES = [
    *(table for file in (PANNUKE_TEXT, PANNUKE_MARKDOWN) for table in _pannuke_tables(file)),
    PaperTable(
        "residual U-Net Table 1",
        RESUNET_TEXT,
        r"^Table 1\. Performance comparison with the SOAT models",
        "Model",
        {m: ("test_metrics", k) for m, k in (("Accuracy", "acc"), ("Precision", "precision"))}
        | {"Recall": ("test_metrics", "sensitivity"), "IoU": ("test_metrics", "iou")},
        rows={"Proposed U-Net": {"arch": "resunet", "encoder": "none"}},
        after=False,
        scale=0.01,  # percent, printed without the sign
    ),
    PaperTable(
        "residual U-Net Table 1, other models",
        RESUNET_TEXT,
        r"^Table 1\. Performance comparison with the SOAT models",
        "Model",
        {"Accuracy": ("other_models", "acc"), "Precision": ("other_models", "precision")}
        | {"Recall": ("other_models", "sensitivity"), "IoU": ("other_models", "iou")},
        rows={"DeepLabV3+": {"model": "DeepLabV3+"}, "DeepResNet": {"model": "DeepResNet"}},
        after=False,
        scale=0.01,
    ),
    PaperTable(
        "residual U-Net Table 2",
        RESUNET_TEXT,
        r"^Table 2\. Performance Across Different Dataset Splits",
        "Split",
        {
            "Training Images": ("split_iou", "train_images"),
            "Validation Images": ("split_iou", "val_images"),
            "Testing Images": ("split_iou", "test_images"),
            "IoU": ("split_iou", "iou"),
        },
        rows={
            "Original": {"dataset_split": "original"},
            "80-10-10": {"dataset_split": "split_80_10_10"},
            "70-20-10": {"dataset_split": "split_70_20_10"},
        },
        after=False,
    ),
    PaperTable(
        # The extraction prints Precision and Recall after the caption: the rows run to Table 2's caption.
        "classic U-Net Table 1",
        CLASSIC_TEXT,
        r"^Table 1 - Result of the model after training 35 epochs",
        "Metric",
        {
            "Accuracy": ("test_metrics", "acc"),
            "F1 Score": ("test_metrics", "f1"),
            "Jaccard Score": ("test_metrics", "iou"),
            "Precision": ("test_metrics", "precision"),
            "Recall": ("test_metrics", "sensitivity"),
        },
        rows={"Value": {"arch": "classic_unet", "encoder": "none"}},
        after=False,
        transposed=True,
        stop=r"^Table 2 - ",
    ),
    PaperTable(
        "classic U-Net Table 2",
        CLASSIC_TEXT,
        r"^Table 2 - Evaluation metrics on specific images",
        "Image",
        {
            "Accuracy": ("per_image", "acc"),
            "F1": ("per_image", "f1"),
            "Jaccard": ("per_image", "iou"),
            "Recall": ("per_image", "sensitivity"),
            "Precision": ("per_image", "precision"),
        },
        label=_image_id,
    ),
    *(
        PaperTable(
            f"classification Table {roman}",
            CLASSIFICATION_TEXT,
            rf"^TABLE {roman}\. MACHINE LEARNING WITH",
            "Algo",
            {
                p: ("classic_ml", m)
                for p, m in zip(
                    ("ACC", "PRE", "REC", "F1", "MC", "KS"), ("accuracy", "precision", "recall", "f1", "mcc", "kappa")
                )
            },
            rows={abbr: {"classifier": name} for abbr, name in CLASSIFIERS.items()},
            extra_keys={"variant": variant},
        )
        for roman, variant in (("I", "base"), ("II", "augmented"))
    ),  # fmt: skip
    *(
        PaperTable(
            f"classification Table {roman}",
            CLASSIFICATION_TEXT,
            rf"^TABLE {roman}\. {caption}$",
            "Epoch's",
            {printed: ("cnn_epochs", metric) for printed, metric in CNN_COLUMNS.items()},
            extra_keys={"model": model, "variant": variant},
            label=int,
        )
        for roman, (caption, model, variant) in CNN_RUNS.items()
    ),
]

# Cells the text extractions do not let us locate: (paper table name) -> why. Every one is checked to be
# missing from its extraction (`test_the_unlocated_tables_are_indeed_missing`); the same values are located
# in the other extraction of the same paper.
UNLOCATED = {
    f"{PANNUKE_MARKDOWN} Table 2": "the Markdown extraction keeps Table 2's caption but none of its rows",
}

# Published tables whose values the papers print in prose or lists, not in a table: each is searched in the
# text by test_published.py::test_every_value_is_printed_in_the_paper; the labelled ones below also here.
PROSE_TABLES = {
    ("pannuke", "timing"): "Section 4 prose introducing Table 5 (the printed Table 5 is garbled): located by model",
    ("pannuke", "setup"): "Sections 3.6 and 4 prose",
    ("resunet_dsb2018", "seen_data"): "Section 5.2 prose",
    ("resunet_dsb2018", "timing"): "Section 7.4 prose",
    ("resunet_dsb2018", "model_size"): "Sections 5.1.4 and 7.4 prose",
    ("resunet_dsb2018", "eda"): "Section 4 prose",
    ("resunet_dsb2018", "lrp"): "Section 6.2 prose",
    ("resunet_dsb2018", "setup"): "Sections 3.2-5.1 prose",
    ("classic_unet_dsb2018", "model_size"): "the Keras summary's totals line: located by its label",
    ("classic_unet_dsb2018", "model_summary"): "the Keras summary's totals line and the text after it",
    ("classic_unet_dsb2018", "setup"): "Sections 3.1-3.2 prose and Table 1's caption",
    ("classification", "cnn"): "no table of its own: the epoch-100 rows of Tables III-VI (checked against cnn_epochs)",
    ("classification", "cnn_average"): "Sections IV-B and IV-C prose",
    ("classification", "dataset"): "Section III prose",
}


# ---------------------------------------------------------------- parsing

CAPTION = re.compile(r"^(Table|TABLE|Toble) [\dIVX]+\b")


def _text(file: str) -> str:
    path = PAPERS / file
    if not path.is_file():
        pytest.skip(f"paper text {file} is not in {PAPERS}")
    return path.read_text(encoding="utf-8")


def _cells(line: str) -> list[str]:
    """A tab-separated line's cells, stripped, leading empty cells (the Markdown extraction's indent) dropped."""
    cells = [re.sub(r"</?pre>", "", cell).strip() for cell in line.split("\t")]
    while cells and not cells[0]:
        cells.pop(0)
    while cells and not cells[-1]:
        cells.pop()
    return cells


def parse_number(cell: str) -> tuple[float, float | None]:
    """A printed cell as (value, std or None): '0.16 ± 0.88', '$0.30 \\pm 0.25$', '97.15%', '15.676.865'."""
    cell = cell.replace("$", "").replace("\\pm", "±").strip()
    if "±" in cell:
        mean, std = (part.strip() for part in cell.split("±"))
        return parse_number(mean)[0], parse_number(std)[0]
    if cell.endswith("%"):
        return float(cell[:-1]) / 100, None
    if cell.count(".") > 1:  # dots as thousands separators
        return float(cell.replace(".", "")), None
    return float(cell), None


def parse_table(table: PaperTable, text: str) -> dict[object, dict[str, str]]:
    """Printed row label -> {printed column: cell text} of one table."""
    lines = text.splitlines()
    at = next((i for i, line in enumerate(lines) if re.search(table.caption, line.strip())), None)
    if at is None:
        raise AssertionError(f"{table.name}: caption {table.caption!r} not found")
    order = range(at + 1, len(lines)) if table.after else range(at - 1, -1, -1)
    start = None
    for i in order:  # the header, looked for up to the next (or previous) table's caption
        if CAPTION.match(lines[i].strip()):
            break
        if _cells(lines[i])[:1] == [table.header]:
            start = i
            break
    if start is None:
        return {}
    header = _cells(lines[start])
    rows: dict[object, dict[str, str]] = {}
    for line in lines[start + 1 :]:
        if table.stop and re.search(table.stop, line.strip()):
            break
        cells = _cells(line)
        if "\t" not in line or len(cells) < 2:
            if rows and table.stop is None:
                break
            continue
        label = table.label(cells[0]) if table.label else cells[0]
        rows[label] = dict(zip(header[1:], cells[1:]))
    return rows


def _printed_cells(table: PaperTable, text: str) -> dict[tuple[str, tuple, str], str]:
    """(yaml table, yaml key values, metric) -> printed cell, for every cell of `table` in `text`."""
    found = {}
    for label, cells in parse_table(table, text).items():
        if table.transposed:  # one metric per row, its value in the "Value" column
            metric_cells = {label: cells.get("Value")}
            keys = table.rows["Value"]
        else:
            if table.rows is not None and label not in table.rows:
                continue
            metric_cells = cells
            keys = table.rows[label] if table.rows is not None else None
        for printed, cell in metric_cells.items():
            if cell is None:
                continue
            for column, std in ((printed, False), (f"{printed} std", True)):
                if column not in table.columns:
                    continue
                yaml_table, metric = table.columns[column]
                row_keys = _keys_of(table, yaml_table, label, keys)
                found[(yaml_table, row_keys, metric)] = (cell, std, table.scale)
    return found


def _keys_of(table: PaperTable, yaml_table: str, label, keys: dict | None) -> tuple:
    if keys is not None:
        values = {**keys, **table.extra_keys}
    elif yaml_table == "per_image":
        values = {"image_id": label}
    elif yaml_table == "cnn_epochs":
        values = {**table.extra_keys, "epoch": label}
    else:
        values = {**PANNUKE_MODELS[label], **table.extra_keys}
    return tuple(sorted(values.items()))


def _yaml_cells(study: str, yaml_table: str) -> dict[tuple, object]:
    spec = load_published()[study]["tables"][yaml_table]
    cells = {}
    for row in spec["rows"]:
        keys = tuple(sorted((k, row[k]) for k in spec["keys"] if k not in ("method", "kernel")))
        for metric in spec["metrics"]:
            cells[(yaml_table, keys, metric)] = row[metric]
        for key in ("method", "kernel"):
            if key in spec["keys"]:
                cells[(yaml_table, keys, key)] = row[key]
    return cells


STUDY_OF_FILE = {
    PANNUKE_TEXT: "pannuke",
    PANNUKE_MARKDOWN: "pannuke",
    RESUNET_TEXT: "resunet_dsb2018",
    CLASSIC_TEXT: "classic_unet_dsb2018",
    CLASSIFICATION_TEXT: "classification",
}


def _matches(printed: str, is_std: bool, scale: float, value) -> bool:
    if isinstance(value, str):  # architecture keys: the paper prints the kernel as 3*3
        return printed.replace("*", "x") == value
    mean, std = parse_number(printed)
    number = std if is_std else mean
    return number is not None and abs(number * scale - float(value)) < 1e-9


# ---------------------------------------------------------------- the checks


def test_parse_number_reads_the_papers_formats():
    assert parse_number("0.16 ± 0.88") == (0.16, 0.88)
    assert parse_number("$0.30 \\pm 0.25$") == (0.30, 0.25)
    assert parse_number("97.15%") == (pytest.approx(0.9715), None)
    assert parse_number("15.676.865") == (15676865.0, None)
    assert parse_number("1489.10") == (1489.10, None)


@pytest.mark.parametrize("table", [t for t in TABLES if t.name not in UNLOCATED], ids=lambda t: t.name)
def test_every_printed_cell_equals_the_published_value_at_its_position(table):
    study = STUDY_OF_FILE[table.file]
    printed = _printed_cells(table, _text(table.file))
    assert printed, f"{table.name}: no cells parsed"
    published = {}
    for yaml_table in {yaml for yaml, _ in table.columns.values()}:
        published |= _yaml_cells(study, yaml_table)
    wrong = [
        f"{cell}: paper prints {printed_cell[0]!r}, yaml has {published.get(cell)!r}"
        for cell, printed_cell in printed.items()
        if cell not in published or not _matches(*printed_cell, published[cell])
    ]
    assert not wrong, f"{table.name}: {wrong}"


@pytest.mark.parametrize("study", sorted(set(STUDY_OF_FILE.values())))
def test_every_tabled_yaml_value_is_located_in_a_paper_table(study):
    """No cell of a table-sourced YAML table goes unchecked: each is found at its position in some extraction."""
    located = set()
    for table in TABLES:
        if STUDY_OF_FILE[table.file] == study and table.name not in UNLOCATED:
            located |= set(_printed_cells(table, _text(table.file)))
    tabled = {yaml for t in TABLES if STUDY_OF_FILE[t.file] == study for yaml, _ in t.columns.values()}
    published = {}
    for yaml_table in tabled:
        published |= _yaml_cells(study, yaml_table)
    missing = sorted(str(cell) for cell in set(published) - located)
    assert not missing, f"{study}: YAML cells no paper table holds: {missing}"


def test_every_published_table_is_tabled_or_declared_prose():
    every = published_tables(include_reference=True)
    tabled = {(STUDY_OF_FILE[t.file], yaml) for t in TABLES for yaml, _ in t.columns.values()}
    declared = set(PROSE_TABLES)
    assert not tabled & declared
    assert tabled | declared == {(study, table) for study, names in every.items() for table in names}


def test_the_unlocated_tables_are_indeed_missing():
    for name in UNLOCATED:
        table = next(t for t in TABLES if t.name == name)
        assert not _printed_cells(table, _text(table.file)), f"{name} is parsed now: drop it from UNLOCATED"


def test_pannuke_table5_is_garbled_and_the_timing_is_located_in_the_prose():
    # Both extractions print Table 4's Loss and Acc under Table 5's headings (the declared garble) ...
    for file in (PANNUKE_TEXT, PANNUKE_MARKDOWN):
        text = _text(file)
        table5 = PaperTable("Table 5", file, r"^Table 5\.\s+Model\s+(training|uaming)", "Model", {})
        rows = parse_table(table5, text)
        table4 = parse_table(_pannuke_tables(file)[3], text)
        assert {m: list(c.values()) for m, c in rows.items()} == {
            m: [c["Loss"], c["Acc"]] for m, c in table4.items()
        }, file
    # ... so the timing comes from the prose, which names each model's times: located by model.
    prose = re.sub(r"\s+", " ", _text(PANNUKE_TEXT))
    pattern = (
        r"(U-Net ResNet50|U-Net eff4|DLV3\+ ?ResNet50|DLV3\+ ?eff4)[^.]*?inference time of about ([\d.]+) "
        r"seconds and a [\w ]*?time of about ([\d.]+) minutes"
    )
    found = {re.sub(r"\+(?=\S)", "+ ", model): (float(s), float(m)) for model, s, m in re.findall(pattern, prose)}
    spec = load_published()["pannuke"]["tables"]["timing"]
    published = {(r["arch"], r["encoder"]): (r["inference_s"], r["training_min"]) for r in spec["rows"]}
    assert {tuple(PANNUKE_MODELS[m].values()): v for m, v in found.items()} == published


def test_the_keras_summary_counts_are_located_by_their_labels():
    text = re.sub(r"\s+", " ", _text(CLASSIC_TEXT))
    totals = {
        "total_parameters": int(re.search(r"Total params: (\d+)", text).group(1)),
        "non_trainable_parameters": int(re.search(r"Non-trainable params: (\d+)", text).group(1)),
        "size_mb": float(re.search(r"\((\d+\.\d+) MB\)", text).group(1)),
    }
    tables = load_published()["classic_unet_dsb2018"]["tables"]
    summary = {row["quantity"]: row["value"] for row in tables["model_summary"]["rows"]}
    assert {k: summary[k] for k in totals} == totals
    trainable = int(re.search(r"(?<!Non-)Trainable params: (\d+)", text).group(1))
    assert tables["model_size"]["rows"][0]["parameters"] == trainable


def test_the_cnn_comparison_rows_are_the_epoch_100_rows_of_tables_iii_to_vi():
    tables = load_published()["classification"]["tables"]
    last = {(r["model"], r["variant"]): r for r in tables["cnn_epochs"]["rows"] if r["epoch"] == 100}
    for row in tables["cnn"]["rows"]:
        epoch = last[(row["model"], row["variant"])]
        assert {m: row[m] for m in tables["cnn"]["metrics"]} == {m: epoch[m] for m in tables["cnn"]["metrics"]}


def test_a_swapped_cell_is_caught():
    # The point of the positional check: two values of one table swapped still occur in the text.
    table = next(t for t in TABLES if t.name == "classification Table I")
    printed = _printed_cells(table, _text(table.file))
    published = _yaml_cells("classification", "classic_ml")
    rf = ("classic_ml", (("classifier", "Random Forest"), ("variant", "base")), "f1")
    et = ("classic_ml", (("classifier", "Extra Trees"), ("variant", "base")), "f1")
    published[rf], published[et] = published[et], published[rf]  # 0.77 <-> 0.78
    assert not _matches(*printed[rf], published[rf]) and not _matches(*printed[et], published[et])
