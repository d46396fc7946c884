"""Tables and figures of a segmentation experiment, from the stage outputs on disk.

Inputs are the documented outputs of the train and evaluate stages (train_info.json,
history.csv, <subset>_per_image.csv, <subset>_timing.json, <subset>_predictions.h5);
nothing here runs a model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nucleiflow.catalog import ARCH_DISPLAY, ENCODER_DISPLAY, model_label
from nucleiflow.io import read_json
from nucleiflow.reporting import figures, tables
from nucleiflow.reporting.published import beside_published, published_table, published_tables
from nucleiflow.segmentation.instances import OBJECT_METRIC_NAMES
from nucleiflow.segmentation.metrics import summarize
from nucleiflow.segmentation.predictions import read_probability
from nucleiflow.store import Store

PAPER_METRICS = ("loss", "acc", "dice", "sensitivity", "iou")
BAR_METRICS = ("dice", "iou", "acc")


def _label(cell: dict) -> str:
    return model_label(cell["arch"], cell["encoder"], cell["reg"])


def collect(paths: list[str], cells: list[dict], subsets: list[str], reader) -> pd.DataFrame:
    """Concatenate per-cell, per-subset files (ordered as the rule lists them) with model columns."""
    frames = []
    expected = iter(paths)
    for cell in cells:
        for subset in subsets:
            frame = reader(next(expected))
            frames.append(
                frame.assign(
                    model=_label(cell), arch=cell["arch"], encoder=cell["encoder"], reg=cell["reg"], subset=subset
                )
            )
    return pd.concat(frames, ignore_index=True)


def model_sizes(infos: list[str], cells: list[dict]) -> pd.DataFrame:
    """Table 1 of the PanNuke study: method, dropout, kernel, L2, backbone, parameters, size (MB)."""
    records = []
    for path, cell in zip(infos, cells):
        info = read_json(path)
        reg = info["spec"]["regularization"]
        records.append(
            {
                "method": ARCH_DISPLAY.get(cell["arch"], cell["arch"]) + f" ({cell['reg']})",
                "backbone": ENCODER_DISPLAY.get(cell["encoder"], cell["encoder"]),
                "dropout": reg["dropout"],
                "l2": reg["l2"],
                "kernel": "3x3" if reg["extra_blocks"] else "-",
                "parameters": info["trainable"],
                "size_mb": round(info["size_mb"], 2),
            }
        )
    return tables.model_size_table(records)


def metrics_summary(per_image: pd.DataFrame) -> pd.DataFrame:
    metrics = list(PAPER_METRICS) + ["precision", "f1", "mcc"]
    metrics += [m for m in OBJECT_METRIC_NAMES if m in per_image]
    return summarize(per_image, ["model", "arch", "encoder", "reg", "subset"], metrics=metrics)


def metrics_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Tables 2-4 of the PanNuke study in one: mean ± std over images per model and split."""
    table = tables.metrics_table(summary, PAPER_METRICS + ("precision", "mcc"), label_cols=["model", "subset"])
    pooled = summary[[f"{m}_pooled" for m in ("dice", "iou")]].rename(
        columns={"dice_pooled": "DCS (pooled)", "iou_pooled": "IoU (pooled)"}
    )
    return pd.concat(
        [table.rename(columns={"model": "Model", "subset": "Split"}), pooled.reset_index(drop=True)], axis=1
    )


def object_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Object-level metrics per model and split: AJI, PQ (DQ x SQ) and DSB mAP, mean ± std over images."""
    table = tables.metrics_table(summary, OBJECT_METRIC_NAMES, label_cols=["model", "subset"])
    return table.rename(columns={"model": "Model", "subset": "Split"})


def per_image_table(per_image: pd.DataFrame, n_rows: int) -> pd.DataFrame:
    """Per-image metrics of selected test images, named by id (the classic U-Net study's Table 2)."""
    last = per_image[per_image["subset"] == per_image["subset"].iloc[-1]]
    chosen = example_ids(per_image, n_rows)
    rows = last[last["image_id"].isin(chosen)]
    columns = {
        "model": "Model",
        "image_id": "Image",
        "acc": "Accuracy",
        "f1": "F1",
        "iou": "Jaccard",
        "precision": "Precision",
        "sensitivity": "Recall",
    }
    return rows[list(columns)].rename(columns=columns).reset_index(drop=True)


def comparison_frame(
    summary: pd.DataFrame, infos: list[str], timings: list[str], cells: list[dict], subsets: list[str]
) -> pd.DataFrame:
    """One row per model and split with every quantity a paper may report, named as in published_values.yaml."""
    frame = summary.rename(columns={"subset": "split"}).copy()
    for metric in PAPER_METRICS + ("precision", "f1", "mcc"):
        frame[metric] = frame[f"{metric}_mean"]
    extras = [
        {
            "arch": cell["arch"],
            "encoder": cell["encoder"],
            "reg": cell["reg"],
            "split": subset,
            "inference_s": timing["median_s"],
            "training_min": info["train_seconds"] / 60.0,
            "parameters": info["trainable"],
            **info["spec"]["regularization"],
        }
        for cell, subset, info, timing in _model_records(timings, infos, cells, subsets)
    ]
    return frame.merge(pd.DataFrame(extras), on=["arch", "encoder", "reg", "split"], validate="one_to_one")


def versus_paper(frame: pd.DataFrame, study: str) -> pd.DataFrame:
    """Every published number of `study` beside ours, in long form: one row per model, split and metric."""
    rows = []
    # Quantities without a split key (timing, sizes) are taken from the test split when there is one.
    frame = frame.sort_values("split", key=lambda split: split != "test", kind="stable")
    for table in published_tables()[study]:
        for reg, ours in frame.groupby("reg", sort=False):
            wide = beside_published(ours.drop_duplicates(_keys(study, table)), study, table)
            wide = wide[wide["source"].notna()]  # our rows the paper has no counterpart for
            for metric in [c[: -len("_ours")] for c in wide.columns if c.endswith("_ours")]:
                part = wide[[c for c in wide.columns if c in ("arch", "encoder", "split", "source")]].copy()
                part.insert(0, "table", table)
                part["reg"] = reg
                part["metric"] = metric
                part["ours"], part["paper"], part["difference"] = (
                    wide[f"{metric}_ours"],
                    wide[f"{metric}_paper"],
                    wide[f"{metric}_diff"],
                )
                rows.append(part)
    long = pd.concat(rows, ignore_index=True)
    order = ["table", "arch", "encoder", "reg", "split", "metric", "ours", "paper", "difference", "source"]
    return long[[c for c in order if c in long.columns]]


def _keys(study: str, table: str) -> list[str]:
    return list(published_table(study, table).columns.intersection(["arch", "encoder", "split"]))


def timing_table(timings: list[str], infos: list[str], cells: list[dict], subsets: list[str]) -> pd.DataFrame:
    """Table 5: inference time per image (median, IQR) and training time, both measured."""
    rows = []
    for cell, subset, info, timing in _model_records(timings, infos, cells, subsets):
        if subset != "test" and "test" in subsets:
            continue
        rows.append(
            {
                "Model": _label(cell),
                "Device": timing["device"],
                "Images": timing["images"],
                "Inference median (s/image)": timing["median_s"],
                "Inference IQR (s)": timing["p75_s"] - timing["p25_s"],
                "Training (min)": info["train_seconds"] / 60.0,
                "Epochs": info["epochs_run"],
                "Best epoch": info["best_epoch"],
            }
        )
    return pd.DataFrame(rows)


def _model_records(timings: list[str], infos: list[str], cells: list[dict], subsets: list[str]):
    """(cell, subset, train_info, timing) in the order the rule lists its inputs (cell-major)."""
    timing_paths = iter(timings)
    for cell, info_path in zip(cells, infos):
        info = read_json(info_path)
        for subset in subsets:
            yield cell, subset, info, read_json(next(timing_paths))


def histories(paths: list[str], cells: list[dict]) -> pd.DataFrame:
    return pd.concat([pd.read_csv(p).assign(model=_label(c)) for p, c in zip(paths, cells)], ignore_index=True)


def example_ids(per_image: pd.DataFrame, n: int) -> list[str]:
    """The test images shown in figures: spread over the Dice range of the first model."""
    test = per_image[per_image["subset"] == per_image["subset"].iloc[-1]]
    first = test[test["model"] == test["model"].iloc[0]].sort_values("dice")
    picks = np.linspace(0, len(first) - 1, num=min(n, len(first))).round().astype(int)
    return list(dict.fromkeys(first["image_id"].iloc[picks]))


def prediction_examples(
    store_path: str,
    prediction_paths: list[str],
    cells: list[dict],
    subsets: list[str],
    image_ids: list[str],
    threshold: float,
) -> tuple[list[tuple], dict[str, list]]:
    """Examples (title, image, target) and each model's predictions on them (last evaluated split)."""
    store = Store(store_path)
    samples = [store[image_id] for image_id in image_ids]
    examples = [(image_id[:16], s.image, s.mask.astype(bool)) for image_id, s in zip(image_ids, samples)]
    last = len(subsets) - 1
    predictions = {
        _label(cell): [
            read_probability(prediction_paths[i * len(subsets) + last], image_id) > threshold for image_id in image_ids
        ]
        for i, cell in enumerate(cells)
    }
    return examples, predictions


def write_figures(histories_df, summary, examples, predictions, outputs: dict) -> None:
    """The experiment's figures: curves (Figs 6-10), bars (13-15), overlays (11), contours (12)."""
    figures.use_style()
    palette = figures.model_palette(histories_df["model"])
    figures.save_figure(figures.metric_curves(histories_df, palette=palette), outputs["curves"])
    bars = summary.rename(columns={"subset": "split"})
    for metric in BAR_METRICS:  # Figures 13-15
        figures.save_figure(figures.metric_bars(bars, metric, palette=palette), outputs[f"bars_{metric}"])
    figures.save_figure(figures.overlay_matrix(examples, predictions), outputs["examples"])
    # Contours: the best model (highest mean Dice on the last split) on the first example.
    last = summary[summary["subset"] == summary["subset"].iloc[-1]]
    best = last.sort_values("dice_mean").iloc[-1]["model"]
    _, image, target = examples[0]
    figures.save_figure(figures.contour_comparison(image, predictions[best][0], target), outputs["contours"])


def save_inference_time(per_image: pd.DataFrame, path) -> None:
    """Per-image inference time of every model on the last evaluated split (warm-up excluded)."""
    figures.use_style()
    last = per_image[(per_image["subset"] == per_image["subset"].iloc[-1]) & ~per_image["warmup"]]
    figures.save_figure(figures.distribution_by_model(last, "seconds", "Inference time per image (s)"), path)


def compare_experiments(per_image: pd.DataFrame, metrics) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Across experiments (e.g. one model trained per split): summary and table, mean ± std over images."""
    summary = summarize(per_image, ["experiment", "model"], metrics=list(metrics))
    table = tables.metrics_table(summary, metrics, label_cols=["experiment", "model"])
    return summary, table.rename(columns={"experiment": "Experiment", "model": "Model"})
