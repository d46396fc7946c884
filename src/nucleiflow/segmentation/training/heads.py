"""What a segmentation model's output channels mean, per training target, and how they become probabilities.

One `OutputLayout` per model, from its spec's `training` section (`layout_of`):
the channels of the target (`targets.TARGET_CHANNELS`: binary 1, contour 3, hv 3)
followed, with `type_head`, by `catalog.TYPE_HEAD_CLASSES` nucleus-type logits.
The type channels share the decoder with the target channels (one head with
more outputs, not HoVer-Net's separate branch), so every architecture of the zoo
can carry them.

Logits -> probabilities (`probabilities`), channel by channel:

* binary: sigmoid of the foreground logit;
* contour: softmax over background / interior / boundary;
* hv: sigmoid of the foreground logit; h and v are regressions, passed through;
* types: softmax over the type classes.

The training target a dataset yields is packed the same way (`targets.packed_target`):
binary (1, H, W) 0/1; contour (1, H, W) class index; hv (3, H, W); with a type
head one more channel holding the type class index of each pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nucleiflow.catalog import INSTANCE_TARGETS, TYPE_HEAD_CLASSES
from nucleiflow.config import TrainingSettings
from nucleiflow.errors import choices_error
from nucleiflow.segmentation.representation.targets import PACKED_CHANNELS, TARGET_CHANNELS


@dataclass(frozen=True)
class OutputLayout:
    """The target a model was trained for and the size of its optional type head (0: none)."""

    target: str = "binary"
    type_classes: int = 0

    def __post_init__(self):
        if self.target not in INSTANCE_TARGETS:
            raise choices_error("training.target", self.target, INSTANCE_TARGETS)

    @property
    def target_channels(self) -> int:
        """Output channels of the target part (binary 1, contour 3, hv 3)."""
        return TARGET_CHANNELS[self.target]

    @property
    def channels(self) -> int:
        """Output channels of the whole model: the model's `classes`."""
        return self.target_channels + self.type_classes

    @property
    def packed_channels(self) -> int:
        """Channels of the training target a dataset yields for this layout."""
        return PACKED_CHANNELS[self.target] + (1 if self.type_classes else 0)

    @property
    def types(self) -> slice:
        """The type channels of the model output (empty without a type head)."""
        return slice(self.target_channels, self.channels)


BINARY = OutputLayout()


def layout_of(training: TrainingSettings) -> OutputLayout:
    """The layout of a spec's training settings (`target`, `type_head`)."""
    return OutputLayout(target=training.target, type_classes=TYPE_HEAD_CLASSES if training.type_head else 0)


def probabilities(logits: torch.Tensor, layout: OutputLayout = BINARY) -> torch.Tensor:
    """(N, C, H, W) float32 maps from (N, C, H, W) logits: probabilities, and h/v passed through (module docstring)."""
    logits = logits.float()
    parts = []
    target = logits[:, : layout.target_channels]
    if layout.target == "contour":
        parts.append(torch.softmax(target, dim=1))
    else:
        parts.append(torch.sigmoid(target[:, :1]))
        if layout.target == "hv":
            parts.append(target[:, 1:3])
    if layout.type_classes:
        parts.append(torch.softmax(logits[:, layout.types], dim=1))
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


def foreground(maps: torch.Tensor, layout: OutputLayout = BINARY) -> torch.Tensor:
    """(N, H, W) nucleus probability from `probabilities` maps: interior + boundary for contour, else channel 0."""
    if layout.target == "contour":
        return maps[:, 1] + maps[:, 2]
    return maps[:, 0]


def foreground_truth(packed: torch.Tensor, layout: OutputLayout = BINARY) -> torch.Tensor:
    """(N, H, W) bool nucleus mask of a packed training target (contour: class index > 0)."""
    return packed[:, 0] > 0.5


def foreground_logit(logits: torch.Tensor, layout: OutputLayout = BINARY) -> torch.Tensor:
    """(N, H, W) logit of the nucleus probability: channel 0, or for contour log(p_interior + p_boundary) - log(p_bg).

    What explanations (Grad-CAM, LRP) attribute, so that they explain "nucleus" for every target.
    """
    if layout.target == "contour":
        return torch.logsumexp(logits[:, 1:3].float(), dim=1) - logits[:, 0].float()
    return logits[:, 0]
