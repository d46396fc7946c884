"""The classification study as the workflow runs it: which classes, which
files, the split and the base/augmented training sets.

Both variants ("base" and "augmented") are scored on exactly the same test
images: augmentation only ever touches the training part of one split.

The paper's numbering, used in file names (the tables and figures themselves
are built by `paper_tables`):

* Table I / II: the classic ML grid on base / augmented data
  (`CLASSIC_TABLES`), one row per classifier;
* Tables III-VI: one CNN run each (`CNN_TABLES`: small CNN base, small CNN
  augmented, InceptionResNetV2 base, InceptionResNetV2 augmented), one row
  per reported epoch; only configured runs are built, numbers stay fixed;
* Figure 4: training and validation accuracy, precision, recall and AUC of
  the CNN runs, and the average accuracies beside the paper's (`FIGURE4_AVERAGE`).

Every table has a ``<name>_vs_paper`` companion beside the published values.
This module stays free of torch and of the report-only dependencies, so
rules/classification.smk can import it while the DAG is built.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from nucleiflow.classification.dataset import CLASS_NAMES, load_image, read_class_folders, split_classes
from nucleiflow.classification.pannuke_crops import task_class_names
from nucleiflow.errors import ConfigError, DataFormatError
from nucleiflow.paths import CNN_HISTORY_NAME, FIGURE, TABLE

VARIANTS = ("base", "augmented")
PUBLISHED_STUDY = "classification"

CLASSIC_TABLES = {"base": "table1_classic_base", "augmented": "table2_classic_augmented"}
CNN_TABLES = {  # (model, variant) -> paper table number
    ("small_cnn", "base"): 3,
    ("small_cnn", "augmented"): 4,
    ("inception_resnet_v2", "base"): 5,
    ("inception_resnet_v2", "augmented"): 6,
}
FIGURE4 = "figure4_cnn_runs"
FIGURE4_AVERAGE = "figure4_average_accuracy"  # the averages the paper quotes beside Figure 4 (Sections IV-B/C)
PAPER_INDEX = "paper_index.md"
CLASSIFIER_FIGURE = "classifier_comparison"
COUNTS_TABLE = "class_counts"


# ---------------------------------------------------------------- experiment config


def experiment_class_names(experiment: dict) -> tuple[str, ...]:
    """Ordered class names of a classification experiment: its crop task's, else NucRec's."""
    crops = experiment.get("crops")
    return task_class_names(crops["task"]) if crops else CLASS_NAMES


def published_study(experiment: dict) -> str | None:
    """The study whose numbers the tables sit beside; none for PanNuke crops (not the paper's data)."""
    return None if experiment.get("crops") else PUBLISHED_STUDY


def cnn_table_name(model: str, variant: str) -> str:
    """File stem of the per-epoch table of one CNN run, e.g. ``table3_small_cnn_base``."""
    return f"table{CNN_TABLES[(model, variant)]}_{model}_{variant}"


def check_cnn_table_number(number: int | str, model: str, variant: str) -> None:
    """ConfigError unless `number` is the paper's table number of run (`model`, `variant`)."""
    expected = CNN_TABLES.get((model, variant))
    if expected is None or int(number) != expected:
        valid = ", ".join(f"table{n}_{m}_{v}" for (m, v), n in CNN_TABLES.items())
        raise ConfigError(f"table{number}_{model}_{variant}: not one of the CNN tables; valid: {valid}")


def cnn_history_file(number: int | str, model: str, variant: str) -> str:
    """The history behind Table `number` (relative to the experiment folder), after checking the number is the run's."""
    check_cnn_table_number(number, model, variant)
    return CNN_HISTORY_NAME.format(model=model, variant=variant)


def report_targets(cnn_models) -> list[str]:
    """Every table and figure of one experiment, relative to its folder (`rule all`)."""
    tables = [*CLASSIC_TABLES.values(), *(cnn_table_name(m, v) for m in cnn_models for v in VARIANTS), COUNTS_TABLE]
    figures = [FIGURE.format(name=f) for f in (CLASSIFIER_FIGURE, FIGURE4)]
    return [TABLE.format(name=t) for t in tables] + figures + [TABLE.format(name=FIGURE4_AVERAGE), PAPER_INDEX]


# ---------------------------------------------------------------- data


def find_class_root(unpacked: str | Path, class_names=CLASS_NAMES) -> Path:
    """The folder holding the class folders: `unpacked` or one level below it.

    When none holds all of them, the error names the first class folder
    missing from the best candidate (the one holding the most).
    """
    unpacked = Path(unpacked)
    if not unpacked.is_dir():
        raise DataFormatError(f"{unpacked}: data folder not found; expected class folders {', '.join(class_names)}")
    candidates = [unpacked, *sorted(p for p in unpacked.iterdir() if p.is_dir())]
    present = [sum((folder / name).is_dir() for name in class_names) for folder in candidates]
    best = candidates[present.index(max(present))]
    missing = [name for name in class_names if not (best / name).is_dir()]
    if missing:
        raise DataFormatError(
            f"{best / missing[0]}: class folder {missing[0]!r} is missing; expected class folders: "
            f"{', '.join(class_names)}"
        )
    return best


def make_split(unpacked, test_fraction: float, seed: int, class_names=CLASS_NAMES) -> pd.DataFrame:
    """Validate the class folders (reporting counts) and split them 70/30 (or as configured), stratified."""
    root = find_class_root(unpacked, class_names)
    return split_classes(read_class_folders(root, class_names), test_fraction, seed, class_names, root=root)


def training_sets(
    unpacked, split: pd.DataFrame, augmented: pd.DataFrame | None, class_names=CLASS_NAMES
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) manifests with `path` and `label_index`; train is the augmented set when given."""
    listing = read_class_folders(find_class_root(unpacked, class_names), class_names)
    merged = split[["image_id", "split"]].merge(listing, on="image_id", how="left", validate="one_to_one")
    missing = merged[merged["path"].isna()]
    if len(missing):
        raise DataFormatError(f"{unpacked}: the split lists {missing['image_id'].iloc[0]!r}, which is not there")
    train = augmented if augmented is not None else merged[merged["split"] == "train"]
    return train.reset_index(drop=True), merged[merged["split"] == "test"].reset_index(drop=True)


def load_images(manifest: pd.DataFrame, size: int) -> list:
    return [load_image(path, size) for path in manifest["path"]]
