"""Online augmentation pipelines for segmentation, defined in the config.

The augment stage serialises the pipeline to JSON (albumentations' own format)
so that every training job of an experiment loads the exact same definition,
and a reviewer can read what was applied.
"""

from __future__ import annotations

from pathlib import Path

import albumentations as A

from nucleiflow.io import atomic_path

DEFAULTS = {
    "rotate": True,
    "hflip": 0.5,
    "vflip": 0.5,
    "brightness_contrast": 0.2,
    "gaussian_blur": 0.0,
    "gauss_noise": 0.0,
    "jpeg": 0.0,
    "he_stain": 0.0,
}
# Magnitudes of the image-quality augmentations, spanning the robustness sweep's severities.
NOISE_SIGMA = (2.0, 25.0)  # grey levels
JPEG_QUALITY = (20, 95)
STAIN_SCALE = (0.7, 1.3)  # H and E concentrations multiplied by a factor in this range


def build_pipeline(spec: dict | None) -> A.Compose:
    """Compose from a config spec such as {rotate: true, hflip: 0.5, brightness_contrast: 0.2}.

    Rotations cover 0-360 degrees (nuclei have no preferred orientation); masks
    follow every geometric transform with nearest-neighbour interpolation.
    """
    spec = {**DEFAULTS, **(spec or {})}
    transforms = []
    if spec["rotate"]:
        transforms.append(A.Rotate(limit=180, border_mode=0, p=1.0))
    if spec["hflip"]:
        transforms.append(A.HorizontalFlip(p=spec["hflip"]))
    if spec["vflip"]:
        transforms.append(A.VerticalFlip(p=spec["vflip"]))
    if spec["brightness_contrast"]:
        limit = spec["brightness_contrast"]
        transforms.append(A.RandomBrightnessContrast(brightness_limit=limit, contrast_limit=limit, p=0.5))
    if spec["gaussian_blur"]:
        transforms.append(A.GaussianBlur(blur_limit=(3, 5), p=spec["gaussian_blur"]))
    if spec["gauss_noise"]:
        std_range = (NOISE_SIGMA[0] / 255.0, NOISE_SIGMA[1] / 255.0)
        transforms.append(A.GaussNoise(std_range=std_range, p=spec["gauss_noise"]))
    if spec["jpeg"]:
        transforms.append(A.ImageCompression(compression_type="jpeg", quality_range=JPEG_QUALITY, p=spec["jpeg"]))
    if spec["he_stain"]:
        transforms.append(
            A.HEStain(
                method="macenko",
                intensity_scale_range=STAIN_SCALE,
                intensity_shift_range=(0.0, 0.0),
                p=spec["he_stain"],
            )
        )
    return A.Compose(transforms)


def save_pipeline(pipeline: A.Compose, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        A.save(pipeline, str(tmp), data_format="json")


def load_pipeline(path: str | Path) -> A.Compose:
    return A.load(str(path), data_format="json")


def preview_views(pipeline: A.Compose, pairs, n_views: int, seed: int) -> list[list[tuple]]:
    """For each (image, mask): the original and `n_views - 1` augmented draws."""
    rows = []
    for i, (image, mask) in enumerate(pairs):
        views = [(image, mask)]
        for k in range(1, n_views):
            pipeline.set_random_seed(seed + 1000 * i + k)
            out = pipeline(image=image, mask=mask)
            views.append((out["image"], out["mask"]))
        rows.append(views)
    return rows
