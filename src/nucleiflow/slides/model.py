"""The model side of the slide stage: maps of native-scale tiles, nuclei of a chunk's maps, nucleus types.

`SlideModel` wraps a trained model's `Predictor` (`segmentation.inference.predictor`): tiles go through its forward
pass prepared exactly as in training (pre-filter, input scaling) with its test-time augmentation, and
nuclei come from its tuned post-processing (postprocess.json) or its experiment's fixed settings, as for
the `inference:` stage. The slide stage cuts its own tiles (on the slide's tile grid, `chunks`), so tiles
are batched straight through the network at their native scale, never resized or tiled again.

`chunks.segment_part` calls only `tile_size`, `batch_size`, `type_names`, `predict_maps_batch`, `nuclei`
and (with post-processing workers) `postprocessor`; the tests pass a stain-threshold stand-in with the
same members.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_TILE = 256  # px at the run resolution: larger tiles than the training crops waste less on overlap


@dataclass
class SlideModel:
    """A `Predictor` as the slide stage uses it (`type_names` empty: no type head)."""

    predictor: object
    tile_size: int
    batch_size: int
    type_names: tuple[str, ...] = ()

    @property
    def settings(self) -> str:
        """What besides the weights changes the maps (tile size, test-time augmentation): part of a chunk's key."""
        return f"tile{self.tile_size}/tta-{self.predictor.config.tta}"

    def predict_maps_batch(self, tiles: list[np.ndarray]) -> list[np.ndarray]:
        """Maps (C, T, T) float32 of RGB uint8 tiles (T, T, 3), each at its native scale, in one batch."""
        import torch

        from nucleiflow.segmentation.training.data import prepare_image, to_tensor

        config = self.predictor.config
        batch = torch.stack([to_tensor(prepare_image(t, config.prefilter_sigma), config.input_scaling) for t in tiles])
        return list(self.predictor.forward(batch).astype(np.float32, copy=False))

    def nuclei(self, maps: np.ndarray) -> tuple[np.ndarray, dict | None, np.ndarray | None]:
        """(int instance map, {id: type} or None, type probabilities (K, H, W) or None) of a window's maps."""
        return self.postprocessor().nuclei(maps)

    def postprocessor(self) -> NucleiFinder:
        """The post-processing alone (no network): picklable, for the slide stage's worker processes."""
        return NucleiFinder(self.predictor.config)


@dataclass(frozen=True)
class NucleiFinder:
    """Nuclei of a window's maps with a model's post-processing settings (`predictor.find_nuclei`)."""

    config: object  # the model's InferenceConfig

    def nuclei(self, maps: np.ndarray) -> tuple[np.ndarray, dict | None, np.ndarray | None]:
        from nucleiflow.segmentation.inference.predictor import find_nuclei

        labels, types = find_nuclei(maps, self.config)
        layout = self.config.layout
        return labels, types, (maps[layout.types] if layout.type_classes else None)


def load_slide_model(
    spec: dict | None,
    model_path,
    *,
    threads: int = 1,
    postprocess: dict | None = None,
    params_path=None,
    tile_size: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    type_names=None,
) -> SlideModel:
    """A trained model for the slide stage; `tile_size` (a multiple of 32) defaults to 256 px or the training size.

    `spec` None: `model_path` is an exported package (zip or folder), which carries its spec, weights,
    post-processing and type names; `postprocess` then only overrides its test-time augmentation (`tta`).
    Else `model_path` is the cell's model.pt, read with its experiment's `postprocess`, its tuned
    `params_path` and the training dataset's `type_names` (background first).
    """
    from dataclasses import replace

    from nucleiflow.export.load import load_predictor
    from nucleiflow.segmentation.inference.predictor import check_tta

    predictor = load_predictor(
        model_path,
        spec=spec,
        postprocess=postprocess if spec is not None else None,
        tuned_path=params_path,
        threads=threads,
        batch_size=batch_size,
        device=device,
        type_names=type_names,
    )
    if spec is None and (postprocess or {}).get("tta"):  # a package: only its test-time augmentation changes
        predictor.config = replace(predictor.config, tta=check_tta(postprocess["tta"]))
    config = predictor.config
    size = tile_size or max(DEFAULT_TILE, config.input_size)
    return SlideModel(predictor, size, config.batch_size, tuple(predictor.type_names[1:]))  # ids 1..K; 0 background
