"""Segmentation losses on logits: soft Dice, Dice with squared terms, BCE, and BCE + Dice.

`LOSSES` is keyed by `catalog.LOSS_NAMES` (config key `training.loss`).

Every loss takes raw LOGITS (the models end without an activation) and a
binary target of the same shape; an (N, H, W) target is accepted for
(N, 1, H, W) logits. Losses are computed in float32 with autocast disabled,
because sums over a whole image overflow or lose precision in float16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nucleiflow.catalog import LOSS_NAMES
from nucleiflow.errors import choices_error


def _float32_pair(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both tensors as float32 with equal shapes; refuses shapes that would silently broadcast."""
    if target.ndim == logits.ndim - 1 and logits.ndim > 1 and logits.shape[1] == 1:
        target = target.unsqueeze(1)
    if logits.shape != target.shape:
        raise ValueError(f"logits shape {tuple(logits.shape)} does not match target shape {tuple(target.shape)}")
    return logits.float(), target.float()


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - (2*sum(p*g) + s) / (sum(p) + sum(g) + s) per image, averaged over the batch."""
    with torch.autocast(device_type=logits.device.type, enabled=False):
        logits, target = _float32_pair(logits, target)
        probs = torch.sigmoid(logits)
        image_dims = tuple(range(1, probs.ndim))
        intersection = (probs * target).sum(image_dims)
        total = probs.sum(image_dims) + target.sum(image_dims)
        return 1.0 - ((2.0 * intersection + smooth) / (total + smooth)).mean()


def squared_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - (2*sum(p*g) + s) / (sum(p**2) + sum(g**2) + s) per image, averaged over the batch.

    The PanNuke study's equation 4 for one class (weight 1): the denominator sums squared probabilities
    and squared labels. The paper gives no smoothing term; `smooth` (as in the soft Dice) keeps an image
    without nuclei finite.
    """
    with torch.autocast(device_type=logits.device.type, enabled=False):
        logits, target = _float32_pair(logits, target)
        probs = torch.sigmoid(logits)
        image_dims = tuple(range(1, probs.ndim))
        intersection = (probs * target).sum(image_dims)
        total = probs.square().sum(image_dims) + target.square().sum(image_dims)
        return 1.0 - ((2.0 * intersection + smooth) / (total + smooth)).mean()


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy on logits (the numerically stable log-sum-exp form)."""
    with torch.autocast(device_type=logits.device.type, enabled=False):
        logits, target = _float32_pair(logits, target)
        return F.binary_cross_entropy_with_logits(logits, target)


class DiceLoss(nn.Module):
    """Soft Dice loss of the PanNuke study, per image then averaged."""

    def __init__(self, smooth: float = 1.0):
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return soft_dice_loss(logits, target, self.smooth)


class SquaredDiceLoss(nn.Module):
    """Dice loss with squared terms in the denominator (the PanNuke study's equation 4)."""

    def __init__(self, smooth: float = 1.0):
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return squared_dice_loss(logits, target, self.smooth)


class BCELoss(nn.Module):
    """Binary cross-entropy on logits, with the same shape checks and float32 policy as Dice."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return bce_loss(logits, target)


class BCEDiceLoss(nn.Module):
    """bce_weight * BCE + dice_weight * soft Dice (the DSB2018 residual U-Net loss)."""

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1.0):
        super().__init__()
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        bce = bce_loss(logits, target)
        dice = soft_dice_loss(logits, target, self.smooth)
        return self.bce_weight * bce + self.dice_weight * dice


_LOSS_CLASSES = {"dice": DiceLoss, "dice_squared": SquaredDiceLoss, "bce": BCELoss, "bce_dice": BCEDiceLoss}
# Keyed by the catalog, so a listed name without a class fails at import.
LOSSES = {name: _LOSS_CLASSES[name] for name in LOSS_NAMES}


def build_loss(name: str, **params) -> nn.Module:
    """The loss registered as `name` (config key `training.loss`), built with `params`."""
    if name not in LOSSES:
        raise choices_error("training.loss", name, LOSSES)
    return LOSSES[name](**params)
