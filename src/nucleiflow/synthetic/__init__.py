"""Seeded synthetic stand-ins for the real dataset releases, in their exact layouts.

`pannuke`, `dsb2018` and `nucrec` each write one release's archive(s); `demo`
writes the small set the demo workflow uses; `shapes` holds the drawing code
they share. This module holds the packing conventions they share: fixed zip
timestamps, sorted entries and fixed compression levels, so that one seed
always gives byte-identical archives.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from nucleiflow.io import atomic_path

ZIP_DATE_TIME = (2018, 1, 1, 0, 0, 0)
ZIP_COMPRESS_LEVEL = 1  # the arrays are large; level 1 is fast and still shrinks them well
PNG_COMPRESS_LEVEL = 6


def png_bytes(image: np.ndarray | Image.Image) -> bytes:
    """Encode an image (uint8 array or PIL image) as PNG, without metadata."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    """Serialise an array as a .npy file (no pickling)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_zip(path: str | os.PathLike, entries: Mapping[str, bytes]) -> Path:
    """Write `entries` (member name -> bytes) to the zip at `path`, atomically and reproducibly."""
    path = Path(path)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        for name in sorted(entries):
            archive.writestr(_member_info(name), entries[name], compresslevel=ZIP_COMPRESS_LEVEL)
    return path


def _member_info(name: str) -> zipfile.ZipInfo:
    """ZipInfo with fixed date, permissions and host so the bytes do not depend on when or where."""
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # Unix, so the permission bits below mean what they say
    info.external_attr = 0o644 << 16
    return info
