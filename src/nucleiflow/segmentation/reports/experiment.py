"""Tables and figures of a segmentation experiment, from the stage outputs on disk.

Inputs are the documented outputs of the train and evaluate stages (train_info.json,
history.csv, <subset>_per_image.csv, <subset>_timing.json, <subset>_predictions.h5);
nothing here runs a model.

The workflow hands them over as evaluation runs: one record per model and
evaluated split (the rules' `evaluation_runs`), holding the model (`arch`,
`encoder`, `reg`), the `subset` and the path of each of those files under its
kind (`info`, `history`, `per_image`, `timing`, `predictions`), so every file is
read with the model and split it belongs to, whatever order the rule lists them in.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nucleiflow.catalog import ARCH_DISPLAY, ENCODER_DISPLAY, model_label
from nucleiflow.io import read_json
from nucleiflow.reporting import tables
from nucleiflow.reporting.published import (
    DATASET_SPLIT,
    beside_published,
    load_published,
    published_table,
    published_tables,
)
from nucleiflow.segmentation.evaluation.instances import OBJECT_METRIC_NAMES
from nucleiflow.segmentation.evaluation.metrics import summarize
from nucleiflow.segmentation.inference.predictions import read_probability
from nucleiflow.store import Store

PAPER_METRICS = ("loss", "acc", "dice", "sensitivity", "iou")
BAR_METRICS = ("dice", "iou", "acc")


def _label(cell: dict) -> str:
    return model_label(cell["arch"], cell["encoder"], cell["reg"])


def evaluated_splits(runs: list[dict]) -> list[str]:
    """The evaluated splits of the runs, in the order the experiment lists them (the last one is shown)."""
    return list(dict.fromkeys(run["subset"] for run in runs))


def model_runs(runs: list[dict]) -> list[dict]:
    """The first run of every model: its per-model files (`info`, `history`), one record per model."""
    first: dict[tuple, dict] = {}
    for run in runs:
        first.setdefault((run["arch"], run["encoder"], run["reg"]), run)
    return list(first.values())


def collect(runs: list[dict], reader) -> pd.DataFrame:
    """Every run's per-image file (`reader` of its `per_image` path) with its model and subset columns."""
    frames = [
        reader(run["per_image"]).assign(
            model=_label(run), arch=run["arch"], encoder=run["encoder"], reg=run["reg"], subset=run["subset"]
        )
        for run in runs
    ]
    return pd.concat(frames, ignore_index=True)


def model_sizes(runs: list[dict]) -> pd.DataFrame:
    """Table 1 of the PanNuke study: method, dropout, kernel, L2, backbone, parameters, size (MB)."""
    records = []
    for cell in model_runs(runs):
        info = read_json(cell["info"])
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


def per_image_table(per_image: pd.DataFrame, n_rows: int | list[str], named: list[str] = ()) -> pd.DataFrame:
    """Per-image metrics of selected test images, named by id (the classic U-Net study's Table 2).

    The paper's `named` images come first when they are in the last evaluated split. `n_rows` (config
    `per_image_rows`) is a count, or a list of image ids: then exactly those (in the evaluated split) are listed.
    """
    if isinstance(n_rows, (list, tuple)):
        named, n_rows = list(dict.fromkeys(n_rows)), 0
    last = per_image[per_image["subset"] == per_image["subset"].iloc[-1]]
    present = [i for i in named if i in set(last["image_id"])]
    chosen = list(dict.fromkeys(present + example_ids(per_image, n_rows)))[: max(n_rows, len(present))]
    rank = {image_id: i for i, image_id in enumerate(chosen)}
    rows = last[last["image_id"].isin(chosen)]
    rows = rows.iloc[rows["image_id"].map(rank).argsort(kind="stable")]  # the paper's images first
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


def comparison_frame(summary: pd.DataFrame, runs: list[dict]) -> pd.DataFrame:
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
            # The median per image (robust to stalls), where the papers give an average: declared in the paper index.
            "inference_s": timing["median_s"],
            "training_min": info["train_seconds"] / 60.0,
            "parameters": info["trainable"],
            **info["spec"]["regularization"],
        }
        for cell, subset, info, timing in _model_records(runs)
    ]
    return frame.merge(pd.DataFrame(extras), on=["arch", "encoder", "reg", "split"], validate="one_to_one")


def versus_paper(frame: pd.DataFrame, study: str, dataset_split: str | None = None) -> pd.DataFrame:
    """Every published number of `study` beside ours, in long form: one row per model, split and metric.

    `dataset_split` is the experiment's split of the dataset (config `split`). A published table measured on
    one split (its `dataset_split` field, e.g. the residual U-Net study's Table 1 on the original split) is
    compared only with an experiment on that split; a table keyed by `dataset_split` (the same study's
    Table 2) contributes the row of the experiment's own split, and is left out when the split is unknown.
    """
    rows = []
    # Quantities without a split key (timing, sizes) are taken from the test split when there is one.
    frame = frame.sort_values("split", key=lambda split: split != "test", kind="stable")
    specs = load_published()[study]["tables"]
    for table in published_tables()[study]:
        spec = specs[table]
        measured_on = spec.get(DATASET_SPLIT)
        if measured_on is not None and dataset_split is not None and measured_on != dataset_split:
            continue  # the paper's numbers for another split of the data
        if DATASET_SPLIT in spec["keys"] and dataset_split is None:
            continue
        ours_all, metrics = frame, spec["metrics"]
        if DATASET_SPLIT in spec["keys"]:
            ours_all = frame.assign(**{DATASET_SPLIT: dataset_split})
            # Table 2 of the residual U-Net study also prints each split's image counts: reference, not results.
            metrics = [m for m in metrics if m in ours_all or f"{m}_mean" in ours_all]
        keys = _keys(study, table)
        for reg, ours in ours_all.groupby("reg", sort=False):
            wide = beside_published(ours.drop_duplicates(keys), study, table, metrics=metrics)
            wide = wide[wide["source"].notna()]  # our rows the paper has no counterpart for
            if DATASET_SPLIT in keys:
                # Only the row of our own split, scored on the evaluated split first in the frame (test).
                wide = wide[wide[DATASET_SPLIT] == dataset_split].assign(split=ours["split"].iloc[0])
            # The paper's note (a garbled print, a definition that differs from ours) travels with its numbers.
            notes = published_table(study, table)[[*keys, "note"]].drop_duplicates(keys)
            wide = wide.merge(notes, on=keys, how="left") if keys else wide.assign(note=notes["note"].iloc[0])
            for metric in [c[: -len("_ours")] for c in wide.columns if c.endswith("_ours")]:
                kept = ("arch", "encoder", "split", DATASET_SPLIT, "source", "note")
                part = wide[[c for c in wide.columns if c in kept]].copy()
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
    order = [
        "table",
        "arch",
        "encoder",
        "reg",
        DATASET_SPLIT,
        "split",
        "metric",
        "ours",
        "paper",
        "difference",
        "source",
        "note",
    ]
    return long[[c for c in order if c in long.columns]]


def _keys(study: str, table: str) -> list[str]:
    return list(published_table(study, table).columns.intersection(["arch", "encoder", "split", DATASET_SPLIT]))


def timing_table(runs: list[dict]) -> pd.DataFrame:
    """Table 5: inference time per image (median, IQR) and training time, both measured (test split if evaluated)."""
    rows = []
    tested = "test" in evaluated_splits(runs)
    for cell, subset, info, timing in _model_records(runs):
        if subset != "test" and tested:
            continue
        rows.append(
            {
                "Model": _label(cell),
                "Device": timing["device"],
                "Images timed": timing["images"],
                "Inference median (s/image)": timing["median_s"],
                "Inference IQR (s)": timing["p75_s"] - timing["p25_s"],
                "Training (min)": info["train_seconds"] / 60.0,
                "Epochs": info["epochs_run"],
                "Best epoch": info["best_epoch"],
            }
        )
    return pd.DataFrame(rows)


def _model_records(runs: list[dict]):
    """(run, subset, train_info, timing) of every run, each train_info.json read once."""
    infos: dict[str, dict] = {}
    for run in runs:
        info = infos.setdefault(run["info"], read_json(run["info"]))
        yield run, run["subset"], info, read_json(run["timing"])


def histories(runs: list[dict]) -> pd.DataFrame:
    """Every model's training history (its `history` file) with a model column."""
    return pd.concat(
        [pd.read_csv(run["history"]).assign(model=_label(run)) for run in model_runs(runs)], ignore_index=True
    )


def example_ids(per_image: pd.DataFrame, n: int) -> list[str]:
    """The test images shown in figures: spread over the Dice range of the first model."""
    test = per_image[per_image["subset"] == per_image["subset"].iloc[-1]]
    first = test[test["model"] == test["model"].iloc[0]].sort_values("dice")
    picks = np.linspace(0, len(first) - 1, num=min(n, len(first))).round().astype(int)
    return list(dict.fromkeys(first["image_id"].iloc[picks]))


def shown_runs(runs: list[dict]) -> list[dict]:
    """The runs of the last evaluated split, one per model: the predictions the figures show."""
    last = evaluated_splits(runs)[-1]
    return [run for run in runs if run["subset"] == last]


def prediction_examples(
    store_path: str, runs: list[dict], image_ids: list[str], threshold: float
) -> tuple[list[tuple], dict[str, list]]:
    """Examples (title, image, target) and each model's predictions on them (last evaluated split)."""
    store = Store(store_path)
    samples = [store[image_id] for image_id in image_ids]
    examples = [(image_id[:16], s.image, s.mask.astype(bool)) for image_id, s in zip(image_ids, samples)]
    predictions = {
        _label(run): [read_probability(run["predictions"], image_id) > threshold for image_id in image_ids]
        for run in shown_runs(runs)
    }
    return examples, predictions


def write_figures(histories_df, summary, examples, predictions, outputs: dict) -> None:
    """The experiment's figures, by output key: curves, bars, overlays and contours (see `paper_index`)."""
    from nucleiflow.reporting import figures  # matplotlib + seaborn (~1 s): not in the table jobs

    figures.use_style()
    palette = figures.model_palette(histories_df["model"])
    figures.save_figure(figures.metric_curves(histories_df, palette=palette), outputs["metric_curves"])
    bars = summary.rename(columns={"subset": "split"})
    for metric in BAR_METRICS:  # PanNuke Figures 13-15
        figures.save_figure(figures.metric_bars(bars, metric, palette=palette), outputs[f"bars_{metric}"])
    figures.save_figure(figures.overlay_matrix(examples, predictions), outputs["prediction_examples"])
    # Contours: every model on the first example (PanNuke Figure 12).
    _, image, target = examples[0]
    first = {model: masks[0] for model, masks in predictions.items()}
    figures.save_figure(figures.contour_matrix(image, target, first), outputs["contours"])


def named_images(study: str | None) -> list[str]:
    """The image ids a paper shows by name (the classic U-Net study's Table 2 and Figures 3-5)."""
    if study != "classic_unet_dsb2018":
        return []
    return list(published_table(study, "per_image")["image_id"])


def write_paper_figures(
    outputs: dict,
    store_path: str,
    full_ids: list[str],
    runs: list[dict],
    threshold: float,
    train_predictions: list[str] = (),
    named: list[str] = (),
) -> None:
    """The figures only some papers have, each written when its output key is there (see `paper_index`).

    `full_ids` are the example images (last evaluated split); the probability maps shown are the first
    model's on that split; `train_predictions`' first file holds predictions on training images.
    """
    from nucleiflow.reporting import figures  # matplotlib + seaborn (~1 s): not in the table jobs

    figures.use_style()
    store = Store(store_path)
    if "samples" in outputs:  # PanNuke Figure 5: sample images and masks
        samples = [(i[:16], store[i].image, store[i].instances) for i in full_ids]
        figures.save_figure(figures.sample_masks(samples), outputs["samples"])
    if "overlays" in outputs:  # classic U-Net Figure 1: filled boundary overlays
        samples = [(i[:16], store[i].image, store[i].instances) for i in full_ids]
        figures.save_figure(figures.filled_overlays(samples), outputs["overlays"])
    first_test = shown_runs(runs)[0]["predictions"]
    if "confidence_map" in outputs:  # residual U-Net Figure 5: the probability map
        rows = [(i[:16], store[i].image, read_probability(first_test, i), store[i].mask) for i in full_ids]
        figures.save_figure(figures.confidence_maps(rows, threshold), outputs["confidence_map"])
    if "train_predictions" in outputs:  # residual U-Net Figure 4: predictions on training images
        path = train_predictions[0]
        train_ids = prediction_ids(path)[: max(1, len(full_ids))]
        rows = [
            (i[:16], store[i].image, read_probability(path, i) > threshold, store[i].mask.astype(bool))
            for i in train_ids
        ]
        figures.save_figure(figures.prediction_grid(rows), outputs["train_predictions"])
    image_keys = sorted(key for key in outputs if key.startswith("image_"))
    if image_keys:  # classic U-Net Figures 3-5: the paper's named images, else the first test images
        test_ids = prediction_ids(first_test)
        named_present = [i for i in named if i in test_ids]
        fallback = [i for i in test_ids if i not in named_present]
        for n, key in enumerate(image_keys):
            paper_id = named[n] if n < len(named) else None
            if paper_id in named_present:
                image_id, note = paper_id, "the paper's image"
            else:
                image_id = fallback.pop(0) if fallback else test_ids[n % len(test_ids)]
                note = "not in the test split: shown instead" if paper_id else "test image"
            sample = store[image_id]
            title = f"{image_id[:16]} ({note})"
            rows = [(title, sample.image, read_probability(first_test, image_id) > threshold, sample.mask.astype(bool))]
            figures.save_figure(figures.prediction_grid(rows), outputs[key])


def prediction_ids(path: str) -> list[str]:
    """The image ids in a predictions file, sorted."""
    import h5py

    with h5py.File(path, "r") as handle:
        return sorted(handle.keys())


def save_inference_time(per_image: pd.DataFrame, path) -> None:
    """Per-image inference time of every model on the last evaluated split (warm-up excluded)."""
    from nucleiflow.reporting import figures  # matplotlib + seaborn (~1 s): not in the table jobs

    figures.use_style()
    last = per_image[(per_image["subset"] == per_image["subset"].iloc[-1]) & ~per_image["warmup"]]
    figures.save_figure(figures.distribution_by_model(last, "seconds", "Inference time per image (s)"), path)


def compare_experiments(per_image: pd.DataFrame, metrics) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Across experiments (e.g. one model trained per split): summary and table, mean ± std over images."""
    summary = summarize(per_image, ["experiment", "model"], metrics=list(metrics))
    table = tables.metrics_table(summary, metrics, label_cols=["experiment", "model"])
    return summary, table.rename(columns={"experiment": "Experiment", "model": "Model"})
