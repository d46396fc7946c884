"""The model card of an exported package (its README.md), and the card as HTML for the workflow report.

Sections: what the model does and its outputs, training data and split, training (epochs, size,
resolution), the test-split metrics with the command that produced them (and, where the experiment
evaluates on other datasets, those scores as known limits), the post-processing, intended use,
known limits and licences.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from nucleiflow.config import ModelSpec
from nucleiflow.segmentation.training.heads import layout_of

# What each output channel holds, per training target (`heads.probabilities`).
CHANNEL_NAMES = {
    "binary": ("nucleus",),
    "contour": ("background", "interior", "boundary"),
    "hv": ("nucleus", "horizontal_distance", "vertical_distance"),
}
CHANNEL_MEANING = {
    "binary": "nucleus probability (sigmoid)",
    "contour": "background / nucleus interior / nucleus boundary probabilities (softmax over the three)",
    "hv": (
        "nucleus probability (sigmoid), then each nucleus pixel's horizontal and vertical distance to its "
        "nucleus' centre of mass, scaled to -1..1 per nucleus (HoVer-Net's maps)"
    ),
}

# Test-split columns of the per-image evaluation table the card reports (present ones only), as named there.
CARD_METRICS = ("dice", "iou", "aji", "pq", "dq", "sq", "map", "bpq", "mpq")
# What the card says about the data a dataset format holds: imaging, resolution, licence of the release.
DATASET_NOTES = {
    "pannuke": (
        "H&E-stained tissue patches of 19 tissue types, 256 x 256 px at 40x (about 0.25 um per pixel); "
        "licence of the release: CC BY-NC-SA 4.0, so models trained on it may not be used commercially"
    ),
    "dsb2018": (
        "the 2018 Data Science Bowl stage-1 training images: mostly fluorescence (DAPI/Hoechst) nuclei, "
        "some brightfield and H&E, many magnifications and sizes, no common pixel size; licence: CC0"
    ),
    "image_folders": "your own images (PNG/TIFF) converted by the workflow; their licence is yours to state",
}
LIMITS = (
    "Trained and tested on one dataset's split only: expect lower scores on other stains, modalities, "
    "magnifications or scanners (see the cross-dataset scores where the experiment measures them).",
    "The input must be 8-bit RGB at the training resolution; other images must be scaled to 8 bit first "
    "(the workflow stretches 16-bit images from their 0.5th to 99.5th percentile).",
    "The outputs are maps, not nuclei: nuclei come from the watershed with the settings of postprocess.json "
    "(the workflow and nucleiflow.export.load.load_predictor apply it; other tools need their own watershed).",
    "Not a medical device; research use only.",
)


def metric_summary(per_image: pd.DataFrame) -> dict:
    """Mean of each `CARD_METRICS` column over the images that have it, and the image count."""
    means = {
        col: float(per_image[col].mean()) for col in CARD_METRICS if col in per_image and per_image[col].notna().any()
    }
    return {"images": int(len(per_image)), **means}


def _metrics_table(rows: dict[str, dict]) -> list[str]:
    columns = [c for c in ("images", *CARD_METRICS) if any(c in row for row in rows.values())]
    lines = ["| tested on | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in rows.items():
        cells = [str(row[c]) if c == "images" else (f"{row[c]:.3f}" if c in row else "") for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def model_card(
    spec: ModelSpec | dict,
    *,
    training: dict,
    evaluation: dict | None,
    postprocess: dict,
    channels,
    test_image: str,
    n_nuclei: int,
    settings: dict,
) -> str:
    """The package's README.md (Markdown)."""
    spec = ModelSpec.from_dict(spec)
    t = spec.training
    layout = layout_of(t)
    data_format = settings.get("dataset_format", spec.dataset)
    model = spec.arch + (f" / {spec.encoder}" if spec.encoder != "none" else "")
    images = training["images"]
    lines = [
        f"# {spec.experiment}: {model} ({spec.reg}), nuclei segmentation",
        "",
        f"A {layout.target} segmentation model{' with a nucleus-type head' if layout.type_classes else ''}, "
        f"trained by the nucleiflow workflow (experiment `{spec.experiment}`). Input: an 8-bit RGB image; output: "
        f"{len(channels)} map{'s' if len(channels) > 1 else ''} ({', '.join(channels)}): "
        f"{CHANNEL_MEANING[layout.target]}"
        + (
            "; then the type head's class probabilities (softmax over background and the nucleus types)"
            if layout.type_classes
            else ""
        )
        + ". Nuclei come from these maps by the watershed of `postprocess.json`.",
        "",
        "## Training data and split",
        "",
        f"- Dataset `{spec.dataset}` ({training['dataset']} store): "
        f"{DATASET_NOTES.get(data_format, 'see the workflow config')}.",
        f"- Split `{spec.split}`: {images['train']} training, {images['val']} validation, {images['test']} test images "
        f"(seed {spec.seed}); augmentation `{spec.augmentation or 'none'}`.",
        "",
        "## Training",
        "",
        f"- Architecture `{spec.arch}`, encoder `{spec.encoder}` "
        f"(weights: {t.get('encoder_weights') or 'none, from scratch'}), "
        f"regularization `{spec.reg}`: {spec.regularization}.",
        f"- Epochs: {training['epochs_run']} run of {training['epochs_configured']} configured"
        + (f", best epoch {training['best_epoch']} (validation Dice)" if training.get("best_epoch") else "")
        + f"; loss `{t['loss']}`, learning rate {t['lr']}, batch {t['batch_size']}"
        + (f"; {training['parameters']:,} parameters" if training.get("parameters") else "")
        + (f"; trained on {training['device']}" if training.get("device") else "")
        + ".",
        f"- Resolution: inputs of {t['input_size']} x {t['input_size']} px, size policy `{t['size_policy']}` "
        + (
            "(whole images resized to that size; resize yours the same way)"
            if t["size_policy"] == "resize"
            else "(native-scale tiles of that size; tile yours at the training data's pixel size)"
        )
        + (
            f"; training images at {settings['microns_per_pixel']:g} um per pixel (the slide stage reads slides at it)"
            if settings.get("microns_per_pixel")
            else "; the training images record no pixel size"
        )
        + f"; input scaling `{t.get('input_scaling', 'imagenet')}`"
        + (
            f"; Gaussian pre-filter sigma {t['prefilter_sigma']} px (inside the network)"
            if t.get("prefilter_sigma")
            else ""
        )
        + ".",
        "",
        "## Test-split metrics",
        "",
    ]
    if evaluation and evaluation.get("path") and Path(evaluation["path"]).exists():
        rows = {f"{spec.dataset} ({spec.split}/test)": metric_summary(pd.read_csv(evaluation["path"]))}
        for name, path in (evaluation.get("cross") or {}).items():
            if Path(path).exists():
                rows[name] = metric_summary(pd.read_csv(path))
        lines += _metrics_table(rows)
        lines += [
            "",
            "Means over the images (pixel Dice and IoU, AJI, PQ = DQ x SQ, DSB2018 mAP"
            + (", PanNuke bPQ/mPQ" if "bpq" in next(iter(rows.values())) else "")
            + "), nuclei from the tuned or fixed watershed. Produced by:",
            "",
            "```",
            evaluation.get("command", ""),
            "```",
        ]
        if len(rows) > 1:
            first = next(iter(rows.values()))
            for name, row in list(rows.items())[1:]:
                for metric in ("pq", "dice"):
                    if metric in row and metric in first:
                        lines += [
                            "",
                            f"Trained on {spec.dataset}; on {name} {metric.upper() if metric == 'pq' else 'Dice'} "
                            f"{'drops' if row[metric] < first[metric] else 'changes'} from {first[metric]:.3f} "
                            f"to {row[metric]:.3f}.",
                        ]
                        break
    else:
        lines.append("The experiment does not evaluate its test split (`evaluate_splits`); no test metrics.")
    params = ", ".join(f"{k} {v}" for k, v in sorted(postprocess["params"].items()))
    lines += [
        "",
        "## Post-processing",
        "",
        f"`postprocess.json`: {postprocess['source']}"
        + (f" (mean validation PQ {postprocess['mean_pq']:.3f})" if "mean_pq" in postprocess else "")
        + f"; test-time augmentation `{postprocess['tta']}`; settings: {params}.",
        f"The cover shows test image `{test_image}` and its {n_nuclei} predicted nuclei outlined.",
        "",
        "## Intended use",
        "",
        "Research on nuclei in microscopy images like the training data: segmenting nuclei, counting them and "
        "measuring their morphology, and reproducing the workflow's studies. Run it with bioimageio.core, "
        "deepImageJ, QuPath, ilastik or napari (the maps), or with the workflow (`inference:` with this package "
        "as `model:`, or `nucleiflow.export.load.load_predictor`), which adds the post-processing.",
        "",
        "## Known limits",
        "",
        *[f"- {limit}" for limit in LIMITS],
        "",
        "## Licence",
        "",
        f"Weights: {settings.get('license') or 'CC-BY-4.0'}. The training data's own licence applies to what is "
        "derived from it (see above); the workflow's code is under its LICENSE.",
        "",
    ]
    return "\n".join(lines)


def render_html(markdown_text: str, cover_uri: str | None = None) -> str:
    """A standalone HTML page of the card (the report shows it), the cover embedded on top."""
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables", "fenced_code"])
    cover = f'<p><img src="{html.escape(cover_uri)}" alt="cover" style="max-width:100%"></p>' if cover_uri else ""
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>model card</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>"
        f"{cover}{body}</body></html>\n"
    )
