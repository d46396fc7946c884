"""Which trained cells the explain stage runs on, and its settings per cell.

`segmentation.<exp>.explain` (schema: `explain`) selects the cells (`models`:
labels `arch/encoder/reg`, default all), the images (`images`: ids, taking
precedence over `n` seeded from the test split), the Grad-CAM and filter layers (module paths, one
for every model or one per architecture; defaults in `DEFAULT_LAYERS`), the
explained target (`predicted` or `truth` nuclei) and the zennit LRP composite.
"""

from __future__ import annotations

from nucleiflow.catalog import LRP_COMPOSITES, NO_ENCODER
from nucleiflow.config import ModelCell
from nucleiflow.errors import choices_error
from nucleiflow.paths import EXPLAIN_DIR, EXPLAIN_TABLE
from nucleiflow.workflow.cells import segmentation_cells

DEFAULT_IMAGES = 3
DEFAULT_MAX_FILTERS = 64

# Grad-CAM: the last decoder level (the residual U-Net study, Section 6.1: "the final convolutional layer"
# block before the 1-channel classifier). Filters: the study's Figure 2 shows its 13th convolution layer,
# which is the residual U-Net's bridge (`bridge.0.0`) and the classic U-Net's `up_blocks.1.conv.0.0`; the
# smp models show their encoder's first convolution (RGB kernels).
DEFAULT_LAYERS = {
    "resunet": {"gradcam": "up_blocks.3", "filters": "bridge.0.0"},
    "classic_unet": {"gradcam": "up_blocks.3", "filters": "up_blocks.1.conv.0.0"},
    "unet": {"gradcam": "decoder.blocks.4", "filters": "encoder.conv1"},
    "deeplabv3plus": {"gradcam": "decoder.block2", "filters": "encoder.conv1"},
}
SMP_STEM = {"efficientnet": "encoder._conv_stem"}  # encoder family -> its first convolution


def explain_cells(config: dict, experiment: str | None = None) -> list[ModelCell]:
    """The trained cells with an explain job, in config order (experiments without `explain` have none)."""
    cells = []
    for name, exp in config.get("segmentation", {}).items():
        explain = exp.get("explain")
        if (experiment is not None and name != experiment) or not explain or not explain.get("enabled", True):
            continue
        selected = explain.get("models")
        cells += [cell for cell in segmentation_cells(config, name) if selected is None or cell.label in selected]
    return cells


def explain_targets(config: dict) -> list[str]:
    """The LRP table of every explained cell (the explain job writes the figures beside it)."""
    return [f"{EXPLAIN_DIR}/{EXPLAIN_TABLE}.csv".format(**cell.wildcards) for cell in explain_cells(config)]


def check_explain(config: dict) -> None:
    """ConfigError for a `models` label that is not a cell of its experiment, or a per-arch layer of another arch."""
    for name, exp in config.get("segmentation", {}).items():
        explain = exp.get("explain")
        if not explain or not explain.get("enabled", True):
            continue
        key = f"segmentation.{name}.explain"
        labels = [cell.label for cell in segmentation_cells(config, name)]
        for label in explain.get("models") or []:
            if label not in labels:
                raise choices_error(f"{key}.models", label, labels)
        archs = {cell.arch for cell in segmentation_cells(config, name)}
        for option in ("gradcam_layer", "filter_layer"):
            layers = explain.get(option)
            if isinstance(layers, dict):
                for arch in layers:
                    if arch not in archs:
                        raise choices_error(f"{key}.{option} (architecture)", arch, archs)


def _layer(explain: dict, option: str, kind: str, arch: str, encoder: str) -> str:
    value = explain.get(option)
    if isinstance(value, dict):
        value = value.get(arch)
    if value:
        return value
    default = DEFAULT_LAYERS[arch][kind]
    if kind == "filters" and encoder != NO_ENCODER:
        default = next((stem for family, stem in SMP_STEM.items() if encoder.startswith(family)), default)
    return default


def explain_settings(config: dict, experiment: str, arch: str, encoder: str) -> dict:
    """The resolved settings of one cell's explain job (a plain dict, for Snakemake params)."""
    explain = config["segmentation"][experiment].get("explain") or {}
    return {
        "images": list(explain["images"]) if explain.get("images") else None,
        "n": int(explain.get("n", DEFAULT_IMAGES)),
        "seed": int(config["seed"]),
        "target": explain.get("target", "predicted"),
        "gradcam_layer": _layer(explain, "gradcam_layer", "gradcam", arch, encoder),
        "filter_layer": _layer(explain, "filter_layer", "filters", arch, encoder),
        "composite": explain.get("composite", LRP_COMPOSITES[0]),
        "max_filters": int(explain.get("max_filters", DEFAULT_MAX_FILTERS)),
    }
