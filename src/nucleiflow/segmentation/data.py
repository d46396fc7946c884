"""Torch datasets and loaders over the store.

Images are brought to the training size by a config policy (`resize` or
`tile`), augmented with a per-sample seed (so results do not depend on
the number of workers and survive a resume), and scaled by `input_scaling`:
ImageNet statistics (the default; what smp's pretrained encoders expect) or
plain 0-1 (the classic U-Net study, Section 3.1).

`prepare_image` (the optional Gaussian pre-filter of the residual U-Net study)
and `to_tensor` are shared with inference, so a model sees the same input at
training and at test time. `preprocess_mask` builds the training target
(optionally the classic U-Net study's boundary extraction + region filling).
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from scipy.ndimage import gaussian_filter
from torch.utils.data import DataLoader, Dataset

from nucleiflow.catalog import INPUT_SCALINGS, MASK_PREPROCESSING
from nucleiflow.device import IN_PROCESS, DeviceSetup, loader_kwargs
from nucleiflow.errors import choices_error
from nucleiflow.store import Store

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
SIZE_POLICIES = ("resize", "tile")


def split_ids(manifest: pd.DataFrame, split: str) -> list[str]:
    ids = manifest.loc[manifest["split"] == split, "image_id"].tolist()
    if not ids:
        raise ValueError(f"split manifest has no {split!r} images")
    return ids


def fit_size(image: np.ndarray, mask: np.ndarray, size: int, policy: str, rng: np.random.Generator | None):
    """Bring an image/mask pair to (size, size) by the configured policy.

    `resize` rescales the whole image (nuclei change scale); `tile` keeps the
    native scale and cuts one size x size tile: random with an `rng`
    (training), the centre one without (validation). Inference with `tile`
    covers the whole image with overlapping tiles (evaluation.predict_tiled).
    """
    if policy == "resize":
        return resize_pair(image, mask, size)
    if policy == "tile":
        image, mask = pad_to(image, size), pad_to(mask, size, mode="constant")
        h, w = mask.shape
        if rng is None:
            y, x = (h - size) // 2, (w - size) // 2
        else:
            y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        return image[y : y + size, x : x + size], mask[y : y + size, x : x + size]
    raise choices_error("training.size_policy", policy, SIZE_POLICIES)


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int):
    h, w = mask.shape
    if (h, w) != (size, size):
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if h > size else cv2.INTER_LINEAR)
        mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
    return image, mask


def pad_to(array: np.ndarray, size: int, mode: str = "reflect") -> np.ndarray:
    """Pad the bottom and right so both sides are at least `size` (small images are not upscaled)."""
    ph, pw = max(0, size - array.shape[0]), max(0, size - array.shape[1])
    if not (ph or pw):
        return array
    pad = ((0, ph), (0, pw)) + ((0, 0),) * (array.ndim - 2)
    return np.pad(array, pad, mode=mode)


def prepare_image(image: np.ndarray, prefilter_sigma: float = 0.0) -> np.ndarray:
    """The native-size image the model's input is cut or resized from: Gaussian pre-filtered per channel if asked.

    Training and inference both call this, before `fit_size` / resizing / tiling (residual U-Net study,
    Section 5.1.3: Gaussian filtering with sigma 1.5).
    """
    if not prefilter_sigma:
        return image
    return gaussian_filter(image, sigma=(prefilter_sigma, prefilter_sigma, 0))


def to_tensor(image: np.ndarray, scaling: str = "imagenet") -> torch.Tensor:
    """uint8 HWC -> float32 CHW, scaled to 0-1 and, for `imagenet`, standardised with ImageNet statistics."""
    x = image.astype(np.float32) / 255.0
    if scaling == "imagenet":
        x = (x - IMAGENET_MEAN) / IMAGENET_STD
    elif scaling != "unit":
        raise choices_error("training.input_scaling", scaling, INPUT_SCALINGS)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def boundary_fill(instances: np.ndarray) -> np.ndarray:
    """Binary mask from each nucleus's boundary, region-filled (classic U-Net study, Section 3.1).

    Per nucleus: the boundary is the nucleus minus its erosion, and region filling fills what that boundary
    encloses. A nucleus with a hole comes back solid; background enclosed by several touching nuclei stays
    background, because each nucleus is filled on its own.
    """
    out = np.zeros(instances.shape, bool)
    for label, box in enumerate(ndimage.find_objects(instances), start=1):
        if box is None:
            continue
        # One pixel of margin, so a boundary touching the crop's edge is still a closed curve.
        nucleus = np.pad(instances[box] == label, 1)
        boundary = nucleus & ~ndimage.binary_erosion(nucleus)
        out[box] |= ndimage.binary_fill_holes(boundary)[1:-1, 1:-1]
    return out


def preprocess_mask(instances: np.ndarray, method: str = "none") -> np.ndarray:
    """The uint8 0/1 training target of an instance map by `training.mask_preprocessing`."""
    if method == "none":
        return (instances > 0).astype(np.uint8)
    if method == "boundary_fill":
        return boundary_fill(instances).astype(np.uint8)
    raise choices_error("training.mask_preprocessing", method, MASK_PREPROCESSING)


class SegmentationDataset(Dataset):
    """(image, mask, index) triples from a store; masks are binary float (1, H, W)."""

    def __init__(
        self,
        store: Store,
        ids: list[str],
        size: int,
        *,
        policy: str = "resize",
        transform=None,
        seed: int = 0,
        prefilter_sigma: float = 0.0,
        random_tiles: bool = False,
        input_scaling: str = "imagenet",
        mask_preprocessing: str = "none",
    ):
        if policy not in SIZE_POLICIES:
            raise choices_error("training.size_policy", policy, SIZE_POLICIES)
        if input_scaling not in INPUT_SCALINGS:
            raise choices_error("training.input_scaling", input_scaling, INPUT_SCALINGS)
        if mask_preprocessing not in MASK_PREPROCESSING:
            raise choices_error("training.mask_preprocessing", mask_preprocessing, MASK_PREPROCESSING)
        self.input_scaling, self.mask_preprocessing = input_scaling, mask_preprocessing
        self.store, self.ids, self.size, self.policy = store, list(ids), size, policy
        self.transform, self.seed, self.prefilter_sigma = transform, seed, prefilter_sigma
        self.random_tiles = random_tiles  # training: a random tile per draw; otherwise the centre tile
        # In shared memory, so that persistent loader workers (which hold copies of this dataset) see set_epoch.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Augmentations are seeded by (seed, epoch, index): reproducible on resume."""
        self._epoch.fill_(epoch)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        sample = self.store[self.ids[index]]
        image = prepare_image(sample.image, self.prefilter_sigma)
        mask = preprocess_mask(sample.instances, self.mask_preprocessing)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image, mask = fit_size(image, mask, self.size, self.policy, rng if self.random_tiles else None)
        if self.transform is not None:
            self.transform.set_random_seed(int(rng.integers(2**31)))
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return to_tensor(image, self.input_scaling), torch.from_numpy(mask[None].astype(np.float32)), index


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    setup: DeviceSetup | None = None,
    workers: int | None = None,
    pin_memory: bool | None = None,
) -> DataLoader:
    """A seeded loader with `loader_kwargs(setup)`: persistent workers limited to one thread each, pinned on CUDA.

    Without `setup`, data loads in-process; `workers` and `pin_memory` override either.
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    # A trailing batch of one breaks batch norm (DeepLabV3+'s image pooling): drop it when training.
    drop_last = shuffle and len(dataset) > batch_size
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        drop_last=drop_last,
        **loader_kwargs(setup or IN_PROCESS, workers=workers, pin_memory=pin_memory),
    )
