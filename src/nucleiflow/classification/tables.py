"""The paper's classification tables and Figure 4's data, each beside the published values.

* Table I / II (`classic_paper_table`): one row per classifier, accuracy,
  weighted precision, recall and F1, MCC and Cohen's kappa on the test split;
* Tables III-VI (`cnn_run_table`): one CNN run, training then validation
  accuracy, loss, precision, recall and AUC at the reported epochs;
* Figure 4's companion (`average_accuracy_vs_paper`): each run's accuracy
  averaged over its epochs beside the averages the paper quotes (Sections IV-B/C);
* companions (`classic_vs_paper`, `cnn_vs_paper`): our numbers beside the
  published ones via `published.beside_published` (study "classification");
  numbers the paper does not give, or a dataset that is not the paper's
  (PanNuke crops), leave the paper columns NaN.

File names and numbering are `study`'s (CLASSIC_TABLES, CNN_TABLES).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from nucleiflow.errors import ConfigError, require_columns
from nucleiflow.reporting.published import beside_published, published_table
from nucleiflow.workflow.classification import CNN_TABLES, PUBLISHED_STUDY

CLASSIC_COLUMNS = {
    "classifier": "Classifier",
    "accuracy": "Accuracy",
    "precision": "Precision",
    "recall": "Recall",
    "f1": "F1 score",
    "mcc": "MCC",
    "kappa": "Kappa",
}
ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI"}
# Keras order, as the paper's per-epoch tables: training metrics, then validation.
CNN_COLUMNS = {
    "epoch": "Epoch",
    "train_accuracy": "Accuracy",
    "train_loss": "Loss",
    "train_precision": "Precision",
    "train_recall": "Recall",
    "train_auc": "AUC",
    "val_accuracy": "Val accuracy",
    "val_loss": "Val loss",
    "val_precision": "Val precision",
    "val_recall": "Val recall",
    "val_auc": "Val AUC",
    # Not in the paper: the per-class figures (training.epoch_metrics), under their own names.
    "train_class_precision": "Precision (per class)",
    "train_class_recall": "Recall (per class)",
    "val_class_precision": "Val precision (per class)",
    "val_class_recall": "Val recall (per class)",
}
# The definitions behind the CNN comparison (Tables III-VI), shown in its caption.
CNN_METRICS_NOTE = (
    "Precision and recall are the paper's: Keras' Precision()/Recall() on the one-hot two-column softmax output, "
    "micro-averaged over both columns (with two classes they equal the accuracy); the positive class's own "
    "precision and recall are the '(per class)' columns of the run's table. AUC is the positive class's exact ROC "
    "AUC; Keras' AUC() flattens both columns and approximates with 200 thresholds"
)
MODEL_NAMES = {"small_cnn": "Small CNN", "inception_resnet_v2": "InceptionResNetV2"}
NO_PUBLISHED_SOURCE = "no published values for this dataset"


# ---------------------------------------------------------------- data


def class_counts_table(split: pd.DataFrame, augmented: pd.DataFrame | None, class_names) -> pd.DataFrame:
    """Images per class: train, test and (when given) the augmented training set."""
    counts = split.groupby(["label", "split"]).size().unstack(fill_value=0)
    table = pd.DataFrame({"Class": list(class_names)})
    for name in ("train", "test"):
        table[name.capitalize()] = [int(counts[name].get(c, 0)) if name in counts else 0 for c in class_names]
    if augmented is not None:
        per_class = augmented["label"].value_counts()
        table["Augmented train"] = [int(per_class.get(c, 0)) for c in class_names]
    total = {"Class": "total", **{col: int(table[col].sum()) for col in table.columns if col != "Class"}}
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


# ---------------------------------------------------------------- Tables I-II


def classic_table(results: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Both variants' grid results stacked (the classifier comparison figure's data)."""
    frames = [df.assign(variant=variant) for variant, df in results.items()]
    table = pd.concat(frames, ignore_index=True)
    return table[["variant", *[c for c in table.columns if c != "variant"]]]


def classic_paper_table(results: pd.DataFrame) -> pd.DataFrame:
    """Table I or II: one row per classifier, the six test metrics, the paper's column names."""
    require_columns(results, list(CLASSIC_COLUMNS), "classic ML results table")
    return results[list(CLASSIC_COLUMNS)].rename(columns=CLASSIC_COLUMNS).reset_index(drop=True)


def classic_vs_paper(results: pd.DataFrame, variant: str, study: str | None = PUBLISHED_STUDY) -> pd.DataFrame:
    """Accuracy per classifier beside the published one (NaN where the paper's is unknown)."""
    ours = results.assign(variant=variant)
    return _in_our_order(_own_rows(_beside(ours, study, "classic_ml"), {"variant": variant}), ours, "classifier")


def classic_caption(variant: str) -> str:
    number = 1 if variant == "base" else 2  # workflow.classification.CLASSIC_TABLES
    return f"Table {ROMAN[number]}: classic machine learning trained on {variant} data, scored on the test split"


# ---------------------------------------------------------------- Tables III-VI


def select_report_epochs(history: pd.DataFrame, epochs) -> pd.DataFrame:
    """Rows of `history` at the listed epochs; ConfigError when none of them was trained."""
    picked = history[history["epoch"].isin(list(epochs))].reset_index(drop=True)
    if picked.empty:
        raise ConfigError(
            f"cnn.report_epochs: none of {list(epochs)} is among the {int(history['epoch'].max())} trained epochs"
        )
    return picked


def cnn_run_table(history: pd.DataFrame, epochs) -> pd.DataFrame:
    """Table III-VI of one run: per reported epoch, training then validation metrics."""
    require_columns(history, list(CNN_COLUMNS), "CNN history")
    return select_report_epochs(history, epochs)[list(CNN_COLUMNS)].rename(columns=CNN_COLUMNS)


def cnn_vs_paper(
    history: pd.DataFrame, model: str, variant: str, epochs, study: str | None = PUBLISHED_STUDY
) -> pd.DataFrame:
    """Every Tables III-VI metric at the last reported epoch beside the published value (`CNN_METRICS_NOTE`)."""
    last = select_report_epochs(history, epochs).iloc[[-1]]
    ours = last.assign(model=model, variant=variant)
    companion = _own_rows(_beside(ours, study, "cnn"), {"model": model, "variant": variant})
    companion.insert(2, "epoch", int(last["epoch"].iloc[0]))
    return companion


def run_label(model: str, variant: str) -> str:
    """A run's name in figures and captions, e.g. 'Small CNN (augmented)'."""
    return f"{MODEL_NAMES.get(model, model)} ({variant})"


def cnn_caption(model: str, variant: str) -> str:
    number = CNN_TABLES[(model, variant)]
    return f"Table {ROMAN[number]}: {run_label(model, variant)}, training and validation metrics at the reported epochs"


def runs_history(histories: dict[tuple[str, str], pd.DataFrame]) -> pd.DataFrame:
    """The runs' histories stacked with a ``run`` label, in the paper's table order (Figure 4's data)."""
    ordered = sorted(histories, key=lambda run: CNN_TABLES.get(run, len(CNN_TABLES) + 1))
    return pd.concat([histories[run].assign(run=run_label(*run)) for run in ordered], ignore_index=True)


def history_run(path: str | Path) -> tuple[str, str]:
    """(model, variant) from a history file name ``<model>_<variant>_history.csv``."""
    model, variant = Path(path).name.removesuffix("_history.csv").rsplit("_", 1)
    return model, variant


def average_accuracy_vs_paper(
    histories: dict[tuple[str, str], pd.DataFrame], study: str | None = PUBLISHED_STUDY
) -> pd.DataFrame:
    """Each run's training and validation accuracy averaged over its epochs, beside the paper's quoted averages."""
    paper = published_table(PUBLISHED_STUDY, "cnn_average").set_index(["model", "variant"])
    rows = []
    for run in sorted(histories, key=lambda r: CNN_TABLES.get(r, len(CNN_TABLES) + 1)):
        history = histories[run]
        require_columns(history, ["train_accuracy", "val_accuracy"], "CNN history")
        known = study is not None and run in paper.index
        row = {"Run": run_label(*run), "Epochs": len(history)}
        for split, label in (("train", "training"), ("val", "validation")):
            ours = float(history[f"{split}_accuracy"].mean())
            theirs = float(paper.loc[run, f"mean_{split}_accuracy"]) if known else float("nan")
            row[f"Mean {label} accuracy (ours)"] = ours
            row[f"Mean {label} accuracy (paper)"] = theirs
            row[f"Difference ({label})"] = ours - theirs
        row["Source"] = paper.loc[run, "source"] if known else NO_PUBLISHED_SOURCE
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- helpers


def _beside(ours: pd.DataFrame, study: str | None, table: str) -> pd.DataFrame:
    """`beside_published` for the paper's `table`; with `study` None the same columns, paper values NaN."""
    companion = beside_published(ours, PUBLISHED_STUDY, table)
    companion["source"] = companion["source"].fillna("")  # rows the paper gives no number for
    if study is None:
        # Keep the layout so every experiment's companion reads alike, but show no paper number.
        paper = [c for c in companion.columns if c.endswith(("_paper", "_diff"))]
        companion[paper] = float("nan")
        companion["source"] = NO_PUBLISHED_SOURCE
    return companion


def _own_rows(companion: pd.DataFrame, keys: dict[str, str]) -> pd.DataFrame:
    """Only our table's rows: the outer join also brings the paper's rows for other variants or runs."""
    mask = pd.Series(True, index=companion.index)
    for column, value in keys.items():
        mask &= companion[column] == value
    return companion[mask].reset_index(drop=True)


def _in_our_order(companion: pd.DataFrame, ours: pd.DataFrame, key: str) -> pd.DataFrame:
    """Rows in the order of our table (the join sorts them); rows only the paper has come last."""
    rank = {value: i for i, value in enumerate(ours[key])}
    order = companion[key].map(rank).fillna(len(rank))
    return companion.iloc[order.argsort(kind="stable")].reset_index(drop=True)
