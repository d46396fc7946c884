"""The network a model package carries: the trained model with its pre-filter in front and its activations behind.

A package's consumer (bioimageio.core, deepImageJ, QuPath, ilastik, napari) applies the declared
preprocessing (8-bit RGB -> float, the model's input scaling) and then runs the weights. What the
BioImage Model Zoo format cannot declare runs inside the network, so both weight formats
(TorchScript and the state dict) map the normalised image to the maps the workflow post-processes:

* the Gaussian pre-filter of training (`training.prefilter_sigma`; residual U-Net study, Section 5.1.3),
  a fixed depthwise convolution with the same kernel and mirror padding as `scipy.ndimage.gaussian_filter`
  (it commutes with the per-channel affine normalisation, so filtering after it is the same filter);
* the trained model (`training.build_from_spec`), logits;
* `heads.probabilities`: per target, sigmoid / softmax channels and h/v distances passed through.

`ExportedNetwork(spec)` is the architecture of the state-dict weights (`import_from`
`nucleiflow.export.network`, kwargs `spec`): the package's `config.nucleiflow.spec` rebuilds it.
"""

from __future__ import annotations

import torch
from torch import nn

from nucleiflow.config import ModelSpec
from nucleiflow.segmentation.training.heads import layout_of, probabilities

TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default: the kernel reaches 4 sigma


def gaussian_kernel(sigma: float, truncate: float = TRUNCATE) -> torch.Tensor:
    """The 1-D kernel of `scipy.ndimage.gaussian_filter` (radius int(truncate * sigma + 0.5), sums to 1)."""
    radius = int(truncate * float(sigma) + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / kernel.sum()).float()


def _mirror(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Pad `radius` values on both sides of `dim`, mirrored with the edge repeated (scipy's `reflect` mode)."""
    size = x.shape[dim]
    if radius == 0:
        return x
    if radius > size:  # scipy mirrors again past the far edge; a tile this small never reaches a model
        raise ValueError(f"pre-filter radius {radius} exceeds the image side {size}")
    before = x.narrow(dim, 0, radius).flip(dim)
    after = x.narrow(dim, size - radius, radius).flip(dim)
    return torch.cat([before, x, after], dim=dim)


class GaussianPrefilter(nn.Module):
    """Separable Gaussian blur of each channel (N, C, H, W), as scipy's gaussian_filter with sigma (s, s, 0)."""

    def __init__(self, sigma: float, channels: int = 3):
        super().__init__()
        kernel = gaussian_kernel(sigma)
        self.radius = (len(kernel) - 1) // 2
        self.channels = channels
        self.register_buffer("kernel_y", kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1))
        self.register_buffer("kernel_x", kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.conv2d(_mirror(x, self.radius, 2), self.kernel_y, groups=self.channels)
        return nn.functional.conv2d(_mirror(x, self.radius, 3), self.kernel_x, groups=self.channels)


class ExportedNetwork(nn.Module):
    """Normalised RGB (N, 3, H, W) -> the model's maps (N, C, H, W) (`heads.probabilities`): what a package runs."""

    def __init__(self, spec: dict):
        super().__init__()
        from nucleiflow.segmentation.training.trainer import build_from_spec

        spec = ModelSpec.from_dict(spec)
        sigma = float(spec.training.get("prefilter_sigma") or 0.0)
        self.prefilter = GaussianPrefilter(sigma) if sigma > 0 else nn.Identity()
        self.model = build_from_spec(spec)
        self.layout = layout_of(spec.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return probabilities(self.model(self.prefilter(x)), self.layout)


def network_from_model(spec: dict, model: nn.Module) -> ExportedNetwork:
    """The package's network around a trained model's weights (CPU, eval mode)."""
    network = ExportedNetwork(spec)
    network.model.load_state_dict(model.state_dict())
    return network.eval()
