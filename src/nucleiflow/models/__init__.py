"""Segmentation model zoo.

Architectures (`ARCHITECTURES`, built with `build_model(arch, encoder, ...)`):

* `unet`, `deeplabv3plus`: segmentation-models-pytorch models with an smp encoder
  and the PanNuke study's added head (extra double-conv blocks, Dropout2d, 1x1 conv).
* `resunet`: the DSB 2018 residual U-Net (encoder "none").
* `classic_unet`: the third study's 31 M-parameter U-Net (encoder "none").

All models return logits: the loss applies the sigmoid, and inference code
calls `torch.sigmoid(model(x))` (the classic U-Net's sigmoid output layer).

L2 regularisation is a loss penalty (`l2_penalty`), as Keras's kernel_regularizer,
not optimizer weight decay; see `registry` for which kernels it covers.
"""

from nucleiflow.models.registry import (
    ARCHITECTURES,
    ArchSpec,
    build_model,
    count_parameters,
    describe_model,
    l2_parameters,
    l2_penalty,
    model_size_mb,
)

__all__ = [
    "ARCHITECTURES",
    "ArchSpec",
    "build_model",
    "count_parameters",
    "describe_model",
    "l2_parameters",
    "l2_penalty",
    "model_size_mb",
]
