"""Split manifests: disjoint (duplicates together), reproducible, stratified within one image, study splits, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO

from nucleiflow.errors import ConfigError, DataFormatError
from nucleiflow.image_keys import MODALITY_FEATURES, content_hash, modality_features
from nucleiflow.io import write_csv
from nucleiflow.splits import (
    PANNUKE_PAPER_COUNTS,
    RESUNET_ORIGINAL_COUNTS,
    SPLIT_NAMES,
    add_strata_columns,
    check_disjoint,
    fold_rotation,
    fractions_from_counts,
    make_split,
    stratified_split,
)
from nucleiflow.store import Store

TISSUES = [f"tissue_{i:02d}" for i in range(19)]
MODALITY_LOOKS = {  # mean RGB and grey std of well-separated modalities
    "fluorescence": ((25, 25, 25), 20),
    "brightfield": ((200, 200, 195), 40),
    "he": ((190, 140, 185), 50),
}


def pannuke_like(n: int = 7901, empty: int = 1185, seed: int = 0) -> pd.DataFrame:
    """PanNuke-sized metadata: unevenly sized tissues, `empty` images without nuclei."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(len(TISSUES), 2.0))
    n_nuclei = rng.integers(1, 80, n)
    n_nuclei[rng.choice(n, empty, replace=False)] = 0
    return pd.DataFrame(
        {
            "image_id": [f"img{i:05d}" for i in range(n)],
            "tissue": rng.choice(TISSUES, n, p=weights),
            "fold": rng.integers(1, 4, n),
            "n_nuclei": n_nuclei,
            "content_hash": [f"h{i}" for i in range(n)],
        }
    )


def dsb_like(n: int = 740, seed: int = 0) -> pd.DataFrame:
    """DSB-like metadata with colour statistics of three modalities (fluorescence dominant)."""
    rng = np.random.default_rng(seed)
    modality = rng.choice(list(MODALITY_LOOKS), n, p=[0.7, 0.15, 0.15])
    rows = []
    for i, m in enumerate(modality):
        (r, g, b), std = MODALITY_LOOKS[m]
        rgb = np.array([r, g, b]) + rng.normal(0, 6, 3)
        grey = float(rgb @ [0.299, 0.587, 0.114])
        rows.append(
            {
                "image_id": f"dsb{i:04d}",
                "modality_hint": m,
                "n_nuclei": int(rng.integers(1, 200)),
                "content_hash": f"h{i}",
                **dict(zip(MODALITY_FEATURES, (*rgb, grey, std + rng.normal(0, 3)))),
            }
        )
    return pd.DataFrame(rows)


def split_counts(manifest: pd.DataFrame) -> dict[str, int]:
    return manifest["split"].value_counts().reindex(list(SPLIT_NAMES), fill_value=0).to_dict()


# ---------------------------------------------------------------- disjoint and reproducible


def test_exact_duplicates_land_in_one_split():
    meta = dsb_like(60)
    meta.loc[meta.index[[5, 17, 33]], "content_hash"] = "same-pixels"  # three copies, three ids
    meta.loc[meta.index[[8, 40]], "content_hash"] = "other-copy"
    for seed in range(5):
        manifest = make_split(
            meta,
            {
                "scheme": "proportions",
                "fractions": {"train": 0.6, "val": 0.2, "test": 0.2},
                "stratify_by": ["modality_hint"],
            },
            seed,
        )
        check_disjoint(manifest)
        assert sorted(manifest["image_id"]) == sorted(meta["image_id"])
        split_of = manifest.set_index("image_id")["split"]
        for copies in ([5, 17, 33], [8, 40]):
            assert split_of[meta["image_id"].iloc[copies]].nunique() == 1


def test_identical_images_get_one_content_hash(dsb_store):
    store = Store(dsb_store)
    image = store.image(store.ids[0])
    assert content_hash(image) == content_hash(image.copy()) == store.metadata["content_hash"].iloc[0]
    assert content_hash(image) != content_hash(image[:-1])  # same bytes prefix, other shape
    assert modality_features(image) == {k: store.metadata[k].iloc[0] for k in MODALITY_FEATURES}


def test_same_seed_same_csv_bytes(tmp_path):
    meta = dsb_like(200)
    spec = {
        "scheme": "proportions",
        "fractions": {"train": 0.8, "val": 0.1, "test": 0.1},
        "stratify_by": ["modality_cluster", "density_bin"],
    }
    for name in ("a", "b"):
        write_csv(tmp_path / f"{name}.csv", make_split(meta, spec, seed=11))
    write_csv(tmp_path / "c.csv", make_split(meta, spec, seed=12))
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()


# ---------------------------------------------------------------- proportions


@pytest.mark.parametrize(
    "fractions",
    [
        {"train": 0.8, "val": 0.1, "test": 0.1},
        {"train": 0.7, "val": 0.2, "test": 0.1},
        {"train": 0.64, "val": 0.16, "test": 0.2},
    ],
)
def test_every_stratum_within_one_image_and_totals_exact(fractions):
    meta = pannuke_like(1500, 0, seed=3)
    manifest = stratified_split(meta["image_id"], meta["tissue"], fractions, seed=1, exact_totals=True)
    joined = manifest.merge(meta, on="image_id")
    table = pd.crosstab(joined["tissue"], joined["split"]).reindex(columns=list(SPLIT_NAMES))
    sizes = meta["tissue"].value_counts()
    for split, share in fractions.items():
        exact = sizes * share
        assert (np.abs(table[split] - exact.reindex(table.index)) <= 1).all()
        assert abs(split_counts(manifest)[split] - len(meta) * share) < 1
    assert len(manifest) == len(meta)


def test_default_rounds_each_stratum_on_its_own():
    # 12 and 13 images at 30 %: 3.6 -> 4 and 3.9 -> 4, although 30 % of 25 is 7.5.
    ids = [f"a{i}" for i in range(12)] + [f"b{i}" for i in range(13)]
    strata = ["a"] * 12 + ["b"] * 13
    fractions = {"train": 0.7, "test": 0.3}
    assert split_counts(stratified_split(ids, strata, fractions, seed=0))["test"] == 8
    assert split_counts(stratified_split(ids, strata, fractions, seed=0, exact_totals=True))["test"] == 7


def test_pannuke_paper_split_counts_with_exclude_empty():
    meta = pannuke_like()
    assert (meta["n_nuclei"] > 0).sum() == sum(PANNUKE_PAPER_COUNTS.values())
    spec = {
        "scheme": "proportions",
        "fractions": fractions_from_counts(PANNUKE_PAPER_COUNTS),
        "stratify_by": ["tissue"],
        "exclude_empty": True,
    }
    manifest = make_split(meta, spec, seed=42)
    assert split_counts(manifest) == PANNUKE_PAPER_COUNTS
    empty = set(meta.loc[meta["n_nuclei"] == 0, "image_id"])
    assert not empty & set(manifest["image_id"])
    rounded = make_split(meta, {**spec, "fractions": {"train": 0.64, "val": 0.16, "test": 0.20}}, seed=42)
    for split, share in {"train": 0.64, "val": 0.16, "test": 0.20}.items():
        assert abs(split_counts(rounded)[split] - 6716 * share) < 1


def test_the_paper_configs_pannuke_split_gives_the_papers_exact_counts():
    spec = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())["datasets"]["pannuke"]["splits"]["paper"]
    assert spec["fractions"] == pytest.approx(fractions_from_counts(PANNUKE_PAPER_COUNTS), abs=1e-9)
    # A pool of the paper's size (the 7,901 images less the 1,185 empty ones, which is our assumption).
    assert split_counts(make_split(pannuke_like(), spec, seed=42)) == PANNUKE_PAPER_COUNTS
    # 0.64 x 6,716 = 4,298.2: the rounded shares of Section 4 cannot give the printed counts.
    rounded = make_split(pannuke_like(), {**spec, "fractions": {"train": 0.64, "val": 0.16, "test": 0.20}}, seed=42)
    assert split_counts(rounded) != PANNUKE_PAPER_COUNTS


@pytest.mark.parametrize(
    "name, fractions",
    [
        ("original", fractions_from_counts(RESUNET_ORIGINAL_COUNTS)),
        ("80-10-10", {"train": 0.8, "val": 0.1, "test": 0.1}),
        ("70-20-10", {"train": 0.7, "val": 0.2, "test": 0.1}),
    ],
)
def test_resunet_study_splits_by_modality_and_density(name, fractions):
    meta = dsb_like(740)
    spec = {"scheme": "proportions", "fractions": fractions, "stratify_by": ["modality_cluster", "density_bin"]}
    manifest = make_split(meta, spec, seed=7)
    check_disjoint(manifest)
    counts = split_counts(manifest)
    if name == "original":
        assert counts == RESUNET_ORIGINAL_COUNTS
    for split, share in fractions.items():
        assert abs(counts[split] - 740 * share) < 1
    strata = add_strata_columns(meta, seed=7).merge(manifest, on="image_id")
    table = pd.crosstab([strata["modality_cluster"], strata["density_bin"]], strata["split"])
    sizes = table.sum(axis=1)
    for split, share in fractions.items():
        assert (np.abs(table[split] - sizes * share) <= 1).all()


def test_modality_clusters_recover_modalities_and_density_bins_are_quantiles():
    meta = add_strata_columns(dsb_like(300), seed=0)
    # Each k-means cluster is one modality; clusters are numbered by brightness.
    assert pd.crosstab(meta["modality_cluster"], meta["modality_hint"]).gt(0).sum(axis=1).eq(1).all()
    assert meta.groupby("modality_cluster")["grey_mean"].mean().is_monotonic_increasing
    assert meta["modality_hint"].tolist() == dsb_like(300)["modality_hint"].tolist()  # the hint is kept
    sizes = meta["density_bin"].value_counts()
    assert sorted(sizes.index) == [0, 1, 2] and sizes.max() - sizes.min() <= 0.1 * len(meta)
    assert meta.groupby("density_bin")["n_nuclei"].max().is_monotonic_increasing
    again = add_strata_columns(dsb_like(300), seed=0)
    assert again["modality_cluster"].tolist() == meta["modality_cluster"].tolist()


def test_derived_strata_of_identical_images_are_one_stratum():
    meta = dsb_like(12)
    meta[list(MODALITY_FEATURES)] = 50.0
    meta["n_nuclei"] = 7
    derived = add_strata_columns(meta, seed=0)
    assert set(derived["modality_cluster"]) == {0} and set(derived["density_bin"]) == {0}


def test_derived_strata_work_on_a_converted_store(dsb_store):
    meta = Store(dsb_store).metadata
    spec = {
        "scheme": "proportions",
        "fractions": {"train": 0.8, "val": 0.1, "test": 0.1},
        "stratify_by": ["modality_cluster", "density_bin"],
    }
    manifest = make_split(meta, spec, seed=0)
    assert sorted(manifest["image_id"]) == sorted(meta["image_id"])


# ---------------------------------------------------------------- folds


def test_fold_protocol_and_rotations():
    meta = pannuke_like(300, 10)
    tests = []
    for rotation in range(3):
        spec = fold_rotation([1, 2, 3], rotation)
        manifest = make_split(meta, spec, seed=0)
        check_disjoint(manifest)
        assert len(manifest) == len(meta)
        joined = manifest.merge(meta, on="image_id")
        assert joined.groupby("fold")["split"].nunique().eq(1).all()  # whole folds
        split_of_fold = joined.drop_duplicates("fold").set_index("fold")["split"].to_dict()
        assert {split_of_fold[spec[s][0]] for s in SPLIT_NAMES} == set(SPLIT_NAMES)
        tests.append(spec["test"][0])
    assert fold_rotation([1, 2, 3], 0) == {"scheme": "folds", "train": [1], "val": [2], "test": [3]}
    assert sorted(tests) == [1, 2, 3]  # every fold is the test fold once


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "spec, error, pattern",
    [
        (
            {"scheme": "proportions", "fractions": {"train": 0.8, "test": 0.2}, "stratify_by": ["organ"]},
            ConfigError,
            r"split\.stratify_by: 'organ' is not valid; choose one of: .*density_bin.*tissue",
        ),
        (
            {"scheme": "proportions", "fractions": {"train": 0.8, "val": 0.1, "test": 0.3}},
            ConfigError,
            r"split\.fractions: .* sum to 1\.2, expected 1",
        ),
        (
            {"scheme": "proportions", "fractions": {"train": 1.2, "test": -0.2}},
            ConfigError,
            r"split\.fractions\.train: 1\.2 must be a number between 0 and 1",
        ),
        (
            {"scheme": "proportions", "fractions": {"train": 0.8, "dev": 0.2}},
            ConfigError,
            r"split\.fractions: 'dev' is not valid; choose one of: test, train, val",
        ),
        ({"scheme": "random"}, ConfigError, r"split\.scheme: 'random' is not valid"),
        (
            {"scheme": "folds", "train": [1], "val": [1], "test": [3]},
            ConfigError,
            r"fold 1 is assigned to both train and val",
        ),
        ({"scheme": "folds", "train": [1], "val": [2], "test": [7]}, ConfigError, r"fold\(s\) \[7\] not in the data"),
    ],
)
def test_bad_specs_give_one_line_errors(spec, error, pattern):
    with pytest.raises(error, match=pattern) as caught:
        make_split(pannuke_like(200, 5), spec, seed=0)
    assert "\n" not in str(caught.value)


def test_derived_strata_need_colour_statistics():
    meta = pannuke_like(50, 0)
    spec = {"scheme": "proportions", "fractions": {"train": 0.8, "test": 0.2}, "stratify_by": ["modality_cluster"]}
    pattern = r"store metadata lacks 'mean_red', needed for modality_cluster, density_bin; re-run the convert rule"
    with pytest.raises(DataFormatError, match=pattern):
        make_split(meta, spec, seed=0)


def test_exclude_empty_with_nothing_left():
    meta = pannuke_like(20, 20)
    spec = {"scheme": "proportions", "fractions": {"train": 0.8, "test": 0.2}, "exclude_empty": True}
    with pytest.raises(DataFormatError, match="every image is empty"):
        make_split(meta, spec, seed=0)
