"""Segmentation losses on logits: soft Dice, Dice with squared terms, BCE, and BCE + Dice.

`LOSSES` is keyed by `catalog.LOSS_NAMES` (config key `training.loss`).

Every loss takes raw LOGITS (the models end without an activation) and a
binary target of the same shape; an (N, H, W) target is accepted for
(N, 1, H, W) logits. Losses are computed in float32 with autocast disabled,
because sums over a whole image overflow or lose precision in float16.

`build_target_loss(layout, loss)` is the training objective for every
`training.target` (`heads.OutputLayout`), taking (N, C, H, W) logits and the
packed (N, K, H, W) target a `data.SegmentationDataset` yields:

* binary: the configured `training.loss` on the foreground logit, exactly as before;
* contour: cross-entropy over background / interior / boundary + a soft Dice
  over interior and boundary (the DSB2018 winning solutions trained their
  mask + contour outputs with cross-entropy + Dice); `training.loss` is not used;
* hv: `training.loss` on the foreground logit + MSE of the h and v maps +
  2 x MSGE, the MSE of their gradients inside nuclei (HoVer-Net, Graham et al.
  2019, eq. 2-4 and its weights: 2 for MSGE, 1 for the rest);
* a type head adds cross-entropy + soft Dice over its classes (HoVer-Net's
  type-branch loss).

`training.loss_weights` replaces those weights term by term (`target_terms` names
the terms of a layout), as HoVer-Net's released configuration sets each branch's.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nucleiflow.catalog import LOSS_NAMES
from nucleiflow.errors import ConfigError, choices_error
from nucleiflow.segmentation.representation.targets import HV_CHANNELS
from nucleiflow.segmentation.training.heads import BINARY, OutputLayout


def _float32_pair(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both tensors as float32 with equal shapes; refuses shapes that would silently broadcast."""
    if target.ndim == logits.ndim - 1 and logits.ndim > 1 and logits.shape[1] == 1:
        target = target.unsqueeze(1)
    if logits.shape != target.shape:
        raise ValueError(f"logits shape {tuple(logits.shape)} does not match target shape {tuple(target.shape)}")
    return logits.float(), target.float()


def soft_dice(probs: torch.Tensor, target: torch.Tensor, dims: tuple[int, ...], smooth: float = 1.0) -> torch.Tensor:
    """The soft Dice loss 1 - (2*sum(p*g) + s) / (sum(p) + sum(g) + s) of probabilities, summed over `dims`.

    The one definition of the PanNuke study's Dice loss: training (`soft_dice_loss`, `multiclass_dice_loss`)
    and evaluation's per-image `loss` column both use it. `target` is cast to the probabilities' dtype.
    """
    target = target.to(probs.dtype)
    intersection = (probs * target).sum(dims)
    total = probs.sum(dims) + target.sum(dims)
    return 1.0 - (2.0 * intersection + smooth) / (total + smooth)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """`soft_dice` of the sigmoid per image, averaged over the batch."""
    with torch.autocast(device_type=logits.device.type, enabled=False):
        logits, target = _float32_pair(logits, target)
        probs = torch.sigmoid(logits)
        return soft_dice(probs, target, tuple(range(1, probs.ndim)), smooth).mean()


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


# Probabilities are clipped here before the logarithm of the BCE: torch's logit form never sees 0 or 1.
BCE_EPS = 1e-7


def evaluation_loss(name: str, prob: np.ndarray, truth: np.ndarray, smooth: float = 1.0) -> float:
    """The training loss `name` (config `training.loss`) of one image, from its foreground probabilities.

    The same terms as the loss the model trained with, on the probabilities (after resizing to the
    image and any test-time augmentation) instead of logits, so a split's mean is the training
    objective evaluated on that split: `dice_squared` is the PanNuke study's equation 4, `bce_dice`
    the residual U-Net study's BCE + Dice. Models with other targets report their foreground term.
    """
    if name not in LOSSES:
        raise choices_error("training.loss", name, LOSSES)
    p = np.asarray(prob, dtype=np.float64)
    g = np.asarray(truth, dtype=np.float64)
    if p.shape != g.shape:
        raise ValueError(f"probabilities {p.shape} and truth {g.shape} differ in shape")
    if name == "dice_squared":
        intersection = float((p * g).sum())
        return 1.0 - (2.0 * intersection + smooth) / (float((p * p).sum()) + float((g * g).sum()) + smooth)
    dice = float(soft_dice(torch.from_numpy(p), torch.from_numpy(g), tuple(range(p.ndim)), smooth))
    if name == "dice":
        return dice
    q = np.clip(p, BCE_EPS, 1.0 - BCE_EPS)
    bce = float(-(g * np.log(q) + (1.0 - g) * np.log1p(-q)).mean())
    return bce if name == "bce" else bce + dice  # bce_dice: BCEDiceLoss's default weights 1 and 1


def multiclass_dice_loss(
    logits: torch.Tensor, index: torch.Tensor, classes: slice | list[int] | None = None, smooth: float = 1.0
) -> torch.Tensor:
    """1 - soft Dice of softmax(logits) vs one-hot `index`, per image and class in `classes`, averaged.

    `logits` (N, C, H, W), `index` (N, H, W) integer class per pixel; `classes` selects the channels scored
    (all by default). Averaged rather than summed over classes (HoVer-Net sums), so it stays in [0, 1].
    """
    with torch.autocast(device_type=logits.device.type, enabled=False):
        probs = torch.softmax(logits.float(), dim=1)
        onehot = F.one_hot(index.long(), probs.shape[1]).permute(0, 3, 1, 2).float()
        if classes is not None:
            probs, onehot = probs[:, classes], onehot[:, classes]
        return soft_dice(probs, onehot, (2, 3), smooth).mean()


SOBEL_SIZE = 5  # HoVer-Net's 5 x 5 kernel


def sobel_kernels(size: int = SOBEL_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """(d/dx, d/dy) kernels of `size` x `size`: weight dx / (dx^2 + dy^2) at offset (dy, dx), 0 at the centre.

    The form of HoVer-Net's 5 x 5 gradient kernel (Graham et al. 2019, released code); at size 3 it is half
    the 3 x 3 Sobel kernel. x runs along columns, y along rows (downwards), for `F.conv2d` (a correlation),
    so h is differentiated across columns and v across rows.
    """
    offsets = torch.arange(size, dtype=torch.float32) - size // 2
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
    norm = (dx * dx + dy * dy).clamp(min=1.0)  # the centre weight is 0 / 1
    return dx / norm, dy / norm


def _gradient(maps: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """(N, H, W) maps correlated with a kernel, zero-padded to the same size (as HoVer-Net)."""
    kernel = kernel.to(maps.device, maps.dtype)[None, None]
    return F.conv2d(maps[:, None], kernel, padding=kernel.shape[-1] // 2)[:, 0]


def msge_loss(pred_hv: torch.Tensor, true_hv: torch.Tensor, focus: torch.Tensor) -> torch.Tensor:
    """Mean squared error of d/dx of h and d/dy of v over the `focus` (foreground) pixels (HoVer-Net's L_b).

    `pred_hv`, `true_hv` (N, 2, H, W) with h then v; `focus` (N, H, W). The mean runs over both maps'
    focus pixels (HoVer-Net's reduction); no foreground gives 0.
    """
    with torch.autocast(device_type=pred_hv.device.type, enabled=False):
        pred_hv, true_hv, focus = pred_hv.float(), true_hv.float(), focus.float()
        kx, ky = sobel_kernels()
        error_h = _gradient(pred_hv[:, 0], kx) - _gradient(true_hv[:, 0], kx)
        error_v = _gradient(pred_hv[:, 1], ky) - _gradient(true_hv[:, 1], ky)
        squared = focus * (error_h.square() + error_v.square())
        return squared.sum() / (2.0 * focus.sum() + 1e-8)


# The HoVer-Net paper's loss weights (Graham et al. 2019): MSGE (lambda_b) counts twice, every other term once.
# (The authors' released training configuration weights MSGE 1.)
TERM_WEIGHTS = {"msge": 2.0}


# Every loss term of every layout (config key `training.loss_weights`), in `target_terms` order.
LOSS_TERMS = ("foreground", "ce", "dice", "mse", "msge", "type_ce", "type_dice")


def target_terms(layout: OutputLayout) -> tuple[str, ...]:
    """The names of the loss terms of `layout` (from `LOSS_TERMS`), as `TargetLoss.terms` returns them."""
    names: tuple[str, ...] = ("ce", "dice") if layout.target == "contour" else ("foreground",)
    if layout.target == "hv":
        names += ("mse", "msge")
    if layout.type_classes:
        names += ("type_ce", "type_dice")
    return names


def term_weights(layout: OutputLayout, weights: Mapping[str, float] | None = None) -> dict[str, float]:
    """The weight of each term of `layout`: `TERM_WEIGHTS` (1 unless named), then `weights` (config
    `training.loss_weights`); a term the layout does not have, or a negative weight, is a ConfigError."""
    names = target_terms(layout)
    chosen = {name: TERM_WEIGHTS.get(name, 1.0) for name in names}
    for name, weight in (weights or {}).items():
        if name not in names:
            raise choices_error(f"training.loss_weights (target {layout.target})", name, names)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise ConfigError(f"training.loss_weights.{name}: {weight!r} is not valid; use a number >= 0")
        chosen[name] = float(weight)
    return chosen


class TargetLoss(nn.Module):
    """The training loss of an `OutputLayout` (module docstring): logits (N, C, H, W), packed target (N, K, H, W).

    `terms` gives each unweighted term by name; `forward` their weighted sum (`term_weights`).
    """

    def __init__(
        self,
        layout: OutputLayout = BINARY,
        loss: str = "dice",
        smooth: float = 1.0,
        weights: Mapping[str, float] | None = None,
    ):
        super().__init__()
        self.layout, self.smooth, self.weights = layout, smooth, term_weights(layout, weights)
        # Built (and its name checked) for every target, so a bad training.loss fails at once.
        self.foreground_loss = build_loss(loss)

    def _check(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        layout = self.layout
        if target.ndim == 3 and layout.packed_channels == 1:
            target = target.unsqueeze(1)
        if logits.ndim != 4 or logits.shape[1] != layout.channels:
            raise ValueError(
                f"logits shape {tuple(logits.shape)}: target {layout.target!r} with {layout.type_classes} "
                f"type classes takes (N, {layout.channels}, H, W)"
            )
        expected = (logits.shape[0], layout.packed_channels, *logits.shape[2:])
        if tuple(target.shape) != expected:
            raise ValueError(f"target shape {tuple(target.shape)} does not match logits: expected {expected}")
        return target

    def terms(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each loss term (unweighted), in float32 with autocast off.

        Class indices are not range-checked here (that would wait for the GPU every batch): the contour
        target is 0..2 by construction and the dataset checks the type map against the head.
        """
        target = self._check(logits, target)
        layout = self.layout
        out = {}
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, target = logits.float(), target.float()
            if layout.target == "contour":
                index = target[:, 0].long()
                out["ce"] = F.cross_entropy(logits[:, :3], index)
                out["dice"] = multiclass_dice_loss(logits[:, :3], index, [1, 2], self.smooth)
            else:
                out["foreground"] = self.foreground_loss(logits[:, :1], target[:, :1])
            if layout.target == "hv":
                hv = list(HV_CHANNELS)
                out["mse"] = F.mse_loss(logits[:, hv], target[:, hv])
                out["msge"] = msge_loss(logits[:, hv], target[:, hv], target[:, 0] > 0.5)
            if layout.type_classes:
                types = target[:, -1].long()
                out["type_ce"] = F.cross_entropy(logits[:, layout.types], types)
                out["type_dice"] = multiclass_dice_loss(logits[:, layout.types], types, None, self.smooth)
        return out

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.layout == BINARY:  # the configured loss exactly as before the other targets existed
            return self.weights["foreground"] * self.foreground_loss(logits, self._check(logits, target))
        terms = self.terms(logits, target)
        return sum(self.weights[name] * value for name, value in terms.items())


def build_target_loss(
    layout: OutputLayout = BINARY, loss: str = "dice", weights: Mapping[str, float] | None = None, **params
) -> TargetLoss:
    """The training loss of `layout` with the configured `training.loss` on the foreground logit and the
    configured `training.loss_weights` (None: `TERM_WEIGHTS`)."""
    return TargetLoss(layout, loss, weights=weights, **params)
