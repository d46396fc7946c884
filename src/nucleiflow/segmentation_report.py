"""Tables and figures of a segmentation experiment, from the stage outputs on disk.

Inputs are the documented outputs of the train and evaluate stages (train_info.json,
history.csv, <subset>_per_image.csv, <subset>_timing.json, <subset>_predictions.h5);
nothing here runs a model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import figures, tables
from .catalog import ARCH_DISPLAY, ENCODER_DISPLAY, model_label
from .io import read_json
from .metrics import summarize
from .predictions import read_probability
from .store import Store

PAPER_METRICS = ("loss", "acc", "dice", "sensitivity", "iou")


def _label(cell: dict) -> str:
    return model_label(cell["arch"], cell["encoder"], cell["reg"])


def collect(paths: list[str], cells: list[dict], subsets: list[str], reader) -> pd.DataFrame:
    """Concatenate per-cell, per-subset files (ordered as the rule lists them) with model columns."""
    frames = []
    expected = iter(paths)
    for cell in cells:
        for subset in subsets:
            frame = reader(next(expected))
            frames.append(frame.assign(model=_label(cell), subset=subset))
    return pd.concat(frames, ignore_index=True)


def model_sizes(infos: list[str], cells: list[dict]) -> pd.DataFrame:
    """Table 1 of the PanNuke study: method, dropout, kernel, L2, backbone, parameters, size (MB)."""
    records = []
    for path, cell in zip(infos, cells):
        info = read_json(path)
        reg = info["spec"]["regularization"]
        records.append({
            "method": ARCH_DISPLAY.get(cell["arch"], cell["arch"]) + f" ({cell['reg']})",
            "backbone": ENCODER_DISPLAY.get(cell["encoder"], cell["encoder"]),
            "dropout": reg["dropout"], "l2": reg["l2"],
            "kernel": "3x3" if reg["extra_blocks"] else "-",
            "parameters": info["trainable"], "size_mb": round(info["size_mb"], 2),
        })
    return tables.model_size_table(records)


def metrics_summary(per_image: pd.DataFrame) -> pd.DataFrame:
    return summarize(per_image, ["model", "subset"], metrics=list(PAPER_METRICS) + ["precision", "f1", "mcc"])


def metrics_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Tables 2-4 of the PanNuke study in one: mean ± std over images per model and split."""
    table = tables.metrics_table(summary, PAPER_METRICS + ("precision", "mcc"), label_cols=["model", "subset"])
    pooled = summary[[f"{m}_pooled" for m in ("dice", "iou")]].rename(
        columns={"dice_pooled": "DCS (pooled)", "iou_pooled": "IoU (pooled)"})
    return pd.concat([table.rename(columns={"model": "Model", "subset": "Split"}), pooled.reset_index(drop=True)], axis=1)


def timing_table(timings: list[str], infos: list[str], cells: list[dict], subsets: list[str]) -> pd.DataFrame:
    """Table 5: inference time per image (median, IQR) and training time, both measured."""
    rows = []
    timing_paths = iter(timings)
    for cell, info_path in zip(cells, infos):
        info = read_json(info_path)
        for subset in subsets:
            timing = read_json(next(timing_paths))
            if subset != "test" and "test" in subsets:
                continue
            rows.append({
                "Model": _label(cell), "Device": timing["device"], "Images": timing["images"],
                "Inference median (s/image)": timing["median_s"],
                "Inference IQR (s)": timing["p75_s"] - timing["p25_s"],
                "Training (min)": info["train_seconds"] / 60.0, "Epochs": info["epochs_run"],
                "Best epoch": info["best_epoch"],
            })
    return pd.DataFrame(rows)


def histories(paths: list[str], cells: list[dict]) -> pd.DataFrame:
    return pd.concat([pd.read_csv(p).assign(model=_label(c)) for p, c in zip(paths, cells)], ignore_index=True)


def example_ids(per_image: pd.DataFrame, n: int) -> list[str]:
    """The test images shown in figures: spread over the Dice range of the first model."""
    test = per_image[per_image["subset"] == per_image["subset"].iloc[-1]]
    first = test[test["model"] == test["model"].iloc[0]].sort_values("dice")
    picks = np.linspace(0, len(first) - 1, num=min(n, len(first))).round().astype(int)
    return list(dict.fromkeys(first["image_id"].iloc[picks]))


def prediction_examples(store_path: str, prediction_paths: list[str], cells: list[dict], subsets: list[str],
                        image_ids: list[str], threshold: float) -> tuple[list[tuple], dict[str, list]]:
    """Examples (title, image, target) and each model's predictions on them (last evaluated split)."""
    store = Store(store_path)
    samples = [store[image_id] for image_id in image_ids]
    examples = [(image_id[:16], s.image, s.mask.astype(bool)) for image_id, s in zip(image_ids, samples)]
    last = len(subsets) - 1
    predictions = {
        _label(cell): [read_probability(prediction_paths[i * len(subsets) + last], image_id) > threshold
                       for image_id in image_ids]
        for i, cell in enumerate(cells)
    }
    return examples, predictions


def write_figures(histories_df, summary, examples, predictions, outputs: dict) -> None:
    """The experiment's figures: curves (Figs 6-10), bars (13-15), overlays (11), contours (12)."""
    figures.use_style()
    palette = figures.model_palette(histories_df["model"])
    figures.save_figure(figures.metric_curves(histories_df, palette=palette), outputs["curves"])
    bars = summary.rename(columns={"subset": "split"})
    figures.save_figure(figures.metric_bars(bars, "dice", palette=palette), outputs["bars"])
    figures.save_figure(figures.overlay_matrix(examples, predictions), outputs["examples"])
    # Contours: the best model (highest mean Dice on the last split) on the first example.
    last = summary[summary["subset"] == summary["subset"].iloc[-1]]
    best = last.sort_values("dice_mean").iloc[-1]["model"]
    _, image, target = examples[0]
    figures.save_figure(figures.contour_comparison(image, predictions[best][0], target), outputs["contours"])
