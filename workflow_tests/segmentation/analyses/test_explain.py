"""The explain stage, checked the way the literature checks explanations.

1. Sanity check (Adebayo et al. 2018, "Sanity checks for saliency maps"): a
   map must depend on the learned weights; randomising them must change it far
   more than a slight input perturbation does (Spearman rank correlation).
2. LRP conservation: with the epsilon rule and no biases, the relevance summed
   over the input equals the explained output, through residual sums and
   concatenated skips (and it does not without the residual-sum canonizer).
3. Known answer: a model whose output depends on one image region only puts
   nearly all Grad-CAM and LRP mass in that region.
4. A wrong layer name is a one-line error listing the valid names.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import RegionModel
from scipy.stats import spearmanr
from torch import nn
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import LayerMapComposite, layer_map_base
from zennit.rules import Epsilon
from zennit.types import Convolution

from nucleiflow.errors import ConfigError
from nucleiflow.models.resunet import build_resunet
from nucleiflow.segmentation.analyses import explain as E
from nucleiflow.workflow.explain import explain_cells, explain_settings

SIZE = 32
TINY = (4, 8, 16)  # two encoder levels + bridge


def blob_batch(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Dark images with bright discs (nuclei) and their masks."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images, masks = [], []
    for _ in range(n):
        mask = np.zeros((SIZE, SIZE), bool)
        for _ in range(rng.integers(2, 5)):
            cy, cx, r = rng.integers(5, SIZE - 5), rng.integers(5, SIZE - 5), rng.integers(3, 6)
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        image = 0.1 + 0.7 * mask[None] * np.array([0.8, 0.4, 0.9])[:, None, None] + rng.normal(0, 0.05, (3, SIZE, SIZE))
        images.append(image.astype(np.float32))
        masks.append(mask[None].astype(np.float32))
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks))


@pytest.fixture(scope="module")
def trained():
    """A tiny residual U-Net trained for a few steps on blobs, so "trained" means something."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_resunet(filters=TINY)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        x, y = blob_batch(8, rng)
        loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    x, y = blob_batch(1, np.random.default_rng(99))
    model = E.prepare_for_attribution(model)
    with torch.no_grad():
        dice = 2 * ((torch.sigmoid(model(x)) > 0.5) * y).sum() / ((torch.sigmoid(model(x)) > 0.5).sum() + y.sum())
    assert dice > 0.7, f"the tiny model did not learn the blobs (Dice {dice:.2f})"
    return model, x


def randomised(model: nn.Module) -> nn.Module:
    """The same architecture with every weight re-initialised (Adebayo et al.'s full randomisation)."""
    torch.manual_seed(123)
    clone = copy.deepcopy(model)
    for module in clone.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
    return E.prepare_for_attribution(clone)


def _maps(model, x, mask, method):
    if method == "gradcam":
        return E.gradcam(model, x, mask, E.named_layer(model, "up_blocks.1", "gradcam_layer"))[0]
    return E.lrp(model, x, mask, "epsilon_plus_flat")[0][0]


def _rho(a, b) -> float:
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


@pytest.mark.parametrize("method", ["gradcam", "lrp"])
def test_sanity_check_randomised_weights_change_the_map(trained, method, capsys):
    model, x = trained
    _, _, mask = E.target_mask(model, x)  # the trained model's predicted nuclei, the same target for every map
    reference = _maps(model, x, mask, method)
    noised = x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    rho_noise = _rho(reference, _maps(model, noised, mask, method))
    rho_random = _rho(reference, _maps(randomised(model), x, mask, method))
    with capsys.disabled():
        print(
            f"\n{method}: Spearman rho trained vs noised input {rho_noise:.3f}, vs randomised weights {rho_random:.3f}"
        )
    assert rho_noise > 0.8
    assert rho_random < rho_noise - 0.3


def _bias_free(model: nn.Module) -> nn.Module:
    """Zero every bias and make BatchNorm the identity, so no relevance is absorbed by biases."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.BatchNorm2d):
            module.eps = 0.0
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
            module.running_mean.zero_()
            module.running_var.fill_(1.0)
    return E.prepare_for_attribution(model)


def _epsilon_composite(canonizers):
    return LayerMapComposite(
        layer_map=layer_map_base(1e-9) + [(Convolution, Epsilon(epsilon=1e-9))], canonizers=canonizers
    )


def test_lrp_conserves_relevance_through_residual_sums_and_concatenations():
    torch.manual_seed(1)
    model = _bias_free(build_resunet(filters=TINY))  # residual sums in every block, concatenated skips
    x = torch.rand(2, 3, SIZE, SIZE)
    mask = torch.zeros(2, 1, SIZE, SIZE)
    mask[..., 8:20, 10:24] = 1.0
    relevance, explained = E.lrp(model, x, mask, _epsilon_composite(E.canonizers()))
    np.testing.assert_allclose(relevance.sum((1, 2)), explained, rtol=1e-3)
    # The plain gradient of `body + shortcut` copies relevance to both branches: not conserved.
    copied, _ = E.lrp(model, x, mask, _epsilon_composite([SequentialMergeBatchNorm()]))
    assert np.abs(copied.sum((1, 2)) / explained - 1).min() > 0.05


def test_known_answer_all_mass_in_the_region_the_output_depends_on():
    region = torch.zeros(1, 1, SIZE, SIZE)
    region[..., 4:14, 18:28] = 1.0
    model = E.prepare_for_attribution(RegionModel(region))
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    mask = torch.ones(1, 1, SIZE, SIZE)  # explain the whole output: only the region can matter
    inside = np.zeros((SIZE, SIZE), bool)
    inside[3:15, 17:29] = True  # the region and the 3x3 convolution's one-pixel border
    cam = E.gradcam(model, x, mask, model.features)[0]
    relevance = E.lrp(model, x, mask, "epsilon_plus")[0][0]
    for name, heat in (("Grad-CAM", cam), ("LRP", relevance)):
        share = np.abs(heat[inside]).sum() / np.abs(heat).sum()
        assert share > 0.95, f"{name}: only {share:.1%} of the mass lies in the region"


def test_wrong_layer_is_a_one_line_error_listing_valid_names():
    model = build_resunet(filters=TINY)
    with pytest.raises(ConfigError) as err:
        E.named_layer(model, "up_blocks.7", "gradcam_layer")
    message = str(err.value)
    assert "\n" not in message
    assert "explain.gradcam_layer: 'up_blocks.7'" in message and "up_blocks.1" in message and "bridge" in message
    with pytest.raises(ConfigError, match="not a convolution") as err:
        E.named_layer(model, "bridge", "filter_layer", E.CONV_LAYERS)
    assert "bridge.0.0" in str(err.value) and "\n" not in str(err.value)


def test_filter_figure_has_one_panel_per_kernel():
    model = build_resunet(filters=TINY)
    fig = E.filter_figure(E.named_layer(model, "bridge.0.0", "filter_layer", E.CONV_LAYERS), "bridge", max_filters=9)
    assert sum(ax.images != [] for ax in fig.axes) == 9


def test_explain_cells_and_settings():
    config = {
        "seed": 3,
        "segmentation": {
            "a": {
                "dataset": "d",
                "models": [{"arch": "unet", "encoder": "efficientnet-b4"}, {"arch": "resunet"}],
                "explain": {"models": ["unet/efficientnet-b4/none"], "n": 2},
            },
            "b": {"dataset": "d", "models": [{"arch": "resunet"}], "explain": {"enabled": False}},
            "c": {"dataset": "d", "models": [{"arch": "classic_unet"}]},
        },
    }
    assert [cell.label for cell in explain_cells(config)] == ["unet/efficientnet-b4/none"]
    settings = explain_settings(config, "a", "unet", "efficientnet-b4")
    assert settings["filter_layer"] == "encoder._conv_stem" and settings["gradcam_layer"] == "decoder.blocks.4"
    assert settings["n"] == 2 and settings["seed"] == 3 and settings["target"] == "predicted"
    assert explain_settings(config, "a", "resunet", "none")["filter_layer"] == "bridge.0.0"
