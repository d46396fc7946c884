"""The common HDF5 store: round trip, validation, atomicity, worker safety."""

import pickle

import numpy as np
import pytest

from nucleiflow.errors import DataFormatError
from nucleiflow.store import Store, StoreWriter


def _sample(rng, h=20, w=30):
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    instances = np.zeros((h, w), np.int32)
    instances[2:6, 2:6] = 1
    instances[10:15, 10:20] = 2
    return image, instances


def test_round_trip_keeps_native_sizes_and_metadata(tmp_path, rng):
    path = tmp_path / "s.h5"
    a, b = _sample(rng), _sample(rng, 40, 25)
    with StoreWriter(path, "toy", ["background", "a", "b"]) as writer:
        writer.add("img_a", *a, classes=(a[1] > 0).astype(np.uint8), tissue="Colon")
        writer.add("img_b", *b)
    store = Store(path)
    assert store.ids == ["img_a", "img_b"]
    assert store.class_names == ["background", "a", "b"]
    sample = store["img_b"]
    assert sample.image.shape == (40, 25, 3) and sample.classes is None
    np.testing.assert_array_equal(sample.image, b[0])
    np.testing.assert_array_equal(store.mask("img_a"), (a[1] > 0).astype(np.uint8))
    meta = store.metadata.set_index("image_id")
    assert meta.loc["img_a", "n_nuclei"] == 2 and meta.loc["img_a", "tissue"] == "Colon"
    assert meta.loc["img_b", "height"] == 40


def test_mask_size_mismatch_names_the_image(tmp_path, rng):
    image, _ = _sample(rng)
    with pytest.raises(DataFormatError, match="toy/bad: mask size"), StoreWriter(tmp_path / "s.h5", "toy") as writer:
        writer.add("bad", image, np.zeros((5, 5), np.int32))
    assert not (tmp_path / "s.h5").exists()


def test_empty_store_and_duplicate_ids_are_errors(tmp_path, rng):
    with pytest.raises(DataFormatError, match="no images"), StoreWriter(tmp_path / "e.h5", "toy"):
        pass
    with pytest.raises(DataFormatError, match="duplicate image id"), StoreWriter(tmp_path / "d.h5", "toy") as writer:
        writer.add("x", *_sample(rng))
        writer.add("x", *_sample(rng))
    assert list(tmp_path.iterdir()) == []


def test_store_pickles_for_loader_workers(pannuke_store):
    store = Store(pannuke_store)
    first = store[store.ids[0]].image
    clone = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(clone[store.ids[0]].image, first)


def test_missing_image_and_missing_store(pannuke_store, tmp_path):
    with pytest.raises(DataFormatError, match="no image 'nope'"):
        Store(pannuke_store)["nope"]
    with pytest.raises(DataFormatError, match="store not found"):
        Store(tmp_path / "absent.h5")
