"""Model zoo registry: architecture name -> builder, plus size and L2 helpers.

`build_model(arch, encoder, ...)` validates the names against `ARCHITECTURES`
and calls the registered builder. Every model returns logits. The names and
their encoders are `catalog.ARCH_ENCODERS`; this module only adds the builders.

L2 regularisation is implemented as Keras's `kernel_regularizer=l2(weight)`: a
penalty `weight * sum(w ** 2)` that the training loop adds to the loss, not
optimizer weight decay (which would shrink every parameter, biases and
BatchNorm included, and interacts with Adam's scaling). The penalised tensors
are conv kernels only (no biases, no BatchNorm), chosen by `scope`
(`catalog.L2_SCOPES`, config key `regularization.<cell>.l2_scope`):

* ``all_conv``: every conv and transposed-conv kernel of the model, encoder
  included - the PanNuke study's "L2 regularization is implemented in all
  convolutional layers" (Section 3.1).
* ``added_blocks`` (the default): on smp models only the layers the PanNuke study
  adds (extra blocks and the new 1x1 head); the (possibly pretrained) encoder and
  smp's decoder are not penalised. Custom models (resunet, classic_unet) have no
  added layers: there it means all their kernels, as ``all_conv``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import segmentation_models_pytorch as smp
import torch
from torch import nn

from nucleiflow.catalog import ARCH_ENCODERS, L2_SCOPES, NO_ENCODER
from nucleiflow.errors import ConfigError, choices_error
from nucleiflow.models.classic_unet import build_classic_unet
from nucleiflow.models.resunet import build_resunet
from nucleiflow.models.smp_models import build_deeplabv3plus, build_unet

BN_STATISTICS = ("running_mean", "running_var")
CONV_LAYERS = (nn.Conv2d, nn.ConvTranspose2d)


@dataclass(frozen=True)
class ArchSpec:
    """How to build one architecture and which encoders it accepts."""

    builder: Callable[..., nn.Module]
    uses_smp_encoder: bool
    encoders: tuple[str, ...]


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "unet": build_unet,
    "deeplabv3plus": build_deeplabv3plus,
    "resunet": build_resunet,
    "classic_unet": build_classic_unet,
}
# Keyed by the catalog, so a name without a builder fails at import; smp models are those with encoders.
ARCHITECTURES: dict[str, ArchSpec] = {
    arch: ArchSpec(_BUILDERS[arch], uses_smp_encoder=encoders != (NO_ENCODER,), encoders=encoders)
    for arch, encoders in ARCH_ENCODERS.items()
}


def get_spec(arch: str, encoder: str = NO_ENCODER) -> ArchSpec:
    """The ArchSpec of `arch`, after checking that `encoder` is valid for it."""
    if arch not in ARCHITECTURES:
        raise choices_error("arch", arch, ARCHITECTURES)
    spec = ARCHITECTURES[arch]
    if encoder not in spec.encoders:
        raise choices_error(f"encoder (for {arch})", encoder, spec.encoders)
    return spec


def _check_head_options(dropout: float, extra_blocks: int) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout: {dropout!r} is not valid; use a probability in [0, 1)")
    if isinstance(extra_blocks, bool) or not isinstance(extra_blocks, int) or extra_blocks < 0:
        raise ConfigError(f"extra_blocks: {extra_blocks!r} is not valid; use an integer >= 0")


def build_model(
    arch: str,
    encoder: str = NO_ENCODER,
    *,
    dropout: float = 0.0,
    extra_blocks: int = 0,
    in_channels: int = 3,
    classes: int = 1,
    encoder_weights: str | None = None,
    **kwargs,
) -> nn.Module:
    """Build `arch` (with `encoder` for smp architectures; "none" for the custom ones).

    The model maps (N, in_channels, H, W) images to (N, classes, H, W) LOGITS.
    No sigmoid: the loss applies it; at inference use `torch.sigmoid(model(x))`
    (this is also the classic U-Net's sigmoid output layer).
    `extra_blocks` / `dropout` configure the added head (see `RegularisedHead`).
    `encoder_weights` (e.g. "imagenet") is passed to smp; extra `kwargs` go to the builder.
    """
    spec = get_spec(arch, encoder)
    _check_head_options(dropout, extra_blocks)
    common = dict(in_channels=in_channels, classes=classes, dropout=dropout, extra_blocks=extra_blocks, **kwargs)
    if spec.uses_smp_encoder:
        return spec.builder(encoder=encoder, encoder_weights=encoder_weights, **common)
    if encoder_weights is not None:
        raise ConfigError(f"encoder_weights: {arch} has no pretrained encoder; use None (got {encoder_weights!r})")
    return spec.builder(**common)


def _regularised_scope(model: nn.Module, scope: str) -> nn.Module:
    # added_blocks on smp models: only the added head; otherwise everything (module docstring).
    if scope not in L2_SCOPES:
        raise choices_error("regularization.l2_scope", scope, L2_SCOPES)
    if scope == "added_blocks" and isinstance(model, smp.base.SegmentationModel):
        return model.segmentation_head
    return model


def l2_parameters(model: nn.Module, scope: str = "added_blocks") -> list[nn.Parameter]:
    """Conv kernels that the L2 penalty covers under `scope` (weights only; no biases, no BatchNorm)."""
    root = _regularised_scope(model, scope)
    return [module.weight for module in root.modules() if isinstance(module, CONV_LAYERS)]


def l2_penalty(model: nn.Module, weight: float, scope: str = "added_blocks") -> torch.Tensor:
    """`weight * sum(w ** 2)` over `l2_parameters(model, scope)`, like Keras's `l2(weight)`; add it to the loss."""
    squared_norms = [kernel.square().sum() for kernel in l2_parameters(model, scope)]
    return weight * torch.stack(squared_norms).sum()


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Element counts: trainable / non_trainable parameters, BN running statistics, and their total.

    `buffers` counts BatchNorm running mean and variance (Keras's non-trainable
    BN weights), not the `num_batches_tracked` counters.
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    non_trainable = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    buffers = sum(b.numel() for name, b in model.named_buffers() if name.endswith(BN_STATISTICS))
    return {
        "trainable": trainable,
        "non_trainable": non_trainable,
        "buffers": buffers,
        "total": trainable + non_trainable + buffers,
    }


def model_size_mb(model: nn.Module) -> float:
    """Memory of all parameters and buffers, in MiB (2**20 bytes)."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def describe_model(arch: str, encoder: str = NO_ENCODER, **kwargs) -> dict:
    """One row of the model-size table: arch, encoder, parameters (all nn.Parameters), size_mb.

    Also reports `trainable` and `buffers` (BN statistics) so Keras-style totals can be derived.
    """
    model = build_model(arch, encoder, **kwargs)
    counts = count_parameters(model)
    return {
        "arch": arch,
        "encoder": encoder,
        "parameters": counts["trainable"] + counts["non_trainable"],
        "trainable": counts["trainable"],
        "buffers": counts["buffers"],
        "size_mb": round(model_size_mb(model), 2),
    }
