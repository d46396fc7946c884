"""Dice, BCE and BCE+Dice losses on logits."""

import math

import numpy as np
import pytest
import torch

from nucleiflow.errors import ConfigError
from nucleiflow.segmentation.training.losses import LOSSES, BCEDiceLoss, DiceLoss, build_loss, evaluation_loss

CONFIDENT = 20.0  # a logit whose sigmoid is 1 to within float32 precision


def disk_target(batch=2, size=32):
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disk = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2).float()
    return disk.expand(batch, 1, size, size).clone()


def logits_for(mask):
    """Confident logits predicting `mask`."""
    return (mask * 2 - 1) * CONFIDENT


def test_perfect_prediction_has_zero_dice_loss():
    target = disk_target()
    assert DiceLoss()(logits_for(target), target).item() == pytest.approx(0.0, abs=1e-6)


def test_opposite_prediction_has_dice_loss_near_one():
    target = disk_target()
    # no intersection; sum(p) + sum(g) = (n - k) + k = n pixels: 1 - 1 / (n + 1)
    assert DiceLoss()(logits_for(1 - target), target).item() == pytest.approx(1 - 1 / (32 * 32 + 1), rel=1e-6)


def test_empty_target_and_empty_prediction_is_no_loss():
    target = torch.zeros(1, 1, 8, 8)
    assert DiceLoss()(logits_for(target), target).item() == pytest.approx(0.0, abs=1e-6)


def test_dice_is_averaged_per_image():
    target = disk_target(batch=2)
    logits = torch.stack([logits_for(target[0]), logits_for(1 - target[1])])
    # Image 0 is perfect: (2k + 1) / (k + k + 1) = 1, no loss. Image 1 predicts the complement of its k
    # target pixels: no intersection, sum(p) + sum(g) = (n - k) + k = n, so 1 - 1 / (n + 1).
    n = 32 * 32
    assert DiceLoss()(logits, target).item() == pytest.approx((0 + (1 - 1 / (n + 1))) / 2, rel=1e-6)


# Four pixels of one image, with sigmoid and log written out by hand (math, not torch).
PIXEL_LOGITS = [2.0, -1.0, 0.0, 3.0]
PIXEL_TARGET = [1.0, 0.0, 1.0, 0.0]


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def _hand_dice(logits, target, smooth=1.0):
    p = [_sigmoid(x) for x in logits]
    intersection = sum(pi * gi for pi, gi in zip(p, target))
    return 1 - (2 * intersection + smooth) / (sum(p) + sum(target) + smooth)


def _hand_bce(logits, target):
    # -log(p) for a target pixel, -log(1 - p) for a background one
    return sum(-math.log(_sigmoid(x)) if g else -math.log(1 - _sigmoid(x)) for x, g in zip(logits, target)) / len(
        target
    )


def _pixels(values):
    return torch.tensor(values).reshape(1, 1, 2, 2)


def test_dice_loss_matches_hand_computed_values():
    # p = 0.5 everywhere: 1 - (2 * 0.5 * k + 1) / (0.5 * n + k + 1), here n = 16, k = 4 and k = 0.
    target = torch.zeros(2, 1, 4, 4)
    target[0, 0, :2, :2] = 1
    expected = ((1 - 5 / 13) + (1 - 1 / 9)) / 2
    assert DiceLoss()(torch.zeros_like(target), target).item() == pytest.approx(expected, rel=1e-6)
    assert _hand_dice(PIXEL_LOGITS, PIXEL_TARGET) == pytest.approx(0.3286, abs=1e-4)  # the hand formula itself
    actual = DiceLoss()(_pixels(PIXEL_LOGITS), _pixels(PIXEL_TARGET)).item()
    assert actual == pytest.approx(_hand_dice(PIXEL_LOGITS, PIXEL_TARGET), rel=1e-6)
    assert DiceLoss(smooth=0.0)(_pixels(PIXEL_LOGITS), _pixels(PIXEL_TARGET)).item() == pytest.approx(
        _hand_dice(PIXEL_LOGITS, PIXEL_TARGET, smooth=0.0), rel=1e-6
    )


def test_gradient_flows_to_logits():
    target = disk_target()
    logits = torch.zeros_like(target, requires_grad=True)
    for loss in (DiceLoss(), BCEDiceLoss(), build_loss("bce")):
        logits.grad = None
        loss(logits, target).backward()
        assert torch.isfinite(logits.grad).all()
        assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("weights", [(1.0, 1.0), (0.3, 2.0)])
def test_bce_dice_is_the_weighted_sum(weights):
    bce, dice = _hand_bce(PIXEL_LOGITS, PIXEL_TARGET), _hand_dice(PIXEL_LOGITS, PIXEL_TARGET)
    assert bce == pytest.approx(1.0455, abs=1e-4)  # the hand formula itself
    loss = BCEDiceLoss(bce_weight=weights[0], dice_weight=weights[1])
    assert loss(_pixels(PIXEL_LOGITS), _pixels(PIXEL_TARGET)).item() == pytest.approx(
        weights[0] * bce + weights[1] * dice, rel=1e-6
    )
    # Logits 0: BCE is ln 2 at every pixel; Dice as in test_dice_loss_matches_hand_computed_values.
    target = torch.zeros(2, 1, 4, 4)
    target[0, 0, :2, :2] = 1
    expected = weights[0] * math.log(2) + weights[1] * ((1 - 5 / 13) + (1 - 1 / 9)) / 2
    assert loss(torch.zeros_like(target), target).item() == pytest.approx(expected, rel=1e-6)


def test_bce_loss_matches_hand_computed_values():
    assert build_loss("bce")(_pixels(PIXEL_LOGITS), _pixels(PIXEL_TARGET)).item() == pytest.approx(
        _hand_bce(PIXEL_LOGITS, PIXEL_TARGET), rel=1e-6
    )


def test_half_precision_logits_give_a_finite_float32_loss():
    # 256*256 probabilities near 1 sum past the float16 maximum (65504).
    target = torch.ones(1, 1, 256, 256)
    logits = torch.full_like(target, 10.0).half()
    for name in LOSSES:
        loss = build_loss(name)(logits, target)
        assert loss.dtype == torch.float32
        assert torch.isfinite(loss)


def test_losses_under_cpu_autocast_match_float32():
    torch.manual_seed(1)
    target = disk_target()
    logits = torch.randn_like(target)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        mixed = BCEDiceLoss()(logits, target)
    assert mixed.dtype == torch.float32
    assert mixed.item() == pytest.approx(BCEDiceLoss()(logits, target).item(), rel=1e-6)


def test_channel_less_target_is_accepted_and_mismatch_is_refused():
    target = disk_target()
    logits = logits_for(target)
    assert DiceLoss()(logits, target[:, 0]).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match=r"\(2, 1, 32, 32\).*\(2, 2, 32, 32\)"):
        DiceLoss()(logits, target.expand(2, 2, 32, 32))


def test_build_loss_returns_registered_losses():
    assert set(LOSSES) == {"dice", "dice_squared", "bce", "bce_dice"}
    assert isinstance(build_loss("dice"), DiceLoss)
    assert build_loss("bce_dice", dice_weight=0.5).dice_weight == 0.5


def test_unknown_loss_lists_the_choices():
    with pytest.raises(ConfigError, match=r"training\.loss: 'focal'.*bce, bce_dice, dice"):
        build_loss("focal")


# ---------------------------------------------------------------- the evaluated loss (Tables 2-4's Loss column)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_the_evaluated_loss_is_the_training_loss_of_the_same_name(name):
    # The PanNuke study's Loss column is its training loss (equation 4: dice_squared), the residual U-Net
    # study's BCE + Dice: evaluation recomputes exactly the configured training loss from probabilities.
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(1, 1, 24, 24, generator=generator) * 3
    target = disk_target(batch=1, size=24)
    expected = build_loss(name)(logits, target).item()
    prob = torch.sigmoid(logits)[0, 0].double().numpy()
    assert evaluation_loss(name, prob, target[0, 0].numpy()) == pytest.approx(expected, rel=1e-5)


def test_the_squared_dice_loss_is_not_the_plain_soft_dice():
    generator = torch.Generator().manual_seed(6)
    prob = torch.rand(16, 16, generator=generator).numpy()
    truth = (prob > 0.4).astype(float)
    assert evaluation_loss("dice_squared", prob, truth) < evaluation_loss("dice", prob, truth) - 0.05


def test_evaluated_dice_loss_bounds_and_refusals():
    truth = np.zeros((8, 8))
    truth[:4] = 1
    assert evaluation_loss("dice", truth, truth) == pytest.approx(0.0)
    assert evaluation_loss("dice", 1 - truth, truth) == pytest.approx(1 - 1 / 65)
    assert evaluation_loss("dice", np.zeros((8, 8)), np.zeros((8, 8))) == 0.0  # empty vs empty: perfect
    assert math.isfinite(evaluation_loss("bce_dice", 1 - truth, truth))  # confident and wrong: clipped, finite
    with pytest.raises(ConfigError, match="training.loss"):
        evaluation_loss("focal", truth, truth)
