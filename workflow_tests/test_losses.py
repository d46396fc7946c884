"""Dice, BCE and BCE+Dice losses on logits."""

import pytest
import torch
import torch.nn.functional as F

from nucleiflow.errors import ConfigError
from nucleiflow.segmentation.losses import LOSSES, BCEDiceLoss, DiceLoss, build_loss

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
    assert DiceLoss()(logits_for(1 - target), target).item() == pytest.approx(1.0, abs=1e-2)


def test_empty_target_and_empty_prediction_is_no_loss():
    target = torch.zeros(1, 1, 8, 8)
    assert DiceLoss()(logits_for(target), target).item() == pytest.approx(0.0, abs=1e-6)


def test_dice_is_averaged_per_image():
    target = disk_target(batch=2)
    logits = torch.stack([logits_for(target[0]), logits_for(1 - target[1])])
    assert DiceLoss()(logits, target).item() == pytest.approx(0.5, abs=1e-2)


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
    torch.manual_seed(0)
    target = disk_target()
    logits = torch.randn_like(target)
    expected = weights[0] * F.binary_cross_entropy_with_logits(logits, target) + weights[1] * DiceLoss()(logits, target)
    actual = BCEDiceLoss(bce_weight=weights[0], dice_weight=weights[1])(logits, target)
    assert actual.item() == pytest.approx(expected.item(), rel=1e-6)


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
    assert set(LOSSES) == {"dice", "bce", "bce_dice"}
    assert isinstance(build_loss("dice"), DiceLoss)
    assert build_loss("bce_dice", dice_weight=0.5).dice_weight == 0.5


def test_unknown_loss_lists_the_choices():
    with pytest.raises(ConfigError, match=r"training\.loss: 'focal'.*bce, bce_dice, dice"):
        build_loss("focal")
