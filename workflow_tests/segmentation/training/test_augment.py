"""Augmentation keeps image and mask aligned, and the mask binary, under every geometric transform."""

import numpy as np
import pytest

from nucleiflow.segmentation.training.augment import build_pipeline, load_pipeline, save_pipeline

FOREGROUND, BACKGROUND = 200, 30  # grey levels; the rotation fills uncovered corners with 0 (background too)
# Bilinear image vs nearest-neighbour mask: a pixel whose nearest source is foreground keeps at least a
# quarter of its weight there (>= 50), one whose nearest source is background at most three quarters (<= 157.5).
SURELY_IN, SURELY_OUT = 160, 45
GEOMETRIC = {
    "rotate": {"rotate": True, "hflip": 0.0, "vflip": 0.0},
    "hflip": {"rotate": False, "hflip": 1.0, "vflip": 0.0},
    "vflip": {"rotate": False, "hflip": 0.0, "vflip": 1.0},
    "all": {"rotate": True, "hflip": 0.5, "vflip": 0.5},
}


def asymmetric_pair() -> tuple[np.ndarray, np.ndarray]:
    """An 'F' of thick bars, off centre: no flip or rotation maps it onto itself; mask = image is foreground."""
    image = np.full((72, 72, 3), BACKGROUND, np.uint8)
    image[12:60, 14:24] = FOREGROUND  # the stem
    image[12:22, 24:54] = FOREGROUND  # the top bar
    image[32:41, 24:44] = FOREGROUND  # the middle bar
    return image, (image[..., 0] == FOREGROUND).astype(np.uint8)  # uint8 0/1, as Store.mask gives


def assert_aligned_and_binary(image: np.ndarray, mask: np.ndarray) -> None:
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    grey = image[..., 0].astype(int)
    assert (mask[grey >= SURELY_IN] == 1).all(), "bright (foreground) pixels outside the mask"
    assert (mask[grey <= SURELY_OUT] == 0).all(), "dark (background) pixels inside the mask"
    # Only a band along the shape's edge is ambiguous.
    assert ((grey > SURELY_OUT) & (grey < SURELY_IN)).mean() < 0.15


@pytest.mark.parametrize("transform", sorted(GEOMETRIC))
def test_geometric_transforms_keep_image_and_mask_aligned_and_binary(transform, tmp_path):
    image, mask = asymmetric_pair()
    spec = {**GEOMETRIC[transform], "brightness_contrast": 0.0, "gaussian_blur": 0.0}
    save_pipeline(build_pipeline(spec), tmp_path / "pipeline.json")
    pipeline = load_pipeline(tmp_path / "pipeline.json")  # what the training jobs apply
    moved = 0
    for seed in range(12):
        pipeline.set_random_seed(seed)
        out = pipeline(image=image, mask=mask)
        assert out["image"].shape == image.shape and out["mask"].shape == mask.shape
        assert_aligned_and_binary(out["image"], out["mask"])
        moved += not np.array_equal(out["mask"], mask)
        if transform == "hflip":
            np.testing.assert_array_equal(out["mask"], mask[:, ::-1])
            np.testing.assert_array_equal(out["image"], image[:, ::-1])
        if transform == "vflip":
            np.testing.assert_array_equal(out["mask"], mask[::-1])
            np.testing.assert_array_equal(out["image"], image[::-1])
    assert moved >= 6, f"{transform} left the pair unchanged in {12 - moved} of 12 draws"


def test_photometric_transforms_leave_the_mask_untouched():
    image, mask = asymmetric_pair()
    spec = {"rotate": False, "hflip": 0.0, "vflip": 0.0, "brightness_contrast": 0.3, "gaussian_blur": 1.0}
    pipeline = build_pipeline(spec)
    changed = 0
    for seed in range(6):
        pipeline.set_random_seed(seed)
        out = pipeline(image=image, mask=mask)
        np.testing.assert_array_equal(out["mask"], mask)
        changed += not np.array_equal(out["image"], image)
    assert changed >= 3
