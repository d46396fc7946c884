"""The common HDF5 store every segmentation dataset is converted to.

One file per dataset; one group per image so images keep their native size
(DSB2018) and a reader touches only the image it asks for. Layout in
docs/ARCHITECTURE.md. Writing goes to a temporary file renamed on close, so a
killed conversion never leaves a store that looks complete.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from nucleiflow.errors import DataFormatError
from nucleiflow.io import atomic_path

FORMAT_VERSION = 1
BINARY_CLASS_NAMES = ("background", "nucleus")


@dataclass
class Sample:
    image_id: str
    image: np.ndarray  # uint8 (H, W, 3)
    instances: np.ndarray  # int32 (H, W)
    classes: np.ndarray | None  # uint8 (H, W) or None

    @property
    def mask(self) -> np.ndarray:
        """Binary foreground (uint8 0/1)."""
        return (self.instances > 0).astype(np.uint8)


class StoreWriter:
    """Context manager writing a store atomically: `with StoreWriter(p, "pannuke") as w: w.add(...)`."""

    def __init__(self, path: str | os.PathLike, dataset: str, class_names=BINARY_CLASS_NAMES):
        self.path = Path(path)
        self.dataset = dataset
        self.class_names = list(class_names)
        self._records: list[dict] = []
        self._atomic: contextlib.AbstractContextManager[Path] | None = None
        self._file: h5py.File | None = None

    def __enter__(self) -> StoreWriter:
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        self._file = h5py.File(tmp, "w")
        self._file.attrs["dataset"] = self.dataset
        self._file.attrs["format_version"] = FORMAT_VERSION
        self._file.attrs["class_names"] = json.dumps(self.class_names)
        self._samples = self._file.create_group("samples")
        return self

    def add(
        self,
        image_id: str,
        image: np.ndarray,
        instances: np.ndarray | None,
        classes: np.ndarray | None = None,
        **meta,
    ) -> None:
        """Add one image; validates dtypes and shapes so errors name the image.

        `instances` None stores an unlabelled image (inference only): no `instances`
        dataset, `labelled: false` and `n_nuclei: null` in its metadata record.
        """
        if image_id in self._samples:
            raise DataFormatError(f"{self.dataset}: duplicate image id {image_id!r}")
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise DataFormatError(
                f"{self.dataset}/{image_id}: image must be uint8 (H, W, 3), got {image.dtype} {image.shape}"
            )
        if instances is None:
            group = self._samples.create_group(image_id)
            _write(group, "image", image, image.shape)
            h, w = image.shape[:2]
            self._records.append(
                {"image_id": image_id, "height": int(h), "width": int(w), "n_nuclei": None, **meta, "labelled": False}
            )
            return
        if instances.shape != image.shape[:2]:
            raise DataFormatError(
                f"{self.dataset}/{image_id}: mask size {instances.shape} differs from image size {image.shape[:2]}"
            )
        group = self._samples.create_group(image_id)
        h, w = instances.shape
        _write(group, "image", image, (h, w, 3))
        _write(group, "instances", instances.astype(np.int32, copy=False), (h, w))
        if classes is not None:
            _write(group, "classes", classes.astype(np.uint8, copy=False), (h, w))
        record = {
            "image_id": image_id,
            "height": int(h),
            "width": int(w),
            "n_nuclei": int(len(np.unique(instances)) - (instances.min() == 0)),
        }
        record.update(meta)
        self._records.append(record)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None and not self._records:
            exc = DataFormatError(f"{self.dataset}: no images to write to {self.path}")
            exc_type, tb = type(exc), None
        assert self._file is not None and self._atomic is not None  # set by __enter__
        try:
            if exc is None:
                self._file.create_dataset("metadata", data=json.dumps(self._records, default=_plain))
        except BaseException as err:
            exc, exc_type, tb = err, type(err), err.__traceback__
        self._file.close()
        # atomic_path renames on success and removes the temporary on error.
        self._atomic.__exit__(exc_type, exc, tb)
        if exc is not None and exc_type is not None:
            raise exc


def _write(group: h5py.Group, name: str, array: np.ndarray, chunks) -> None:
    # One chunk per image: a reader decompresses exactly the image it needs.
    group.create_dataset(name, data=array, chunks=chunks, compression="gzip", compression_opts=4, shuffle=True)


def _plain(value):
    return value.item() if hasattr(value, "item") else str(value)


class Store:
    """Read-only access to a store. Opens the HDF5 file lazily, per process, so
    it is safe to pass to DataLoader workers."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise DataFormatError(f"{self.path}: store not found (run the convert rule first)")
        self._file: h5py.File | None = None
        self._pid: int | None = None
        with h5py.File(self.path, "r") as f:
            if f.attrs.get("format_version") != FORMAT_VERSION:
                raise DataFormatError(
                    f"{self.path}: store format {f.attrs.get('format_version')!r}, expected {FORMAT_VERSION}"
                )
            self.dataset = str(f.attrs["dataset"])
            self.class_names = json.loads(f.attrs["class_names"])
            self.metadata = pd.DataFrame(json.loads(f["metadata"][()]))
        self.ids = list(self.metadata["image_id"])

    def __len__(self) -> int:
        return len(self.ids)

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def _group(self, image_id: str) -> h5py.Group:
        try:
            return self._h5()["samples"][image_id]
        except KeyError:
            raise DataFormatError(f"{self.path}: no image {image_id!r} in the store") from None

    @property
    def labelled_ids(self) -> list[str]:
        """Ids of the images with an instance map (all but the unlabelled images of an image_folders store)."""
        if "labelled" not in self.metadata.columns:
            return list(self.ids)
        labelled = self.metadata["labelled"].fillna(True).astype(bool)
        return list(self.metadata.loc[labelled, "image_id"])

    def __getitem__(self, image_id: str) -> Sample:
        group = self._group(image_id)
        classes = group["classes"][()] if "classes" in group else None
        return Sample(image_id, group["image"][()], self._instances(image_id, group), classes)

    def _instances(self, image_id: str, group: h5py.Group) -> np.ndarray:
        if "instances" not in group:
            raise DataFormatError(f"{self.path}: image {image_id!r} is unlabelled (no mask); only prediction reads it")
        return group["instances"][()]

    def image(self, image_id: str) -> np.ndarray:
        return self._group(image_id)["image"][()]

    def mask(self, image_id: str) -> np.ndarray:
        return (self._instances(image_id, self._group(image_id)) > 0).astype(np.uint8)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self):
        # h5py handles do not pickle; workers reopen on first access.
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state
