"""Exploratory data analysis: touching/circularity measures, tables on synthetic and real stores, the figure."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import SHARED_DSB
from matplotlib.figure import Figure

from nucleiflow import eda
from nucleiflow.datasets.dsb2018 import convert_dsb2018
from nucleiflow.reporting.figures import save_figure, use_style
from nucleiflow.store import Store

SHARED_SUBSET = 12  # images linked from the shared sample: enough modalities, a few seconds


def test_touching_means_8_neighbours_after_one_pixel_dilation():
    labels = np.zeros((12, 20), np.int32)
    labels[1:4, 1:4] = 1
    labels[1:4, 4:7] = 2  # shares an edge with 1
    labels[4:6, 7:9] = 3  # meets 2 only at a corner (8-neighbour)
    labels[8:11, 1:4] = 4
    labels[8:11, 5:8] = 5  # one background pixel between 4 and 5: not touching
    labels[1:3, 15:18] = 6  # alone
    assert eda.touching_labels(labels).tolist() == [1, 2, 3]
    assert eda.touching_labels(np.zeros((4, 4), np.int32)).size == 0


def test_circularity_of_disk_and_thin_bar():
    labels = np.zeros((80, 80), np.int32)
    yy, xx = np.ogrid[:80, :80]
    labels[(yy - 25) ** 2 + (xx - 25) ** 2 <= 18**2] = 1
    labels[60:63, 5:75] = 2
    labels[70, 70] = 3  # a single pixel
    table = eda.nucleus_table("x", labels).set_index("label")
    assert table.loc[1, "circularity"] == pytest.approx(1.0, abs=0.12)
    assert table.loc[2, "circularity"] < 0.3
    assert table.loc[1, "area"] == pytest.approx(math.pi * 18**2, rel=0.03)
    assert math.isnan(table.loc[3, "circularity"])  # perimeter 0: undefined, not infinite
    assert not table["touching"].any()


def check_tables(tables: eda.EdaTables, store: Store) -> None:
    per_image = tables.per_image
    assert list(per_image.columns) == list(eda.PER_IMAGE_COLUMNS)
    assert per_image["image_id"].tolist() == store.ids
    meta = store.metadata.set_index("image_id")
    assert (per_image.set_index("image_id")["n_nuclei"] == meta["n_nuclei"]).all()
    assert len(tables.nuclei) == per_image["n_nuclei"].sum()
    assert per_image["touching_share"].between(0, 1).all()
    assert per_image[["mean_area", "mean_intensity", "contrast"]].gt(0).all().all()
    assert (per_image[["height", "width"]].to_numpy() == meta[["height", "width"]].to_numpy()).all()


def test_synthetic_dsb_store(dsb_store):
    store = Store(dsb_store)
    tables = eda.measure_store(store)
    check_tables(tables, store)
    assert tables.per_image["modality"].tolist() == store.metadata["modality_hint"].tolist()
    overlaps = store.metadata["n_overlap_pixels"].to_numpy(float)
    np.testing.assert_array_equal(tables.per_image["n_overlap_pixels"].to_numpy(), overlaps)
    summary = eda.summary_table(tables.per_image)
    everything = summary.set_index("modality").loc[eda.ALL]
    assert everything["images"] == len(store) == summary["images"].iloc[:-1].sum()
    assert everything["nuclei"] == len(tables.nuclei)
    assert everything["images_with_overlaps"] == (overlaps > 0).sum()
    assert everything["mean_area"] == pytest.approx(tables.nuclei["area"].mean())


def test_synthetic_pannuke_store_and_figure(pannuke_store, tmp_path):
    store = Store(pannuke_store)
    tables = eda.measure_store(store)
    check_tables(tables, store)
    assert set(tables.per_image["modality"]) == {"he"}  # no hint in PanNuke: the colour rule applies
    summary = eda.summary_table(tables.per_image)
    assert summary["modality"].tolist() == ["he"]  # one modality: no separate `all` row
    use_style()
    fig = eda.eda_figure(tables.per_image, tables.nuclei)
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    paths = save_figure(fig, tmp_path / "eda.png")
    assert all(p.stat().st_size > 1000 for p in paths) and [p.suffix for p in paths] == [".png", ".pdf"]


def test_figure_copes_with_a_store_without_nuclei():
    import pandas as pd

    per_image = pd.DataFrame(
        [
            {
                "image_id": "a",
                "modality": "he",
                "height": 8,
                "width": 8,
                "n_nuclei": 0,
                "mean_area": np.nan,
                "mean_circularity": np.nan,
                "n_touching": 0,
                "touching_share": np.nan,
                "n_overlap_pixels": np.nan,
                "mean_intensity": 10.0,
                "contrast": 1.0,
            }
        ]
    )
    nuclei = pd.DataFrame(columns=list(eda.NUCLEUS_COLUMNS))
    assert len(eda.eda_figure(per_image, nuclei).axes) == 6
    assert eda.summary_table(per_image)["empty_images"].tolist() == [1]


@pytest.fixture(scope="module")
def shared_subset_store(tmp_path_factory, shared_dsb):  # shared_dsb skips when ../shared is absent
    """A store of the first shared images, read in place through symbolic links (nothing copied)."""
    base = tmp_path_factory.mktemp("shared_eda")
    root = base / "stage1_test"
    root.mkdir()
    for sample in sorted(p for p in SHARED_DSB.iterdir() if p.is_dir())[:SHARED_SUBSET]:
        (root / sample.name).symlink_to(sample, target_is_directory=True)
    convert_dsb2018([root], base / "store.h5", progress=False)
    return Store(base / "store.h5")


@pytest.mark.shared_data
def test_real_images(shared_subset_store, tmp_path):
    store = shared_subset_store
    tables = eda.measure_store(store)
    check_tables(tables, store)
    per_image = tables.per_image.set_index("image_id")
    modalities = set(per_image["modality"])
    assert len(modalities) >= 2
    assert 0.5 < tables.nuclei["circularity"].median() < 1.1  # nuclei are roundish
    summary = eda.summary_table(tables.per_image)
    assert summary.iloc[-1]["modality"] == eda.ALL and summary.iloc[-1]["images"] == SHARED_SUBSET
    use_style()
    assert all(p.exists() for p in save_figure(eda.eda_figure(tables.per_image, tables.nuclei), tmp_path / "eda.png"))
    # Fluorescence images are dark; brightfield and H&E bright.
    if "fluorescence" not in modalities:
        pytest.skip(f"dark-vs-bright not checked: the first {SHARED_SUBSET} shared images hold no fluorescence")
    dark = per_image.loc[per_image["modality"] == "fluorescence", "mean_intensity"]
    bright = per_image.loc[per_image["modality"] != "fluorescence", "mean_intensity"]
    assert dark.max() < bright.min()
