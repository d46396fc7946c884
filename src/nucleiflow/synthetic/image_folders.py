"""A folder of new images in the image_folders layout, as a biologist would bring it.

Nuclei drawn like the synthetic DSB2018 images but from another seed, so no demo
model has seen them: 16-bit grey TIFFs (microscope exports) and 8-bit RGB PNGs,
the first `n_masked` with an instance label image (uint16 TIFF), the rest unlabelled.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from nucleiflow.io import atomic_dir
from nucleiflow.synthetic.dsb2018 import make_sample

MODALITIES = ("fluorescence", "brightfield")


def write_image_folders(out_dir: str | os.PathLike, n_images: int = 4, n_masked: int = 2, seed: int = 1007) -> dict:
    """Write `out_dir/images/cell_<k>.{tif,png}` (+ `masks/cell_<k>.tif` for the first `n_masked`)."""
    rng = np.random.default_rng(seed)
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        for k in range(n_images):
            modality = MODALITIES[k % len(MODALITIES)]
            image, masks = make_sample(rng, modality)
            stem = f"cell_{k:02d}"
            if modality == "fluorescence":  # a 16-bit grey export with a dark offset
                grey = image[..., 0].astype(np.uint16) * 64 + 500
                tifffile.imwrite(Path(tmp) / "images" / f"{stem}.tif", grey)
            else:
                Image.fromarray(np.ascontiguousarray(image[..., :3])).save(Path(tmp) / "images" / f"{stem}.png")
            if k < n_masked:
                labels = np.zeros(image.shape[:2], np.uint16)
                for label, mask in enumerate(masks, start=1):
                    labels[mask] = label
                tifffile.imwrite(Path(tmp) / "masks" / f"{stem}.tif", labels)
    return {"images": n_images, "masks": min(n_masked, n_images)}
