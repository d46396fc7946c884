"""Which output reproduces which table and figure of each paper: one declarative mapping per paper.

Every segmentation experiment with a ``published:`` key names its outputs after the paper's
items (``tables/table4_...``, ``figures/figure11_...``); experiments without one keep the
generic names. The same mapping writes each study's ``paper_index.md`` (item, file, status)
and the README's per-paper tables (checked by ``workflow_tests/reporting/test_paper_index.py``).

Torch-free and stdlib-only: rules/common.smk imports it while the DAG is built.
Run ``python -m nucleiflow.reporting.paper_index`` to print the README tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field

REPRODUCED = "reproduced"
APPROXIMATED = "approximated"
NOT_REPRODUCIBLE = "not reproducible"
NOT_IN_RUN = "not in this run"
STATUSES = (REPRODUCED, APPROXIMATED, NOT_REPRODUCIBLE)

GENERIC = "generic"  # experiments with no `published:` key
EXPLAIN_RULE = "rule `explain` (rules/explain.smk), one folder per model cell"

# Output key -> generic file name (without extension); every segmentation experiment writes these.
SEG_TABLE_KEYS = ("model_sizes", "metrics", "object_metrics", "per_image", "timing")
SEG_FIGURE_KEYS = (
    "metric_curves",
    "bars_dice",
    "bars_iou",
    "bars_acc",
    "prediction_examples",
    "contours",
    "inference_time",
)


@dataclass(frozen=True)
class Item:
    """One table or figure of a paper and what reproduces it.

    `files` are relative to the study folder (``results/<dataset>/<experiment>/``); `why` says
    what differs (approximated) or what is missing (not reproducible); `needs_split` is the
    evaluated split the item needs; `rule` names the stage that writes files made elsewhere.
    """

    item: str
    caption: str
    files: tuple[str, ...]
    status: str
    why: str = ""
    needs_split: str | None = None
    rule: str = ""


@dataclass(frozen=True)
class Paper:
    key: str  # the `published:` key (segmentation) or "classification"
    title: str
    tables: dict[str, str] = field(default_factory=dict)  # output key -> file name, where not generic
    figures: dict[str, str] = field(default_factory=dict)  # output key -> file name (extra keys: new figures)
    items: tuple[Item, ...] = ()
    # What the workflow chose where the paper states nothing (or something else), and readings of unclear text.
    notes: tuple[str, ...] = ()


def _t(name: str) -> str:
    return f"tables/{name}.csv"


def _f(name: str) -> str:
    return f"figures/{name}.png"


DIAGRAM = "an architecture diagram, not a result"
NOTES_HEADING = (
    "Workflow choices and readings where the paper states nothing or is unclear (settings as in config/paper.yaml):"
)
# Declared for every segmentation study: the engine's default schedule (config training.lr_patience / lr_factor).
LR_SCHEDULE = (
    "learning rate: halved when the validation loss has not improved for 5 epochs (reduce on plateau, "
    "patience 5, factor 0.5), our choice"
)
MEDIAN_TIME = (
    "inference time: the median seconds per image over the evaluated split (warm-up batches left out), where the "
    "paper gives an average; the paper's hardware differs"
)
EVALUATED_LOSS = "Loss: each image's training loss (config training.loss) of its probabilities, averaged over images"

PANNUKE = Paper(
    key="pannuke",
    title="Cell nuclei image segmentation using U-Net and DeepLabV3+ with transfer learning and regularization",
    tables={"model_sizes": "table1_model_sizes", "metrics": "table2_4_metrics", "timing": "table5_timing"},
    figures={
        "samples": "figure5_samples",
        "metric_curves": "figure6_10_metric_curves",
        "prediction_examples": "figure11_predictions",
        "contours": "figure12_contours",
        "bars_dice": "figure13_dice",
        "bars_iou": "figure14_iou",
        "bars_acc": "figure15_acc",
    },
    items=(
        Item(
            "Table 1",
            "Comparison of model architectures",
            (_t("table1_model_sizes"),),
            APPROXIMATED,
            "parameter counts and sizes differ: the paper's Keras decoders (Conv + Transpose, ASPP) are "
            "segmentation-models-pytorch's decoders here",
        ),
        Item(
            "Table 2",
            "Performance on the training set",
            (_t("table2_4_metrics"),),
            REPRODUCED,
            "rows Split = train",
            needs_split="train",
        ),
        Item(
            "Table 3",
            "Performance on the validation set",
            (_t("table2_4_metrics"),),
            REPRODUCED,
            "rows Split = val",
            needs_split="val",
        ),
        Item(
            "Table 4",
            "Performance on the test set (captioned 'validation' in the paper)",
            (_t("table2_4_metrics"),),
            REPRODUCED,
            "rows Split = test",
            needs_split="test",
        ),
        Item(
            "Table 5",
            "Model training and inference time",
            (_t("table5_timing"),),
            APPROXIMATED,
            "measured on this machine: times depend on the hardware",
        ),
        Item("Figure 1", "Contracting block", (), NOT_REPRODUCIBLE, DIAGRAM),
        Item("Figure 2", "U-Net architecture with pre-trained backbone", (), NOT_REPRODUCIBLE, DIAGRAM),
        Item("Figure 3", "ASPP block", (), NOT_REPRODUCIBLE, DIAGRAM),
        Item("Figure 4", "DeepLabV3+ architecture with pre-trained backbone", (), NOT_REPRODUCIBLE, DIAGRAM),
        Item("Figure 5", "Sample images and masks from the PanNuke dataset", (_f("figure5_samples"),), REPRODUCED),
        Item(
            "Figures 6-10",
            "Dynamics of Acc, loss, DCS, IoU and SN",
            (_f("figure6_10_metric_curves"),),
            REPRODUCED,
            "the five figures as five panels of one",
        ),
        Item(
            "Figure 11",
            "Segmentation examples (blue correct, red extra, green missing pixels)",
            (_f("figure11_predictions"),),
            APPROXIMATED,
            "the paper's white squares mark hand-picked critical regions; not drawn",
        ),
        Item(
            "Figure 12",
            "Nuclei contours of every model on one image",
            (_f("figure12_contours"),),
            APPROXIMATED,
            "the paper's hand-drawn error squares are not drawn",
        ),
        Item("Figure 13", "All models compared by DCS", (_f("figure13_dice"),), REPRODUCED),
        Item("Figure 14", "All models compared by IoU", (_f("figure14_iou"),), REPRODUCED),
        Item("Figure 15", "All models compared by Acc", (_f("figure15_acc"),), REPRODUCED),
    ),
    notes=(
        "data: the TIA Warwick release of PanNuke (three folds, 7,901 tiles); the paper took a copy from Kaggle",
        "split `paper`: 4,297 / 1,075 / 1,344 images as printed, stratified by tissue, when the pool holds "
        "the paper's 6,716 images; that the 1,185 left out (7,901 - 6,716) are the images without a nucleus is "
        "our assumption, not checked on the real folds",
        "added layers: one double convolution (two 3x3 conv + BN + ReLU) per model, from Sections 3.1, 3.2 and "
        "3.4; Section 3.3 gives no count for DeepLabV3+/ResNet-50 (two, as its sibling)",
        "L2: every convolution for U-Net/ResNet-50 (Section 3.1), the added layers for the other three "
        "(Sections 3.2-3.5)",
        "dropout: Table 1's rate on the added layers of every model; both U-Nets also get their section's decoder "
        "rates (U-Net/ResNet-50 0.2 and 0.5 in the deeper half, Section 3.1; U-Net/EfficientNet-B4 0.25, Section "
        "3.2); channel-wise Dropout2d is our choice",
        f"{EVALUATED_LOSS}: equation 4 (squared terms) with a smoothing term of 1 that the paper does not give",
        "inputs: ImageNet statistics for the pretrained encoders, where the paper feeds 0-255 images to Keras",
        LR_SCHEDULE + "; the paper says the rate was 'adjusted dynamically' from 1e-4",
        MEDIAN_TIME,
    ),
)

RESUNET = Paper(
    key="resunet_dsb2018",
    title="Automated Nuclei Detection in Microscopy Images (residual U-Net, DSB2018)",
    figures={
        "metric_curves": "figure3_metric_curves",
        "train_predictions": "figure4_train_predictions",
        "prediction_examples": "figure5_test_predictions",
        "confidence_map": "figure5_confidence_map",
        "inference_time": "figure8_inference_time",
    },
    items=(
        Item(
            "Figure 1",
            "EDA visualisation",
            ("../eda/eda.png",),
            APPROXIMATED,
            "the dataset's EDA panels (sizes, nuclei, area, circularity, intensity), one per dataset",
        ),
        Item(
            "Figure 2",
            "U-Net convolution layer 13th filter values",
            ("explanations/<arch>/<encoder>/<reg>/figure2_filters.png",),
            REPRODUCED,
            rule=EXPLAIN_RULE,
        ),
        Item("Figure 3", "Performance metrics on training data", (_f("figure3_metric_curves"),), REPRODUCED),
        Item(
            "Figure 4",
            "Prediction visualisation on training data",
            (_f("figure4_train_predictions"),),
            REPRODUCED,
            "training images, evaluated by the same model",
        ),
        Item(
            "Figure 5",
            "Prediction on test data, with the confidence (probability) map",
            (_f("figure5_test_predictions"), _f("figure5_confidence_map")),
            REPRODUCED,
        ),
        Item(
            "Figure 6",
            "Grad-CAM model explanation",
            ("explanations/<arch>/<encoder>/<reg>/figure6_gradcam.png",),
            REPRODUCED,
            rule=EXPLAIN_RULE,
        ),
        Item(
            "Figure 7",
            "LRP model explanation",
            ("explanations/<arch>/<encoder>/<reg>/figure7_lrp.png",),
            REPRODUCED,
            rule=EXPLAIN_RULE,
        ),
        Item(
            "Figure 8",
            "Average prediction time",
            (_f("figure8_inference_time"),),
            APPROXIMATED,
            "measured on this machine: times depend on the hardware",
        ),
        Item(
            "Table 1",
            "Performance comparison with the state-of-the-art models",
            (_t("metrics"), _t("vs_paper")),
            APPROXIMATED,
            "this experiment trains the residual U-Net only; the DeepLabV3+ and U-Net rows come from a separate "
            "experiment (config/paper.yaml: dsb_model_comparison); DeepResNet is not in the model zoo; vs_paper "
            "compares it only with an experiment on the original split",
        ),
        Item(
            "Table 2",
            "Performance across dataset splits",
            ("../../comparisons/<comparison>/table.csv", _t("vs_paper")),
            REPRODUCED,
            "one experiment per split, compared by a `comparisons:` entry (e.g. resunet_splits); each experiment's "
            "vs_paper holds the row of its own split",
        ),
        Item(
            "Text, Section 5.2",
            "Final training and validation accuracy, IoU and loss (seen data)",
            (_t("vs_paper"),),
            APPROXIMATED,
            "the paper's final-epoch training log; ours the best checkpoint evaluated after training on the train "
            "(without augmentation) and val splits, the same BCE + Dice loss; original split only",
            needs_split="train",
        ),
    ),
    notes=(
        "data: BBBC038 (the 2018 Data Science Bowl's stage 1 training and test sets) downloaded from the Broad "
        "Institute; the paper's 740 images and its 60 test images are not identified",
        "inputs: resized to 256 x 256 and normalised with ImageNet statistics (training.input_size, "
        "input_scaling), our choice; the paper states neither",
        "epochs, batch size and early-stopping patience: our choice (config/paper.yaml)",
        f"{EVALUATED_LOSS}: BCE + Dice (Section 5.1.4), equal weights",
        "instances: a distance watershed on the thresholded foreground (postprocess.watershed), our choice",
        LR_SCHEDULE,
        MEDIAN_TIME,
    ),
)

CLASSIC_UNET = Paper(
    key="classic_unet_dsb2018",
    title="Cell Nuclei Segmentation (classic U-Net, DSB2018)",
    tables={"metrics": "table1_metrics", "per_image": "table2_per_image"},
    figures={
        "overlays": "figure1_overlays",
        "image_1": "figure3_image",
        "image_2": "figure4_image",
        "image_3": "figure5_image",
    },
    items=(
        Item("Table 1", "Result of the model after training", (_t("table1_metrics"),), REPRODUCED, needs_split="test"),
        Item(
            "Table 2",
            "Evaluation metrics on specific images",
            (_t("table2_per_image"),),
            APPROXIMATED,
            "the paper's three named images when they are in the test split, else images spread over the Dice range",
        ),
        Item("Figure 1", "Sample images and filled boundary overlays", (_f("figure1_overlays"),), REPRODUCED),
        Item("Figure 2", "U-Net architecture", (), NOT_REPRODUCIBLE, DIAGRAM),
        *(
            Item(
                f"Figure {n}",
                f"Prediction on the paper's image {n - 2} of Table 2",
                (_f(f"figure{n}_image"),),
                APPROXIMATED,
                "the named image when it is in the test split, otherwise the first test images (said in the figure)",
            )
            for n in (3, 4, 5)
        ),
        Item(
            "Unnumbered figures",
            "Training and validation loss and Dice over epochs",
            (_f("metric_curves"),),
            REPRODUCED,
        ),
    ),
    notes=(
        "data: BBBC038 stage 1 training (670 images) from the Broad Institute; the paper took Kaggle's "
        "'processed' copy; its split is not published (ours: a seeded 80/10/10 with Table 2's images in test)",
        "batch size and learning rate: our choice (config/paper.yaml)",
        LR_SCHEDULE,
        MEDIAN_TIME,
    ),
)

CLASSIFICATION = Paper(
    key="classification",
    title="Identifying Microscopic Augmented Images using Pre-Trained Deep Convolutional Neural Networks (NucRec)",
    items=(
        Item(
            "Table I",
            "Machine learning with base data",
            (_t("table1_classic_base"), _t("table1_classic_base_vs_paper")),
            REPRODUCED,
        ),
        Item(
            "Table II",
            "Machine learning with augmented data",
            (_t("table2_classic_augmented"), _t("table2_classic_augmented_vs_paper")),
            REPRODUCED,
        ),
        *(
            Item(
                f"Table {roman}",
                caption,
                (_t(name), _t(f"{name}_vs_paper")),
                REPRODUCED,
                "built when the run is configured (cnn.models)",
            )
            for roman, caption, name in (
                ("III", "CNN with base data", "table3_small_cnn_base"),
                ("IV", "CNN with augmented data", "table4_small_cnn_augmented"),
                ("V", "InceptionResNetV2 on base data", "table5_inception_resnet_v2_base"),
                ("VI", "InceptionResNetV2 on augmented data", "table6_inception_resnet_v2_augmented"),
            )
        ),
        Item("Figure 1", "Building blocks of CNN", (), NOT_REPRODUCIBLE, DIAGRAM),
        Item("Figure 2", "Process of transfer learning", (), NOT_REPRODUCIBLE, DIAGRAM),
        Item("Figure 3", "Proposed workbook", (), NOT_REPRODUCIBLE, "a flow chart of the method, not a result"),
        Item(
            "Figure 4",
            "Training and validation accuracy, precision, recall and AUC of the CNN runs",
            (_f("figure4_cnn_runs"),),
            REPRODUCED,
        ),
        Item(
            "Text, Sections IV-B/C",
            "Average training and validation accuracy of each CNN run",
            (_t("figure4_average_accuracy"),),
            REPRODUCED,
            "mean over all epochs, beside the averages the paper quotes",
        ),
    ),
    notes=(
        "CNN precision and recall: Keras' on the one-hot output (micro over both columns, equal to accuracy), "
        "as in the paper's tables; the positive class's own are the '(per class)' columns",
        "CNNs: batch size, learning rate (constant; the transfer policy's two for the pretrained model), the "
        "head-only epochs before fine-tuning and the small CNN's design (four conv-BN-ReLU-pool blocks, 32-256 "
        "channels) are our choices; the paper describes none of them",
        "augmented training set: its size (classification.augmented_size) is our choice",
        "classifiers: scikit-learn defaults except QDA after a PCA to at most 20 dimensions with reg_param 0.1, "
        "the SVM's probabilities by Platt scaling (calibrated SVC), soft voting over logistic regression, random "
        "forest and SVM; the "
        "paper gives no hyperparameters",
    ),
)

PAPERS = {paper.key: paper for paper in (PANNUKE, RESUNET, CLASSIC_UNET, CLASSIFICATION)}
SEGMENTATION_PAPERS = (PANNUKE.key, RESUNET.key, CLASSIC_UNET.key)


def paper_key(published: str | None) -> str:
    """The naming scheme of a segmentation experiment: its paper's key, else ``generic``."""
    return published if published in SEGMENTATION_PAPERS else GENERIC


def table_names(published: str | None) -> dict[str, str]:
    """Output key -> table file name (no extension) for an experiment with this `published:` key."""
    renamed = PAPERS[published].tables if published in SEGMENTATION_PAPERS else {}
    return {key: renamed.get(key, key) for key in SEG_TABLE_KEYS}


def figure_names(published: str | None) -> dict[str, str]:
    """Output key -> figure file name (no extension); papers add keys for the figures only they have."""
    renamed = PAPERS[published].figures if published in SEGMENTATION_PAPERS else {}
    names = {key: renamed.get(key, key) for key in SEG_FIGURE_KEYS}
    names.update({key: name for key, name in renamed.items() if key not in names})
    return names


def _status(item: Item, evaluated: tuple[str, ...] | None) -> tuple[str, str]:
    if item.needs_split and evaluated is not None and item.needs_split not in evaluated:
        return NOT_IN_RUN, f"add `{item.needs_split}` to the experiment's evaluate_splits"
    return item.status, item.why


def _files_cell(item: Item, link: bool) -> str:
    if not item.files:
        return "-"
    shown = [f"[{f}]({f})" if link and "<" not in f else f"`{f}`" for f in item.files]
    return "<br>".join(shown)


def index_markdown(
    key: str,
    experiment: str,
    dataset: str,
    evaluated: tuple[str, ...] | None = None,
    comparisons: tuple[str, ...] = (),
    note: str = "",
) -> str:
    """The study folder's ``paper_index.md``: every table and figure of the paper, its file, its status."""
    paper = PAPERS[key]
    lines = [
        f"# Paper index: {paper.title}",
        "",
        f"Experiment `{experiment}` on dataset `{dataset}`. Files are relative to this folder; each table is also "
        "written as `.md` and `.tex`, each figure also as `.pdf`.",
    ]
    if note:
        lines += ["", note]
    lines += ["", "| Item | Paper caption | Output | Status | Note |", "|---|---|---|---|---|"]
    for item in paper.items:
        status, why = _status(item, evaluated)
        if comparisons and "<comparison>" in "".join(item.files):
            item = Item(
                item.item,
                item.caption,
                tuple(f"../../comparisons/{c}/table.csv" for c in comparisons)
                + tuple(f for f in item.files if "<comparison>" not in f),
                item.status,
                item.why,
                rule=item.rule,
            )
        if item.rule:
            why = f"{why}; made by {item.rule}" if why else f"made by {item.rule}"
        lines.append(f"| {item.item} | {item.caption} | {_files_cell(item, link=True)} | {status} | {why} |")
    if paper.notes:
        lines += ["", NOTES_HEADING, "", *(f"- {line}" for line in paper.notes)]
    return "\n".join(lines) + "\n"


def readme_tables() -> str:
    """The README's section: one table per paper (item, output, status), from the same mapping."""
    parts = []
    for paper in PAPERS.values():
        folder = (
            "`results/<dataset>/classification/<experiment>/`"
            if paper.key == CLASSIFICATION.key
            else f"`results/<dataset>/<experiment>/` (experiments with `published: {paper.key}`)"
        )
        parts += [f"**{paper.title}**: files under {folder}", "", "| Item | Output | Status |", "|---|---|---|"]
        for item in paper.items:
            notes = "; ".join(n for n in (item.why, f"made by {item.rule}" if item.rule else "") if n)
            status = f"{item.status} ({notes})" if notes else item.status
            parts.append(f"| {item.item} | {_files_cell(item, link=False)} | {status} |")
        parts.append("")
        if paper.notes:
            parts += [NOTES_HEADING, "", *(f"- {line}" for line in paper.notes), ""]
    return "\n".join(parts)


def write_index(path, *args, **kwargs) -> None:
    from nucleiflow.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(index_markdown(*args, **kwargs))


if __name__ == "__main__":
    print(readme_tables())
