"""Torch datasets and loaders over the store.

Images are brought to the training size by a config policy (`resize` or
`tile`), augmented with a per-sample seed (so results do not depend on
the number of workers and survive a resume), and scaled by `input_scaling`:
ImageNet statistics (the default; what smp's pretrained encoders expect) or
plain 0-1 (the classic U-Net study, Section 3.1).

`prepare_image` (the optional Gaussian pre-filter of the residual U-Net study)
and `to_tensor` are shared with inference, so a model sees the same input at
training and at test time. `preprocess_mask` builds the binary training target
(optionally the classic U-Net study's boundary extraction + region filling).

Training targets (`heads.OutputLayout`: binary, contour, hv, optional type head)
are derived on the fly, from the instance map after `fit_size` and augmentation,
not cached in the store: the contour target's boundary width (in pixels) and
the hv maps' per-nucleus scaling to [-1, 1] (HoVer-Net, Graham et al. 2019) are
defined in the geometry the network sees. A target derived first and then
resized or rotated would be wrong: a resize thins or thickens the boundary
(touching interiors can merge), and a rotated hv map still points along the old
axes. Instance ids go through the nearest-neighbour warps instead, which move
nuclei exactly; the type map, if any, travels in the same warp so image,
instances and types stay aligned. The binary target is a per-pixel function of
the mask (0 stays 0), so deriving it before or after a nearest-neighbour warp is
the same: it keeps the mask path (and `mask_preprocessing`) it always had.
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
from nucleiflow.errors import ConfigError, DataFormatError, choices_error
from nucleiflow.segmentation.representation.targets import packed_target
from nucleiflow.segmentation.training.heads import BINARY, OutputLayout
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
    """Bring an image/mask pair to (size, size) by the configured policy; `mask` is (H, W) or (H, W, K) maps.

    `resize` rescales the whole image (nuclei change scale); `tile` keeps the
    native scale and cuts one size x size tile: random with an `rng`
    (training), the centre one without (validation). Inference with `tile`
    covers the whole image with overlapping tiles (`predictor.Predictor`).
    """
    if policy == "resize":
        return resize_pair(image, mask, size)
    if policy == "tile":
        image, mask = pad_to(image, size), pad_to(mask, size, mode="constant")
        h, w = mask.shape[:2]
        if rng is None:
            y, x = (h - size) // 2, (w - size) // 2
        else:
            y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        return image[y : y + size, x : x + size], mask[y : y + size, x : x + size]
    raise choices_error("training.size_policy", policy, SIZE_POLICIES)


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int):
    h, w = mask.shape[:2]
    if (h, w) != (size, size):
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if h > size else cv2.INTER_LINEAR)
        resized = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
        mask = resized.reshape(size, size, *mask.shape[2:])  # OpenCV drops a trailing axis of length 1
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


MAX_UINT16_ID = np.iinfo(np.uint16).max
MAX_FLOAT32_ID = 2**24  # float32 holds every integer up to 2**24 exactly


def warpable_ids(instances: np.ndarray, where: str = "instance map") -> np.ndarray:
    """An instance map in a dtype OpenCV warps exactly: uint16 while ids fit, else ids relabelled 1..n (uint16/float32).

    OpenCV's geometric warps (what albumentations calls) take uint8, uint16, int16 and float32 maps; with
    nearest-neighbour interpolation each output pixel is a copy of one input pixel, so ids come through intact.
    """
    labels = np.asarray(instances)
    if labels.size and labels.min() < 0:
        raise DataFormatError(f"{where}: negative instance id {labels.min()}; expected 0 background, 1..n nuclei")
    if not labels.size or labels.max() <= MAX_UINT16_ID:
        return labels.astype(np.uint16)
    ids, inverse = np.unique(labels, return_inverse=True)
    relabelled = inverse.reshape(labels.shape) + (0 if ids[0] == 0 else 1)
    top = int(relabelled.max())
    if top <= MAX_UINT16_ID:
        return relabelled.astype(np.uint16)
    if top <= MAX_FLOAT32_ID:
        return relabelled.astype(np.float32)
    raise DataFormatError(f"{where}: {top} nuclei in one image; at most {MAX_FLOAT32_ID} can be augmented exactly")


def _check_ids_survive(before: np.ndarray, after: np.ndarray, what: str, where: str) -> None:
    """Refuse a warp that made up ids (a mask interpolated, not nearest-neighbour): they would be fake nuclei."""
    if before.dtype == np.float32:
        survived = np.isin(after, before).all()
    else:
        present = np.bincount(before.ravel().astype(np.int64)) > 0
        survived = after.size == 0 or (int(after.max()) < len(present) and present[after.astype(np.int64)].all())
    if not survived:
        raise ConfigError(
            f"{where}: the augmentation pipeline made {what} that were not in the input; "
            "masks must be warped with nearest-neighbour interpolation (mask_interpolation: 0)"
        )


class SegmentationDataset(Dataset):
    """(image, target, index) triples from a store; the target is float32 (K, H, W) packed for `layout`.

    binary: (1, H, W) 0/1; contour: (1, H, W) class index; hv: (3, H, W); with a type head one more
    channel, the type class index (`targets.packed_target`). See the module docstring for why targets
    are derived after resizing and augmentation.
    """

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
        layout: OutputLayout = BINARY,
    ):
        if policy not in SIZE_POLICIES:
            raise choices_error("training.size_policy", policy, SIZE_POLICIES)
        if input_scaling not in INPUT_SCALINGS:
            raise choices_error("training.input_scaling", input_scaling, INPUT_SCALINGS)
        if mask_preprocessing not in MASK_PREPROCESSING:
            raise choices_error("training.mask_preprocessing", mask_preprocessing, MASK_PREPROCESSING)
        if layout.target != "binary" and mask_preprocessing != "none":
            raise ConfigError(
                f"training.mask_preprocessing: {mask_preprocessing!r} makes a binary mask; "
                f"target {layout.target!r} is derived from the instance maps (use mask_preprocessing: none)"
            )
        self.input_scaling, self.mask_preprocessing, self.layout = input_scaling, mask_preprocessing, layout
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

    def _where(self, image_id: str) -> str:
        return f"{getattr(self.store, 'path', 'store')}/{image_id}"

    def _maps(self, sample) -> list[np.ndarray]:
        """The per-pixel maps that travel with the image: the binary mask or instance ids, then the type map."""
        where = self._where(sample.image_id)
        if self.layout.target == "binary":
            maps = [preprocess_mask(sample.instances, self.mask_preprocessing)]
        else:
            maps = [warpable_ids(sample.instances, where)]
        if self.layout.type_classes:
            if sample.classes is None:
                raise DataFormatError(
                    f"{where}: training.type_head needs a nucleus type map and this store has none "
                    "(a type head needs a pannuke-format dataset)"
                )
            classes = np.asarray(sample.classes)
            if classes.size and int(classes.max()) >= self.layout.type_classes:
                raise DataFormatError(
                    f"{where}: type map holds class {int(classes.max())}; "
                    f"a type head of {self.layout.type_classes} classes takes 0..{self.layout.type_classes - 1}"
                )
            maps.append(classes)
        return maps

    def __getitem__(self, index: int):
        sample = self.store[self.ids[index]]
        image = prepare_image(sample.image, self.prefilter_sigma)
        maps = self._maps(sample)
        # One array for every map, so a tile, a resize and each augmentation move them all identically.
        dtype = np.result_type(*maps)
        stacked = maps[0] if len(maps) == 1 else np.stack([m.astype(dtype, copy=False) for m in maps], axis=-1)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image, stacked = fit_size(image, stacked, self.size, self.policy, rng if self.random_tiles else None)
        if self.transform is not None:
            self.transform.set_random_seed(int(rng.integers(2**31)))
            out = self.transform(image=image, mask=stacked)
            if self.layout != BINARY:
                what = ("mask values" if self.layout.target == "binary" else "instance ids", "type classes")
                for name, before, after in zip(what, _unstack(stacked), _unstack(out["mask"])):
                    _check_ids_survive(before, after, name, self._where(sample.image_id))
            image, stacked = out["image"], out["mask"]
        if self.layout == BINARY:  # the mask path as it always was
            target = stacked[None].astype(np.float32)
        else:
            first, *classes = _unstack(stacked)
            target = packed_target(self.layout.target, first.astype(np.int32), classes[0] if classes else None)
        return to_tensor(image, self.input_scaling), torch.from_numpy(target), index


def _unstack(stacked: np.ndarray) -> list[np.ndarray]:
    """The (H, W) maps of an (H, W) or (H, W, K) array."""
    return [stacked] if stacked.ndim == 2 else [stacked[..., k] for k in range(stacked.shape[-1])]


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
