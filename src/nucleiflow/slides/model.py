"""The model side of the slide stage: maps of native-scale tiles, nuclei of a chunk's maps, nucleus types.

`SlideModel` is what `chunks.segment_chunk` calls; any object with the same four members works (the
tests pass a stain-threshold stand-in). `load_slide_model` builds one from a trained model: the tiles go
through the network exactly as in training (pre-filter, input scaling, the model's test-time
augmentation), and nuclei come from the model's tuned post-processing (its postprocess.json) or its
experiment's fixed settings, as for the `inference:` stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nucleiflow.datasets.pannuke import CLASS_NAMES as PANNUKE_CLASS_NAMES

# QuPath's default colours of the PanNuke classes (neoplastic, inflammatory, connective, dead,
# epithelial): the Okabe-Ito colour-blind-safe palette, as packed RGB ints in the GeoJSON.
TYPE_COLOURS = ((213, 94, 0), (0, 114, 178), (0, 158, 115), (86, 86, 86), (230, 159, 0))


@dataclass
class SlideModel:
    """A loaded model as the slide stage uses it (`type_names` empty: no type head)."""

    predictor: object
    tile_size: int
    batch_size: int
    type_names: tuple[str, ...] = ()

    def predict_maps_batch(self, tiles: list[np.ndarray]) -> list[np.ndarray]:
        """Maps (C, T, T) float32 of RGB uint8 tiles (T, T, 3), each at its native scale."""
        return self.predictor.predict_maps_batch(tiles)

    def nuclei(self, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(int instance map, type probabilities (K, H, W) or None) of one region's maps."""
        labels, _ = self.predictor.nuclei_from_maps(maps)
        return labels, self.predictor.type_probabilities(maps)


class _LoadedPredictor:
    """Tiles straight through the network (no resize, no second tiling): the slide stage tiles itself."""

    def __init__(self, loaded):
        self.loaded = loaded

    def predict_maps_batch(self, tiles):
        import torch

        from nucleiflow.segmentation.data import prepare_image, to_tensor
        from nucleiflow.segmentation.inference import forward_maps

        loaded = self.loaded
        batch = torch.stack([to_tensor(prepare_image(t, loaded.prefilter_sigma), loaded.input_scaling) for t in tiles])
        return list(forward_maps(loaded.model, batch, loaded.setup, loaded.layout, loaded.tta).astype(np.float32))

    def nuclei_from_maps(self, maps):
        from nucleiflow.segmentation.inference import nuclei_of

        return nuclei_of(maps, self.loaded.layout, self.loaded.options.watershed), None

    def type_probabilities(self, maps):
        layout = self.loaded.layout
        if not layout.type_classes:
            return None
        return maps[layout.types][1:]  # channel 0 of the type head is background


def load_slide_model(
    spec: dict,
    model_path,
    *,
    threads: int = 1,
    postprocess: dict | None = None,
    params_path=None,
    tile_size: int | None = None,
    batch_size: int | None = None,
) -> SlideModel:
    """A trained model for the slide stage; `tile_size` (a multiple of 32) defaults to 256 px or the training size."""
    from nucleiflow.segmentation.predict import load_model

    loaded = load_model(spec, model_path, threads, postprocess=postprocess, params_path=params_path)
    size = tile_size or max(256, loaded.size)
    names = PANNUKE_CLASS_NAMES if loaded.layout.type_classes else ()
    return SlideModel(_LoadedPredictor(loaded), size, batch_size or loaded.batch_size, tuple(names))
