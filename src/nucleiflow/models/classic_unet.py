"""The third study's classic U-Net (Ronneberger-style, with BatchNorm), 256x256 inputs.

Filters 64-128-256-512-1024; each level is two (conv 3x3 + BatchNorm + ReLU);
2x2 max-pool down; ConvTranspose2d(2x2, stride 2) up; skip concatenation; 1x1 head.

Parameter count (3 input channels, 1 class): 31,043,521 trainable parameters plus
11,776 BatchNorm running statistics = 31,055,297, exactly the published Keras
summary. That match requires Keras's defaults: a bias in every convolution (even
before BatchNorm), in the transposed convolutions and in the head.

The model returns logits; the study's sigmoid output layer is applied by the
caller at inference time (`torch.sigmoid(model(x))`), because the training loss
applies the sigmoid itself for numerical stability.
"""

from __future__ import annotations

import torch
from torch import nn

from nucleiflow.models.blocks import DoubleConv, RegularisedHead, UNetSkeleton

CLASSIC_UNET_FILTERS = (64, 128, 256, 512, 1024)


class UpConcat(nn.Module):
    """ConvTranspose2d 2x2/2 halving the width, concat the skip, DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = DoubleConv(2 * out_channels, out_channels, conv_bias=True)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


def build_classic_unet(
    *,
    in_channels: int = 3,
    classes: int = 1,
    dropout: float = 0.0,
    extra_blocks: int = 0,
    filters: tuple[int, ...] = CLASSIC_UNET_FILTERS,
) -> UNetSkeleton:
    """Classic U-Net; with the defaults it has exactly the study's 31,043,521 trainable parameters."""
    *level_widths, bridge_width = filters
    input_widths = [in_channels, *level_widths[:-1]]
    down_blocks = [DoubleConv(cin, cout, conv_bias=True) for cin, cout in zip(input_widths, level_widths)]
    decoder_inputs = [bridge_width, *level_widths[:0:-1]]
    up_blocks = [UpConcat(cin, cout) for cin, cout in zip(decoder_inputs, reversed(level_widths))]
    head = RegularisedHead(level_widths[0], classes, extra_blocks=extra_blocks, dropout=dropout)
    return UNetSkeleton(down_blocks, DoubleConv(level_widths[-1], bridge_width, conv_bias=True), up_blocks, head)
