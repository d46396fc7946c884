"""segmentation-models-pytorch U-Net and DeepLabV3+ with the PanNuke study's added layers.

smp builds the encoder and decoder; its segmentation head is then replaced by a
`RegularisedHead`: `extra_blocks` double-conv blocks at the decoder's output
width, Dropout2d and a fresh 1x1 classifier. smp's own up-sampling (x4 for
DeepLabV3+, whose decoder stops at 1/4 resolution) is kept after the classifier,
so output size == input size. The model returns logits.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
from torch import nn

from nucleiflow.errors import ConfigError
from nucleiflow.models.blocks import RegularisedHead


def _with_regularised_head(
    model: smp.base.SegmentationModel, classes: int, extra_blocks: int, dropout: float
) -> smp.base.SegmentationModel:
    """Swap smp's head (conv -> upsampling -> activation) for a RegularisedHead."""
    old_conv, old_upsampling = model.segmentation_head[0], model.segmentation_head[1]
    model.segmentation_head = RegularisedHead(
        old_conv.in_channels, classes, extra_blocks=extra_blocks, dropout=dropout, upsampling=old_upsampling
    )
    return model


def _decoder_stages(model: smp.base.SegmentationModel) -> list[nn.Module]:
    """The decoder stages whose outputs get dropout: U-Net's up-sampling blocks, DeepLabV3+'s ASPP and fusion."""
    if isinstance(model, smp.Unet):
        return list(model.decoder.blocks)
    return [model.decoder.aspp, model.decoder.block2]


def decoder_dropout_rates(rate: float | list[float] | tuple[float, ...], n_stages: int) -> list[float]:
    """The dropout rate of each decoder stage, deepest (lowest resolution) first.

    `rate` is one rate for every stage, or `[rate, deeper_rate]`: the PanNuke study's U-Net/ResNet-50 uses 0.2
    in the decoder and 0.5 "in deeper layers of the decoder" (Section 3.1). The paper does not say which
    stages are the deeper ones; here they are the deeper half, `n_stages // 2` stages (U-Net: the 2 of 5
    blocks at 1/16 and 1/8 resolution; DeepLabV3+: the ASPP module of its 2 stages).
    """
    if isinstance(rate, (list, tuple)):
        if len(rate) != 2:
            raise ConfigError(f"decoder_dropout: {list(rate)!r} is not valid; use a rate or [rate, deeper rate]")
        shallow, deep = (float(r) for r in rate)
    else:
        shallow = deep = float(rate)
    for value in (shallow, deep):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"decoder_dropout: {value!r} is not valid; use a probability in [0, 1)")
    n_deep = n_stages // 2 if shallow != deep else n_stages
    return [deep] * n_deep + [shallow] * (n_stages - n_deep)


def _add_decoder_dropout(model: smp.base.SegmentationModel, rate) -> smp.base.SegmentationModel:
    """Dropout2d on the output of every decoder stage (the PanNuke study's 0.2, and 0.5 deeper, in the decoder).

    Stage i's Dropout2d is `model.decoder_dropout[i]`, applied by a forward hook:
    smp's decoder code stays untouched (the modules live on the model, not in
    the stages, some of which are nn.Sequential and would run them twice),
    train()/eval() switch them like any other layer, and dropout has no
    weights, so checkpoints are unaffected.
    """
    stages = _decoder_stages(model)
    rates = decoder_dropout_rates(rate, len(stages))
    if not any(rates):
        return model
    model.decoder_dropout = nn.ModuleList(nn.Dropout2d(r) for r in rates)
    for stage, dropout in zip(stages, model.decoder_dropout):
        stage.register_forward_hook(lambda _module, _inputs, output, dropout=dropout: dropout(output))
    return model


def _smp_builder(smp_class: type[smp.base.SegmentationModel]):
    """Builder for one smp architecture with the regularised head."""

    def build(
        *,
        encoder: str,
        encoder_weights: str | None = None,
        in_channels: int = 3,
        classes: int = 1,
        dropout: float = 0.0,
        extra_blocks: int = 0,
        decoder_dropout: float | list[float] = 0.0,
        **smp_kwargs,
    ) -> nn.Module:
        if "activation" in smp_kwargs:
            # The loss applies the sigmoid; a built-in activation would apply it twice.
            raise ConfigError("activation: models return logits; apply torch.sigmoid at inference instead")
        model = smp_class(
            encoder_name=encoder,
            encoder_weights=encoder_weights,
            in_channels=in_channels,
            classes=classes,
            **smp_kwargs,
        )
        return _add_decoder_dropout(_with_regularised_head(model, classes, extra_blocks, dropout), decoder_dropout)

    build.__name__ = f"build_{smp_class.__name__.lower()}"
    build.__doc__ = f"smp.{smp_class.__name__} with the regularised head (extra blocks, dropout, 1x1 conv); logits."
    return build


build_unet = _smp_builder(smp.Unet)
build_deeplabv3plus = _smp_builder(smp.DeepLabV3Plus)
