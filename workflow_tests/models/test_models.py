"""Model zoo: shapes, exact parameter counts, dropout modes, L2 penalty scope, errors.

No weights are downloaded (encoder_weights=None). The big models are built once
per module and shared; inputs are 64x64 so the file stays fast on 2 CPU cores.
"""

import pytest
import segmentation_models_pytorch as smp
import torch
from torch import nn

from nucleiflow.errors import ConfigError
from nucleiflow.models import (
    ARCHITECTURES,
    build_model,
    count_parameters,
    describe_model,
    l2_parameters,
    l2_penalty,
    model_size_mb,
)

PAPER_ENCODERS = ("resnet50", "efficientnet-b4")
SMP_ARCHS = ("unet", "deeplabv3plus")
EXTRA_BLOCKS = 2
DROPOUT = 0.5

# Trainable parameters with extra_blocks=2 (1 class, 3 input channels), measured
# with smp 0.6.0. DeepLabV3+/ResNet-50 is 26,677,585 in plain smp; the two extra
# blocks work at the decoder's 256 channels and add 2,361,344 (-> ~29.0 M). The
# U-Net's decoder ends at 16 channels, so its blocks add only 9,344.
EXPECTED_SMP_TRAINABLE = {
    ("unet", "resnet50"): 32_530_321,
    ("unet", "efficientnet-b4"): 20_234_905,
    ("deeplabv3plus", "resnet50"): 29_038_929,
    ("deeplabv3plus", "efficientnet-b4"): 20_977_561,
}
PLAUSIBLE_RANGES = {
    ("unet", "resnet50"): (32e6, 33e6),
    ("unet", "efficientnet-b4"): (12e6, 21e6),
    ("deeplabv3plus", "resnet50"): (26e6, 30e6),
    ("deeplabv3plus", "efficientnet-b4"): (12e6, 21e6),
}


@pytest.fixture(scope="module")
def smp_models():
    """The four paper configurations, built once (dropout on, so the head has a Dropout2d > 0)."""
    return {
        (arch, encoder): build_model(arch, encoder, extra_blocks=EXTRA_BLOCKS, dropout=DROPOUT)
        for arch in SMP_ARCHS
        for encoder in PAPER_ENCODERS
    }


@pytest.fixture(scope="module")
def classic_unet():
    return build_model("classic_unet")


@pytest.fixture(scope="module")
def resunet():
    return build_model("resunet")


def _images(batch=1, channels=3, size=64):
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(0))


# --- shapes -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(EXPECTED_SMP_TRAINABLE))
def test_smp_models_return_full_size_logits(smp_models, key):
    model = smp_models[key].eval()
    with torch.no_grad():
        logits = model(_images(batch=2))
    assert logits.shape == (2, 1, 64, 64)
    # Logits: the head ends in smp's up-sampling (or Identity), never an activation.
    assert not isinstance(model.segmentation_head[-1], (nn.Sigmoid, smp.base.modules.Activation))


@pytest.mark.parametrize("size", [64, 80])
def test_custom_models_accept_any_multiple_of_16(classic_unet, resunet, size):
    for model in (classic_unet.eval(), resunet.eval()):
        with torch.no_grad():
            assert model(_images(size=size)).shape == (1, 1, size, size)


def test_classes_and_in_channels_are_honoured():
    with torch.no_grad():
        assert build_model("resunet", in_channels=1, classes=3).eval()(_images(channels=1)).shape == (1, 3, 64, 64)
        smp_model = build_model("deeplabv3plus", "resnet18", classes=3, extra_blocks=1).eval()
        assert smp_model(_images(batch=2)).shape == (2, 3, 64, 64)


def test_custom_model_rejects_size_not_multiple_of_16(resunet):
    with pytest.raises(ValueError, match="multiple of 16"):
        resunet(_images(size=72))


# --- parameter counts ---------------------------------------------------------------------


def test_classic_unet_matches_published_keras_summary(classic_unet):
    counts = count_parameters(classic_unet)
    assert counts["trainable"] == 31_043_521
    assert counts["non_trainable"] == 0
    assert counts["buffers"] == 11_776  # BN moving mean + variance
    assert counts["trainable"] + counts["buffers"] == counts["total"] == 31_055_297


def test_resunet_is_about_1_94_million(resunet):
    counts = count_parameters(resunet)
    assert 1.90e6 <= counts["trainable"] <= 1.98e6
    assert counts["trainable"] == 1_953_857
    assert counts["buffers"] == 3_424


def test_smp_parameter_counts(smp_models):
    print(f"\n{'arch':<15}{'encoder':<17}{'trainable':>12}{'BN stats':>10}{'MiB':>8}")
    for key, model in smp_models.items():
        counts = count_parameters(model)
        print(f"{key[0]:<15}{key[1]:<17}{counts['trainable']:>12,}{counts['buffers']:>10,}{model_size_mb(model):>8.1f}")
    for key, model in smp_models.items():
        trainable = count_parameters(model)["trainable"]
        low, high = PLAUSIBLE_RANGES[key]
        assert low <= trainable <= high, key
        assert trainable == EXPECTED_SMP_TRAINABLE[key], key


def test_extra_blocks_add_double_convs_at_decoder_width():
    smp_unet = count_parameters(smp.Unet("resnet18", encoder_weights=None))["trainable"]
    no_blocks = count_parameters(build_model("unet", "resnet18"))["trainable"]
    two_blocks = count_parameters(build_model("unet", "resnet18", extra_blocks=2))["trainable"]
    width = 16  # smp U-Net's last decoder width
    smp_head, new_head = 9 * width + 1, width + 1  # smp's 3x3 head is replaced by a 1x1 one
    per_block = 2 * (9 * width * width + 2 * width)  # two bias-free 3x3 convs + BN affine
    assert no_blocks - smp_unet == new_head - smp_head
    assert two_blocks - no_blocks == 2 * per_block


def test_count_parameters_separates_frozen_parameters_and_size():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    model[0].weight.requires_grad_(False)
    counts = count_parameters(model)
    assert counts == {"trainable": 4 + 8, "non_trainable": 108, "buffers": 8, "total": 128}
    # float32 parameters and BN statistics, plus the int64 num_batches_tracked counter
    assert model_size_mb(model) == pytest.approx((128 * 4 + 8) / 2**20)


def test_describe_model_row():
    row = describe_model("resunet", "none")
    assert row["arch"] == "resunet" and row["encoder"] == "none"
    assert row["parameters"] == 1_953_857
    assert row["size_mb"] == pytest.approx((1_953_857 + 3_424) * 4 / 2**20, abs=0.01)


# --- dropout ------------------------------------------------------------------------------


def test_dropout_active_in_train_mode_only():
    model = build_model("unet", "resnet18", extra_blocks=1, dropout=DROPOUT)
    dropouts = [m for m in model.segmentation_head.modules() if isinstance(m, nn.Dropout2d)]
    assert [d.p for d in dropouts] == [DROPOUT]
    images = _images(batch=2)
    with torch.no_grad():
        model.train()  # BN uses batch statistics, deterministic for the same batch
        assert not torch.equal(model(images), model(images))
        model.eval()
        assert torch.equal(model(images), model(images))


# --- L2 penalty ---------------------------------------------------------------------------


def _parameters_with_gradient(model):
    return {id(p) for p in model.parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_l2_penalty_is_keras_l2_over_the_added_kernels(smp_models):
    model = smp_models[("deeplabv3plus", "resnet50")]
    kernels = l2_parameters(model)
    assert len(kernels) == 2 * EXTRA_BLOCKS + 1  # two convs per extra block + the 1x1 head
    head = model.segmentation_head
    head_kernels = {id(m.weight) for m in head.modules() if isinstance(m, nn.Conv2d)}
    assert {id(k) for k in kernels} == head_kernels
    assert all(k.dim() == 4 for k in kernels)  # kernels, not biases or BN weights

    penalty = l2_penalty(model, 1e-4)
    assert penalty.item() > 0
    assert penalty.item() == pytest.approx(1e-4 * sum(k.detach().square().sum().item() for k in kernels), rel=1e-5)
    assert l2_penalty(model, 3e-4).item() == pytest.approx(3 * penalty.item(), rel=1e-5)

    model.zero_grad(set_to_none=True)
    penalty.backward()
    assert _parameters_with_gradient(model) == head_kernels
    model.zero_grad(set_to_none=True)


def test_l2_penalty_covers_all_conv_kernels_of_custom_models(resunet):
    kernels = l2_parameters(resunet)
    conv_kernels = {id(m.weight) for m in resunet.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))}
    assert {id(k) for k in kernels} == conv_kernels
    resunet.zero_grad(set_to_none=True)
    l2_penalty(resunet, 1e-3).backward()
    assert _parameters_with_gradient(resunet) == conv_kernels
    resunet.zero_grad(set_to_none=True)


# --- registry and errors ------------------------------------------------------------------


def test_registry_records_encoders():
    smp_names = set(smp.encoders.get_encoder_names())
    for arch in SMP_ARCHS:
        spec = ARCHITECTURES[arch]
        assert spec.uses_smp_encoder
        assert set(PAPER_ENCODERS) <= set(spec.encoders) <= smp_names
    for arch in ("resunet", "classic_unet"):
        assert not ARCHITECTURES[arch].uses_smp_encoder
        assert ARCHITECTURES[arch].encoders == ("none",)


def test_unknown_arch_lists_choices():
    with pytest.raises(ConfigError, match="arch: 'segformer' is not valid; choose one of: classic_unet, deeplabv3plus"):
        build_model("segformer")


def test_unknown_encoder_lists_valid_encoders():
    with pytest.raises(ConfigError) as error:
        build_model("unet", "vgg16")
    message = str(error.value)
    assert message.startswith("encoder (for unet): 'vgg16' is not valid")
    for encoder in ("resnet50", "efficientnet-b4", "resnet18", "resnet34", "efficientnet-b0", "mobilenet_v2"):
        assert encoder in message
    with pytest.raises(ConfigError, match=r"encoder \(for resunet\): 'resnet50' is not valid; choose one of: none"):
        build_model("resunet", "resnet50")


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"dropout": 1.0}, "dropout"),
        ({"extra_blocks": -1}, "extra_blocks"),
        ({"encoder_weights": "imagenet"}, "encoder_weights"),
    ],
)
def test_invalid_options_are_config_errors(kwargs, key):
    with pytest.raises(ConfigError, match=f"^{key}:"):
        build_model("resunet", **kwargs)


def test_smp_activation_is_refused():
    with pytest.raises(ConfigError, match="logits"):
        build_model("unet", "resnet18", activation="sigmoid")


def test_registry_matches_torch_free_catalog():
    """The config check (catalog) and the builder (registry) must agree on every name."""
    from nucleiflow.catalog import ARCH_ENCODERS

    assert {a: tuple(s.encoders) for a, s in ARCHITECTURES.items()} == {a: tuple(e) for a, e in ARCH_ENCODERS.items()}


@pytest.mark.parametrize("arch", ["unet", "deeplabv3plus"])
def test_decoder_dropout_is_active_in_training_only(arch):
    torch.manual_seed(0)
    model = build_model(arch, "resnet18", decoder_dropout=0.5)
    x = torch.randn(2, 3, 64, 64)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    plain = build_model(arch, "resnet18")
    assert count_parameters(model)["trainable"] == count_parameters(plain)["trainable"]
