"""Explanations of a trained segmentation model: filters, Grad-CAM and LRP (residual U-Net study, Section 6).

* Filters (the study's Figure 2): the kernels of one named convolution as a grid.
* Grad-CAM (Figure 6): captum's `LayerGradCam` on a named layer. The explained
  score is the model's nucleus logit summed over the pixels it predicts as
  nucleus (`target: truth`: over the ground-truth nuclei), so the map shows
  what makes the model call those pixels nucleus. The nucleus logit is
  `heads.foreground_logit` for every training target (binary: the one output
  channel; contour: log(p_interior + p_boundary) - log(p_background); hv: the
  foreground channel), so a contour or hv model is asked the same question as
  a binary one; `ForegroundLogit` wraps a model to output just that.
* LRP (Figure 7): zennit's composites (default `EpsilonPlusFlat`). Canonizers
  make the graph LRP-ready: BatchNorm is merged into the preceding convolution,
  and every residual addition (our residual U-Net's blocks, torchvision ResNet
  blocks in the smp encoders) is routed through a `Sum` module, so relevance is
  split between the two branches in proportion to their contributions instead
  of being copied to both (the plain gradient of an addition doubles it).
  Concatenated skips need nothing: the gradient of `torch.cat` hands each part
  exactly its own relevance. The initial relevance is the explained score's
  logits, so the relevance summed over the input approximates that score. For
  the contour target the nucleus logit is not linear in the output channels:
  its gradient splits the relevance between them, so the sum is conserved
  only up to that first-order step.

One call of `explain_cell` loads the model once and writes all three figures
and the LRP statistics table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from captum.attr import LayerAttribution, LayerGradCam
from matplotlib.figure import Figure
from scipy import ndimage
from torch import nn
from zennit.attribution import Gradient
from zennit.canonizers import AttributeCanonizer, SequentialMergeBatchNorm
from zennit.composites import COMPOSITES as ZENNIT_COMPOSITES
from zennit.core import Composite
from zennit.layer import Sum
from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer

from nucleiflow.catalog import EXPLAIN_TARGETS as TARGETS
from nucleiflow.catalog import LRP_COMPOSITES as COMPOSITES
from nucleiflow.config import ModelSpec
from nucleiflow.errors import ConfigError, DataFormatError, choices_error
from nucleiflow.io import write_table
from nucleiflow.models.resunet import ResidualBlock, ResidualUp
from nucleiflow.reporting.figures import save_figure, use_style
from nucleiflow.reporting.published import published_table
from nucleiflow.segmentation.inference.predictor import Predictor
from nucleiflow.segmentation.training.data import split_ids
from nucleiflow.segmentation.training.heads import BINARY, OutputLayout, foreground, foreground_logit, probabilities
from nucleiflow.store import Store

log = logging.getLogger(__name__)

CONV_LAYERS = (nn.Conv2d, nn.ConvTranspose2d)
POSITIVE_FRACTION = 0.01  # "positively contributing": relevance above 1 % of the image's largest |relevance|
PUBLISHED_STUDY, PUBLISHED_TABLE = "resunet_dsb2018", "lrp"
STAT_COLUMNS = (
    "mean_relevance_nuclear_regions",
    "positive_relevance_pixels",
    "positive_relevance_regions",
    "confidence_score",
    "nucleus_pixels",
    "explained_score",
    "relevance_sum",
)
PAPER_COLUMN = {  # published quantity -> our column
    "mean_relevance_nuclear_regions": "mean_relevance_nuclear_regions",
    "positively_contributing_regions": "positive_relevance_regions",
    "confidence_score": "confidence_score",
}


# ---------------------------------------------------------------- layers and canonizers


def named_layer(model: nn.Module, name: str, option: str, kinds: tuple[type, ...] | None = None) -> nn.Module:
    """The sub-module at module path `name`; a one-line ConfigError listing the valid paths otherwise."""
    modules = dict(model.named_modules())
    valid = [path for path, module in modules.items() if path and (kinds is None or isinstance(module, kinds))]
    if name not in valid:
        what = "convolution" if kinds else "layer"
        raise ConfigError(f"explain.{option}: {name!r} is not a {what} of this model; valid: {', '.join(valid)}")
    return modules[name]


def _stacked_sum(module: nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return module.canonizer_sum(torch.stack([a, b], dim=-1))


class ResidualSumCanonizer(AttributeCanonizer):
    """Route the residual U-Net's `body(x) + shortcut(x)` through a zennit `Sum` (relevance split, not copied)."""

    def __init__(self):
        super().__init__(self._attribute_map)

    def copy(self):
        return self.__class__()

    @classmethod
    def _attribute_map(cls, name, module):
        if isinstance(module, ResidualBlock):
            return {"forward": cls._block_forward.__get__(module), "canonizer_sum": Sum()}
        if isinstance(module, ResidualUp):
            return {"forward": cls._up_forward.__get__(module), "canonizer_sum": Sum()}
        return None

    @staticmethod
    def _block_forward(self, x):
        return self.relu(_stacked_sum(self, self.body(x), self.shortcut(x)))

    @staticmethod
    def _up_forward(self, x, skip):
        up = self.up(x)
        return self.relu(_stacked_sum(self, self.body(torch.cat([up, skip], dim=1)), up))


def canonizers() -> list:
    """BatchNorm merging plus explicit sums for every residual block type the model zoo uses."""
    return [
        SequentialMergeBatchNorm(),
        ResidualSumCanonizer(),
        ResNetBottleneckCanonizer(),
        ResNetBasicBlockCanonizer(),
    ]


def prepare_for_attribution(model: nn.Module) -> nn.Module:
    """Evaluation mode, no in-place operations (hooks must see the tensors they were given), no stored grads."""
    model.eval()
    for module in model.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


# ---------------------------------------------------------------- attributions


class ForegroundLogit(nn.Module):
    """`model` with one output channel, its nucleus logit (`heads.foreground_logit`): what the explanations explain.

    For a binary model this is the model's own output, so its explanations are unchanged.
    """

    def __init__(self, model: nn.Module, layout: OutputLayout = BINARY):
        super().__init__()
        self.model = model
        self.layout = layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return foreground_logit(self.model(x), self.layout).unsqueeze(1)


def target_mask(
    model: nn.Module,
    x: torch.Tensor,
    truth: torch.Tensor | None = None,
    threshold: float = 0.5,
    layout: OutputLayout = BINARY,
):
    """(logits, probability, mask): the nucleus probability (N, 1, H, W) and the explained pixels (N, 1, H, W).

    The explained pixels are the predicted nuclei (probability above `threshold`), or `truth` if given.
    """
    with torch.no_grad():
        logits = model(x)
    prob = foreground(probabilities(logits, layout), layout).unsqueeze(1)
    mask = (prob > threshold).float() if truth is None else truth.float().reshape(prob.shape)
    return logits, prob, mask


def gradcam(model: nn.Module, x: torch.Tensor, mask: torch.Tensor, layer: nn.Module) -> np.ndarray:
    """Grad-CAM (N, H, W) of the logit summed over `mask`, from `layer`, up-sampled to the input size."""

    def score(inputs: torch.Tensor) -> torch.Tensor:
        return (model(inputs) * mask).flatten(1).sum(1)

    with torch.enable_grad():
        attribution = LayerGradCam(score, layer).attribute(x, relu_attributions=True)
    attribution = LayerAttribution.interpolate(attribution.detach(), tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return attribution[:, 0].numpy()


def lrp(model: nn.Module, x: torch.Tensor, mask: torch.Tensor, composite: str | Composite = COMPOSITES[0]):
    """LRP relevance (N, H, W) (summed over colour channels) of the logits on `mask`, and the explained score (N,).

    `composite` names a zennit composite (with `canonizers()`), or is a ready zennit `Composite`.
    """
    if isinstance(composite, Composite):
        rules = composite
    elif composite in COMPOSITES:
        rules = ZENNIT_COMPOSITES[composite](canonizers=canonizers())
    else:
        raise choices_error("explain.composite", composite, COMPOSITES)
    inputs = x.detach().clone().requires_grad_(True)
    with torch.enable_grad(), Gradient(model=model, composite=rules) as attributor:
        output, relevance = attributor(inputs, lambda y: y * mask)
    explained = (output.detach() * mask).flatten(1).sum(1)
    return relevance.detach().sum(1).numpy(), explained.numpy()


def lrp_statistics(relevance: np.ndarray, nuclei: np.ndarray, prob: np.ndarray) -> dict:
    """The study's Section 6.2 statistics of one image (relevance scaled to max |R| = 1) and the conservation sums."""
    scale = float(np.abs(relevance).max()) or 1.0
    scaled = relevance / scale
    positive = scaled > POSITIVE_FRACTION
    _, regions = ndimage.label(positive, structure=np.ones((3, 3)))
    nuclei = nuclei.astype(bool)
    return {
        "mean_relevance_nuclear_regions": float(scaled[nuclei].mean()) if nuclei.any() else float("nan"),
        "positive_relevance_pixels": int(positive.sum()),
        "positive_relevance_regions": int(regions),
        "confidence_score": float(prob[nuclei].mean()) if nuclei.any() else float("nan"),
        "nucleus_pixels": int(nuclei.sum()),
    }


# ---------------------------------------------------------------- images


def choose_images(test_ids: Sequence[str], images: Sequence[str] | None, n: int, seed: int) -> list[str]:
    """The configured ids (each must be a test image), or `n` test ids chosen with `seed`, in split order."""
    if images:
        missing = [image for image in images if image not in test_ids]
        if missing:
            shown = ", ".join(list(test_ids)[:10])
            raise ConfigError(f"explain.images: {missing[0]!r} is not a test image; test images include: {shown}")
        return list(images)
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(len(test_ids), size=min(n, len(test_ids)), replace=False).tolist())
    return [image for i, image in enumerate(test_ids) if i in chosen]


# ---------------------------------------------------------------- figures


def filter_figure(layer: nn.Module, title: str, max_filters: int = 64) -> Figure:
    """The kernels of a convolution as a grid (RGB for 3 input channels, else the mean over input channels)."""
    weight = layer.weight.detach().float()
    if isinstance(layer, nn.ConvTranspose2d):
        weight = weight.transpose(0, 1)  # (in, out, kh, kw) -> (out, in, kh, kw)
    weight = weight[:max_filters].numpy()
    n = len(weight)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(1.1 * cols, 1.1 * rows + 0.5))
    axes = fig.subplots(rows, cols, squeeze=False)
    limit = float(np.abs(weight).max()) or 1.0
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        kernel = weight[i]
        if kernel.shape[0] == 3:
            lo, hi = kernel.min(), kernel.max()
            ax.imshow(((kernel - lo) / ((hi - lo) or 1.0)).transpose(1, 2, 0), interpolation="nearest")
        else:
            ax.imshow(kernel.mean(0), cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        ax.set_title(str(i), fontsize=6, pad=1)
    fig.suptitle(title, fontsize=8)
    return fig


def _overlay(ax, image: np.ndarray, heat: np.ndarray, cmap: str, symmetric: bool) -> None:
    ax.imshow(image)
    if symmetric:
        limit = float(np.abs(heat).max()) or 1.0
        ax.imshow(heat, cmap=cmap, vmin=-limit, vmax=limit, alpha=0.55)
    else:
        ax.imshow(heat, cmap=cmap, vmin=0.0, vmax=float(heat.max()) or 1.0, alpha=0.5)


def explanation_figure(
    ids: Sequence[str], images, probs, heats, *, method: str, title: str, cmap: str, symmetric: bool
) -> Figure:
    """One row per image: image, predicted probability, heat-map overlay (the study's Figures 6 and 7)."""
    fig = Figure(figsize=(9.0, 3.0 * len(ids) + 0.4), layout="constrained")
    axes = fig.subplots(len(ids), 3, squeeze=False)
    for row, (image_id, image, prob, heat) in enumerate(zip(ids, images, probs, heats)):
        axes[row, 0].imshow(image)
        # DSB2018 ids are 64-character hashes: the first 12 identify the image and fit above the panel.
        axes[row, 0].set_title(image_id if len(image_id) <= 16 else f"{image_id[:12]}...", fontsize=8)
        shown = axes[row, 1].imshow(prob, cmap="gray", vmin=0.0, vmax=1.0)
        axes[row, 1].set_title("prediction (probability)", fontsize=8)
        fig.colorbar(shown, ax=axes[row, 1], fraction=0.046)
        _overlay(axes[row, 2], image, heat, cmap, symmetric)
        axes[row, 2].set_title(f"{method} overlay", fontsize=8)
        mappable = axes[row, 2].images[-1]
        fig.colorbar(mappable, ax=axes[row, 2], fraction=0.046)
        for ax in axes[row]:
            ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    return fig


# ---------------------------------------------------------------- tables


def statistics_table(per_image: pd.DataFrame) -> pd.DataFrame:
    """Per-image rows, their mean over the set, and the study's published values (Section 6.2)."""
    mean = per_image[list(STAT_COLUMNS)].mean(numeric_only=True).to_dict()
    published = published_table(PUBLISHED_STUDY, PUBLISHED_TABLE).set_index("quantity")["value"]
    paper = {column: float(published[quantity]) for quantity, column in PAPER_COLUMN.items() if quantity in published}
    rows = [*per_image.to_dict("records"), {"image_id": "mean (all images)", **mean}, {"image_id": "paper", **paper}]
    table = pd.DataFrame(rows, columns=["image_id", *STAT_COLUMNS])
    table["conservation"] = table["relevance_sum"] / table["explained_score"]
    return table


# ---------------------------------------------------------------- the job


def explain_cell(
    spec: ModelSpec | dict, model_path, store_path, split_path, settings: dict, outputs: dict, threads: int = 1
) -> pd.DataFrame:
    """Load one trained cell and write its filter, Grad-CAM and LRP figures and the LRP statistics table.

    `settings` is `nucleiflow.workflow.explain.explain_settings`; `outputs` maps `filters`,
    `gradcam`, `lrp` (PNG paths; PDFs beside) and `table` (CSV stem) to paths.
    Explanations run on the CPU in float32. Returns the statistics table.
    """
    spec = ModelSpec.from_dict(spec)
    if settings["target"] not in TARGETS:
        raise choices_error("explain.target", settings["target"], TARGETS)
    # Explanations need the network and its inputs only: no post-processing settings are read.
    predictor = Predictor.from_model_dir(model_path, spec=spec, device="cpu", threads=threads, maps_only=True)
    model = prepare_for_attribution(predictor.model)
    layout, threshold = predictor.config.layout, predictor.config.threshold
    gradcam_layer = named_layer(model, settings["gradcam_layer"], "gradcam_layer")
    filter_layer = named_layer(model, settings["filter_layer"], "filter_layer", CONV_LAYERS)
    explained_model = ForegroundLogit(model, layout)  # the layers above are its sub-modules: hooks still apply

    test_ids = split_ids(pd.read_csv(split_path), "test")
    ids = choose_images(test_ids, settings["images"], settings["n"], settings["seed"])
    samples = [Store(store_path)[image_id] for image_id in ids]
    images, truths, x = predictor.model_inputs([s.image for s in samples], [s.mask for s in samples])
    truth = torch.from_numpy(np.stack(truths)) if settings["target"] == "truth" else None
    _, prob, mask = target_mask(model, x, truth, threshold, layout)
    predicted = prob[:, 0].numpy() > threshold

    started = time.perf_counter()
    cams = gradcam(explained_model, x, mask, gradcam_layer)
    cam_seconds = (time.perf_counter() - started) / len(ids)
    started = time.perf_counter()
    relevance, explained = lrp(explained_model, x, mask, settings["composite"])
    lrp_seconds = (time.perf_counter() - started) / len(ids)
    log.info("%d images: Grad-CAM %.2f s/image, LRP %.2f s/image", len(ids), cam_seconds, lrp_seconds)
    if not np.isfinite(relevance).all():
        raise DataFormatError(f"{model_path}: LRP relevance is not finite")

    label = f"{spec.arch}/{spec.encoder}/{spec.reg}"
    use_style()
    save_figure(
        filter_figure(filter_layer, f"{label}: kernels of {settings['filter_layer']}", settings["max_filters"]),
        outputs["filters"],
    )
    probs = prob[:, 0].numpy()
    title = f"{label} ({spec.experiment}); explained: nucleus logit summed over the {settings['target']} nuclei"
    save_figure(
        explanation_figure(
            ids,
            images,
            probs,
            cams,
            method=f"Grad-CAM ({settings['gradcam_layer']})",
            title=title,
            cmap="jet",
            symmetric=False,
        ),
        outputs["gradcam"],
    )
    save_figure(
        explanation_figure(
            ids,
            images,
            probs,
            relevance,
            method=f"LRP ({settings['composite']})",
            title=title,
            cmap="bwr",
            symmetric=True,
        ),
        outputs["lrp"],
    )
    nuclei = [m.astype(bool) for m in truths] if settings["target"] == "truth" else list(predicted)
    rows = []
    for image_id, rel, nucleus, p, score in zip(ids, relevance, nuclei, probs, explained):
        stats = lrp_statistics(rel, nucleus, p)
        rows.append({"image_id": image_id, **stats, "explained_score": float(score), "relevance_sum": float(rel.sum())})
    table = statistics_table(pd.DataFrame(rows))
    write_table(
        outputs["table"],
        table,
        caption=f"LRP statistics of {label} ({spec.experiment}) beside the residual U-Net study's Section 6.2",
    )
    return table
