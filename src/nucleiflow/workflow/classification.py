"""The classification study's file names as the workflow builds them: Tables I-VI, Figure 4, class names.

The paper's numbering, used in file names (the tables and figures themselves are built by
`classification.tables`):

* Table I / II: the classic ML grid on base / augmented data (`CLASSIC_TABLES`), one row per classifier;
* Tables III-VI: one CNN run each (`CNN_TABLES`: small CNN base, small CNN augmented, InceptionResNetV2
  base, InceptionResNetV2 augmented), one row per reported epoch; only configured runs are built, numbers
  stay fixed;
* Figure 4: training and validation accuracy, precision, recall and AUC of the CNN runs, and the average
  accuracies beside the paper's (`FIGURE4_AVERAGE`).

Every table has a ``<name>_vs_paper`` companion beside the published values.
"""

from __future__ import annotations

from nucleiflow.catalog import CROP_TASK_CLASS_NAMES, NUCREC_CLASS_NAMES
from nucleiflow.errors import ConfigError, choices_error
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


def task_class_names(task: str) -> tuple[str, ...]:
    """The ordered class names of a crop task."""
    if task not in CROP_TASK_CLASS_NAMES:
        raise choices_error("crops.task", task, CROP_TASK_CLASS_NAMES)
    return CROP_TASK_CLASS_NAMES[task]


def experiment_class_names(experiment: dict) -> tuple[str, ...]:
    """Ordered class names of a classification experiment: its crop task's, else NucRec's."""
    crops = experiment.get("crops")
    return task_class_names(crops["task"]) if crops else NUCREC_CLASS_NAMES


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
