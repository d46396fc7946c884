"""Summaries of predicted image sets and of cross-dataset evaluations: tables and figures.

Torch-free, so the report-side rules (`inference_summary`, `cross_dataset`) run in the
plotting environment; `nucleiflow.segmentation.inference.predict` produces what these read.
"""

from __future__ import annotations

import pandas as pd

PER_MEGAPIXEL = 1e6

# ---------------------------------------------------------------- the image set's summary


def summary_table(images: pd.DataFrame, nuclei: pd.DataFrame) -> pd.DataFrame:
    """Per image and for all images: nucleus count, density (per megapixel) and area distribution (pixels).

    With a type head's `type_name` column, the fraction of nuclei of each type follows (`fraction_<type>`).
    """
    rows = [_summary_row(str(row.image_id), images.loc[[i]], nuclei) for i, row in images.iterrows()]
    rows.append(_summary_row("all images", images, nuclei))
    table = pd.DataFrame(rows)
    if "type_name" in nuclei.columns:
        for name in sorted(nuclei["type_name"].dropna().astype(str).unique()):
            table[f"fraction_{name}"] = [
                _type_fraction(nuclei, images.loc[[i], "image_id"], name) for i in images.index
            ] + [_type_fraction(nuclei, images["image_id"], name)]
    return table


def _type_fraction(nuclei: pd.DataFrame, image_ids: pd.Series, name: str) -> float:
    rows = nuclei.loc[nuclei["image_id"].isin(image_ids), "type_name"].astype(str)
    return float((rows == name).mean()) if len(rows) else float("nan")


def _summary_row(name: str, images: pd.DataFrame, nuclei: pd.DataFrame) -> dict:
    areas = nuclei.loc[nuclei["image_id"].isin(images["image_id"]), "area"].astype(float)
    pixels = float((images["height"] * images["width"]).sum())
    stats = areas.describe(percentiles=[0.1, 0.5, 0.9]) if len(areas) else None
    return {
        "image": name,
        "images": len(images),
        "nuclei": int(len(areas)),
        "density_per_mpx": len(areas) / pixels * PER_MEGAPIXEL if pixels else float("nan"),
        "foreground_fraction": float(
            (images["foreground_fraction"] * images["height"] * images["width"]).sum() / pixels
        )
        if pixels
        else float("nan"),
        "area_mean": float(stats["mean"]) if stats is not None else float("nan"),
        "area_std": float(stats["std"]) if stats is not None and len(areas) > 1 else float("nan"),
        "area_p10": float(stats["10%"]) if stats is not None else float("nan"),
        "area_median": float(stats["50%"]) if stats is not None else float("nan"),
        "area_p90": float(stats["90%"]) if stats is not None else float("nan"),
    }


def summary_figure(images: pd.DataFrame, nuclei: pd.DataFrame, title: str = ""):
    """Two panels: nucleus area histogram, nuclei per image."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from nucleiflow.reporting.figures import use_style

    use_style()
    fig, axes = plt.subplots(1, 2, figsize=(8.0, 3.0), layout="constrained")
    if len(nuclei):
        sns.histplot(nuclei["area"].astype(float), bins=30, ax=axes[0], color=sns.color_palette()[0])
    axes[0].set(xlabel="nucleus area (pixels)", ylabel="nuclei", title="Nucleus area")
    counts = images["n_nuclei"].astype(int)
    sns.histplot(counts, discrete=counts.nunique() < 30, ax=axes[1], color=sns.color_palette()[1])
    axes[1].set(xlabel="nuclei per image", ylabel="images", title=f"Nuclei per image (n = {len(images)})")
    if title:
        fig.suptitle(title)
    return fig


CROSS_METRICS = ("dice", "iou", "aji", "pq", "map")


def cross_dataset_table(runs: list[dict]) -> pd.DataFrame:
    """One row per (model, tested-on) pair: mean and std of CROSS_METRICS; `runs` hold model,
    trained_on, tested_on and per_image (a per-image frame)."""
    rows = []
    for run in runs:
        frame = run["per_image"]
        row = {"model": run["model"], "trained_on": run["trained_on"], "tested_on": run["tested_on"]}
        row["images"] = len(frame)
        for metric in CROSS_METRICS:
            row[metric] = float(frame[metric].mean())
            row[f"{metric}_std"] = float(frame[metric].std(ddof=1)) if len(frame) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def cross_dataset_figure(runs: list[dict], metrics=("dice", "aji", "pq")):
    """Bars (mean, sd error bars) of each metric by tested-on dataset, one colour per model."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from nucleiflow.reporting.figures import model_palette, use_style

    use_style()
    frames = [run["per_image"][list(metrics)].assign(model=run["model"], tested_on=run["tested_on"]) for run in runs]
    data = pd.concat(frames, ignore_index=True).melt(id_vars=["model", "tested_on"], var_name="metric")
    order = list(dict.fromkeys(run["tested_on"] for run in runs))
    palette = model_palette(dict.fromkeys(run["model"] for run in runs))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3.2), layout="constrained", squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sns.barplot(
            data=data[data["metric"] == metric],
            x="tested_on",
            y="value",
            hue="model",
            order=order,
            palette=palette,
            errorbar="sd",
            ax=ax,
            legend=ax is axes[0][-1],
        )
        ax.set(xlabel="tested on", ylabel=metric.upper() if len(metric) <= 3 else metric.title(), ylim=(0, 1))
        ax.tick_params(axis="x", labelrotation=20)
    if axes[0][-1].get_legend() is not None:
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), title="model")
    trained = ", ".join(dict.fromkeys(run["trained_on"] for run in runs))
    fig.suptitle(f"Trained on {trained}, tested on other datasets")
    return fig
