"""Building blocks shared by the architectures.

* `conv_bn_relu` / `DoubleConv`: the (conv 3x3 -> BatchNorm -> ReLU) x 2 unit used
  by every U-Net-style model and by the extra blocks added to the smp models.
* `RegularisedHead`: the layers added after a decoder (extra blocks, dropout,
  1x1 classifier, optional up-sampling). It is the part that `l2_parameters`
  penalises on the smp models.
* `UNetSkeleton`: encoder levels + max-pool, bridge, decoder levels + skips, head;
  the residual and the classic U-Net only differ in which blocks they plug in.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int, *, bias: bool = False) -> nn.Sequential:
    """3x3 'same' convolution -> BatchNorm -> ReLU.

    The bias defaults to off because BatchNorm's shift makes it redundant; the
    classic U-Net turns it on to reproduce its Keras parameter count.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=bias),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DoubleConv(nn.Sequential):
    """(conv 3x3 -> BatchNorm -> ReLU) twice; the first conv sets the width."""

    def __init__(self, in_channels: int, out_channels: int, *, conv_bias: bool = False):
        super().__init__(
            conv_bn_relu(in_channels, out_channels, bias=conv_bias),
            conv_bn_relu(out_channels, out_channels, bias=conv_bias),
        )


class RegularisedHead(nn.Sequential):
    """Layers appended after a decoder: `extra_blocks` x DoubleConv -> Dropout2d -> 1x1 conv.

    Following the PanNuke study, the decoder features pass through extra
    double-conv blocks (same width as the decoder output) before a fresh 1x1
    classifier. One Dropout2d sits right before the classifier, so `dropout`
    acts even with zero extra blocks. `upsampling` restores the input size for
    decoders that stop at a lower resolution (DeepLabV3+ stops at 1/4).
    The output is logits: no activation.
    """

    def __init__(
        self,
        in_channels: int,
        classes: int,
        *,
        extra_blocks: int = 0,
        dropout: float = 0.0,
        upsampling: nn.Module | None = None,
    ):
        blocks = [DoubleConv(in_channels, in_channels) for _ in range(extra_blocks)]
        super().__init__(
            *blocks,
            nn.Dropout2d(p=dropout),
            nn.Conv2d(in_channels, classes, kernel_size=1),
            upsampling if upsampling is not None else nn.Identity(),
        )


class UNetSkeleton(nn.Module):
    """Generic U-Net: encoder levels each followed by 2x2 max-pool, a bridge, decoder levels, head.

    `down_blocks[i]` maps level i's input to its skip features; every entry of
    `up_blocks` is called as `block(x, skip)` and must up-sample `x` 2x and merge
    `skip`. Inputs must have H and W divisible by 2 ** len(down_blocks).
    """

    def __init__(self, down_blocks: list[nn.Module], bridge: nn.Module, up_blocks: list[nn.Module], head: nn.Module):
        super().__init__()
        if len(down_blocks) != len(up_blocks):
            raise ValueError("a U-Net needs as many decoder levels as encoder levels")
        self.down_blocks = nn.ModuleList(down_blocks)
        self.pool = nn.MaxPool2d(kernel_size=2)
        self.bridge = bridge
        self.up_blocks = nn.ModuleList(up_blocks)
        self.head = head

    @property
    def size_divisor(self) -> int:
        """H and W must be multiples of this (one halving per encoder level)."""
        return 2 ** len(self.down_blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_size(x)
        skips = []
        for down in self.down_blocks:
            x = down(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bridge(x)
        for up, skip in zip(self.up_blocks, reversed(skips)):
            x = up(x, skip)
        return self.head(x)

    def _check_size(self, x: torch.Tensor) -> None:
        # Fail with a clear message instead of a concat shape mismatch deep in the decoder.
        height, width = x.shape[-2:]
        if height % self.size_divisor or width % self.size_divisor:
            raise ValueError(
                f"input size {height}x{width} is not a multiple of {self.size_divisor}; pad or crop the images"
            )
