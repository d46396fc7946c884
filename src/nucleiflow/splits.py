"""Seeded, stratified train/val/test split manifests.

A manifest is a DataFrame (and a CSV on disk) with columns `image_id, split`,
`split` in SPLIT_NAMES. Two schemes cover the studies:

* ``folds``: PanNuke's official protocol - whole source folds per split.
* ``proportions``: fractions of the pool, stratified by metadata columns:
  split totals are the rounded fractions of the pool, every stratum is within
  one image of its share, and exact duplicates (same content hash) are kept
  in one split so no image leaks between train and test.

Two options of ``proportions`` fix the test set before the fractions are
drawn from the rest (exact duplicates of a fixed image follow it into test):

* ``test_source_set``: every image whose `source_set` (the release it was
  converted from, e.g. DSB2018's ``stage1_test``) equals it; the residual
  U-Net study's original configuration tests on the stage-1 test set.
* ``force_test``: these image ids, where they are in the data (the classic
  U-Net study's Table 2 names three test images).

``group_by`` names a metadata column whose value must not be split across
train/val/test (e.g. ``source_image``: CoNSeP's 256-px patches of one image,
which share neighbouring tissue); the fractions then count groups.

``source_sets`` restricts the pool to images of those releases (e.g. only
``stage1_train``, the 670 images of the classic U-Net study).

Stratifying by imaging modality and nuclear density (the residual U-Net
study) uses two derived columns, `modality_cluster` (seeded k-means on the
colour statistics every converter records, see `modality_features`) and
`density_bin` (quantile bins of `n_nuclei`); `make_split` adds them when a
spec stratifies by them.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.cluster.vq import kmeans2

from nucleiflow.errors import ConfigError, DataFormatError, choices_error
from nucleiflow.image_keys import MODALITY_FEATURES

SPLIT_NAMES = ("train", "val", "test")
SCHEMES = ("folds", "proportions")

# Image counts of the studies' splits; `fractions_from_counts` turns them into
# config fractions (the config file holds the resulting numbers).
RESUNET_ORIGINAL_COUNTS = {"train": 670, "val": 10, "test": 60}
PANNUKE_PAPER_COUNTS = {"train": 4297, "val": 1075, "test": 1344}

# Colour statistics each converter stores per image (metadata keys).
DERIVED_STRATA = ("modality_cluster", "density_bin")
DEFAULT_MODALITY_CLUSTERS = 3  # fluorescence, brightfield, H&E in DSB2018
DEFAULT_DENSITY_BINS = 3
KMEANS_RESTARTS = 10
FRACTION_SUM_TOLERANCE = 1e-3


# ---------------------------------------------------------------- derived strata


def modality_clusters(features: pd.DataFrame, n_clusters: int, seed: int) -> np.ndarray:
    """Seeded k-means cluster (0..k-1, ordered by mean grey) of each row of standardised colour statistics."""
    x = features.to_numpy(np.float64)
    x = (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
    k = min(n_clusters, len(np.unique(x, axis=0)))
    if k <= 1:
        return np.zeros(len(x), int)
    best_inertia, best = np.inf, np.zeros(len(x), int)
    for rng in np.random.default_rng(seed).spawn(KMEANS_RESTARTS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an empty cluster in one restart is not worth a warning
            centroids, labels = kmeans2(x, k, iter=50, minit="++", rng=rng)
        inertia = float(((x - centroids[labels]) ** 2).sum())
        if inertia < best_inertia:
            best_inertia, best = inertia, labels
    # Name clusters by brightness so labels do not depend on the k-means start.
    grey_col = list(features.columns).index("grey_mean") if "grey_mean" in features.columns else 0
    order = np.argsort(
        [x[best == c, grey_col].mean() if (best == c).any() else np.inf for c in range(k)], kind="stable"
    )
    return np.argsort(order)[best]


def density_bins(n_nuclei: pd.Series, n_bins: int) -> np.ndarray:
    """Quantile bin (0, 1, ... by increasing count) of each image's nuclei count.

    Bins are right-closed between the count's quantiles; tied quantiles (many
    equal counts) merge bins, so there may be fewer than `n_bins`.
    """
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ConfigError(f"split.density_bins: {n_bins!r} must be a whole number of at least 1")
    counts = n_nuclei.to_numpy(float)
    edges = np.unique(np.quantile(counts, np.linspace(0, 1, n_bins + 1)[1:-1]))
    raw = np.searchsorted(edges, counts, side="left")
    return np.unique(raw, return_inverse=True)[1]


def add_strata_columns(
    metadata: pd.DataFrame,
    seed: int,
    n_modality_clusters: int = DEFAULT_MODALITY_CLUSTERS,
    n_density_bins: int = DEFAULT_DENSITY_BINS,
) -> pd.DataFrame:
    """Copy of `metadata` with `modality_cluster` and `density_bin` columns (existing columns kept)."""
    missing = [c for c in (*MODALITY_FEATURES, "n_nuclei") if c not in metadata.columns]
    if missing:
        raise DataFormatError(
            f"store metadata lacks {missing[0]!r}, needed for {', '.join(DERIVED_STRATA)}; re-run the convert rule"
        )
    if not isinstance(n_modality_clusters, int) or n_modality_clusters < 1:
        raise ConfigError(f"split.modality_clusters: {n_modality_clusters!r} must be a whole number of at least 1")
    gaps = metadata[list(MODALITY_FEATURES)].isna().any(axis=1)
    if gaps.any():
        raise DataFormatError(
            f"store metadata: image {metadata.loc[gaps, 'image_id'].iloc[0]!r} lacks colour statistics; "
            "re-run the convert rule"
        )
    out = metadata.copy()
    out["modality_cluster"] = modality_clusters(out[list(MODALITY_FEATURES)], n_modality_clusters, seed)
    out["density_bin"] = density_bins(out["n_nuclei"], n_density_bins)
    return out


# ---------------------------------------------------------------- splitting


def fractions_from_counts(counts: dict[str, int]) -> dict[str, float]:
    """Split fractions reproducing a study's image counts on a pool of their total size."""
    total = sum(counts.values())
    return {name: counts[name] / total for name in SPLIT_NAMES if name in counts}


def stratified_split(
    ids,
    strata,
    fractions: dict[str, float],
    seed: int,
    groups=None,
    exact_totals: bool = False,
) -> pd.DataFrame:
    """Assign each id to a split so every stratum keeps the given fractions.

    `fractions` maps split names to shares summing to 1. Each stratum's count
    per split is within one of its exact share: by default the stratum's own
    largest-remainder rounding; with `exact_totals` the split totals are also
    the largest-remainder rounding of the whole pool (controlled rounding, see
    `_allocate`), so e.g. 670/10/60 of 740 images comes out exactly. The result
    is reproducible bit for bit from `seed`. `groups` (optional, same length
    as ids) keeps members of one group together - e.g. exact duplicate images;
    counts are then of groups.
    """
    ids = np.asarray(list(ids), dtype=object)
    strata = np.asarray(list(strata), dtype=object)
    if len(ids) != len(strata):
        raise ValueError(f"ids ({len(ids)}) and strata ({len(strata)}) differ in length")
    if len(set(ids)) != len(ids):
        raise ValueError("image ids are not unique")
    names, shares = _checked_fractions(fractions)
    groups = ids if groups is None else np.asarray(list(groups), dtype=object)

    # Split on groups: one representative stratum per group (its first member's).
    frame = pd.DataFrame({"image_id": ids, "stratum": strata, "group": groups})
    group_strata = frame.drop_duplicates("group").set_index("group")["stratum"]
    stratum_names = sorted(group_strata.unique(), key=str)
    members_of = {
        s: np.array(sorted(group_strata.index[group_strata == s], key=str), dtype=object) for s in stratum_names
    }
    sizes = np.array([len(members_of[s]) for s in stratum_names], dtype=int)
    counts = _allocate(sizes, shares) if exact_totals else [_largest_remainder(n, shares) for n in sizes]
    rng = np.random.default_rng(seed)
    group_split: dict = {}
    for stratum, stratum_counts in zip(stratum_names, counts):
        members = members_of[stratum]
        rng.shuffle(members)
        start = 0
        for name, count in zip(names, stratum_counts):
            for g in members[start : start + count]:
                group_split[g] = name
            start += count
    frame["split"] = frame["group"].map(group_split)
    return _ordered(frame[["image_id", "split"]])


def fold_split(metadata: pd.DataFrame, train, val, test, fold_col: str = "fold") -> pd.DataFrame:
    """PanNuke's official protocol: whole folds per split (e.g. train 1, val 2, test 3)."""
    if fold_col not in metadata.columns:
        raise DataFormatError(
            f"store metadata has no {fold_col!r} column; the folds scheme needs a fold per image (PanNuke)"
        )
    assignment: dict[str, str] = {}
    for name, folds in zip(SPLIT_NAMES, (train, val, test)):
        for fold in _as_list(folds):
            if fold in assignment:
                raise ConfigError(f"split folds: fold {fold} is assigned to both {assignment[fold]} and {name}")
            assignment[fold] = name
    present = set(metadata[fold_col].unique())
    missing = sorted(set(assignment) - present)
    if missing:
        raise ConfigError(f"split folds: fold(s) {missing} not in the data; available: {sorted(present)}")
    frame = metadata[["image_id"]].copy()
    frame["split"] = metadata[fold_col].map(assignment)
    return _ordered(frame.dropna(subset=["split"]))


def fold_rotation(folds, rotation: int) -> dict:
    """Fold spec of cross-validation `rotation`: folds shifted cyclically, so each fold is the test fold once.

    ``fold_rotation([1, 2, 3], 0)`` is train 1, val 2, test 3; rotation 1 is
    train 2, val 3, test 1; rotation 2 is train 3, val 1, test 2.
    """
    folds = list(folds)
    if len(folds) != len(SPLIT_NAMES):
        raise ConfigError(f"fold rotation: needs {len(SPLIT_NAMES)} folds, got {folds}")
    shifted = folds[rotation % 3 :] + folds[: rotation % 3]
    return {"scheme": "folds", **{name: [fold] for name, fold in zip(SPLIT_NAMES, shifted)}}


def make_split(metadata: pd.DataFrame, spec: dict, seed: int) -> pd.DataFrame:
    """Build a manifest from a config split spec (see the config schema)."""
    scheme = spec.get("scheme")
    if scheme == "folds":
        return fold_split(metadata, spec["train"], spec["val"], spec["test"])
    if scheme == "proportions":
        return _proportions_split(metadata, spec, seed)
    raise choices_error("split.scheme", scheme, SCHEMES)


def fixed_test_ids(metadata: pd.DataFrame, spec: dict) -> list[str]:
    """Ids the spec puts in the test set whatever the fractions: `test_source_set` and `force_test` (see above)."""
    fixed = [i for i in spec.get("force_test") or [] if i in set(metadata["image_id"])]
    source = spec.get("test_source_set")
    if source is not None:
        if "source_set" not in metadata.columns:
            raise DataFormatError(
                f"split.test_source_set: {source!r} needs a source_set per image, which this store lacks "
                "(re-run the convert rule; DSB2018 stores record it)"
            )
        available = sorted(metadata["source_set"].dropna().unique())
        if source not in available:
            raise choices_error("split.test_source_set", source, available)
        fixed += metadata.loc[metadata["source_set"] == source, "image_id"].tolist()
    if fixed and "content_hash" in metadata.columns:
        # An exact duplicate of a fixed test image must not land in train or val.
        hashes = set(metadata.loc[metadata["image_id"].isin(fixed), "content_hash"])
        fixed += metadata.loc[metadata["content_hash"].isin(hashes), "image_id"].tolist()
    return list(dict.fromkeys(fixed))


def _source_pool(metadata: pd.DataFrame, sources) -> pd.DataFrame:
    """The images whose `source_set` is one of `sources` (all images when `sources` is empty)."""
    if not sources:
        return metadata
    available = sorted(metadata["source_set"].dropna().unique()) if "source_set" in metadata.columns else []
    for source in sources:
        if source not in available:
            raise choices_error("split.source_sets", source, available)
    return metadata[metadata["source_set"].isin(sources)]


def _proportions_split(metadata: pd.DataFrame, spec: dict, seed: int) -> pd.DataFrame:
    pool = _source_pool(metadata, spec.get("source_sets"))
    if spec.get("exclude_empty", False):
        pool = pool[pool["n_nuclei"] > 0]
        if pool.empty:
            raise DataFormatError("split.exclude_empty: every image is empty, nothing left to split")
    fixed = fixed_test_ids(pool, spec)
    if fixed:
        rest = _drawn_split(pool[~pool["image_id"].isin(fixed)], spec, seed)
        return _ordered(pd.concat([rest, pd.DataFrame({"image_id": fixed, "split": "test"})], ignore_index=True))
    return _drawn_split(pool, spec, seed)


def _drawn_split(pool: pd.DataFrame, spec: dict, seed: int) -> pd.DataFrame:
    """The stratified, seeded draw of `spec["fractions"]` over `pool`."""
    if pool.empty:
        raise DataFormatError("split: no image is left to draw train/val from once the fixed test images are out")
    stratify_by = list(spec.get("stratify_by") or [])
    if any(c in DERIVED_STRATA and c not in pool.columns for c in stratify_by):
        pool = add_strata_columns(
            pool,
            seed,
            spec.get("modality_clusters", DEFAULT_MODALITY_CLUSTERS),
            spec.get("density_bins", DEFAULT_DENSITY_BINS),
        )
    for col in stratify_by:
        if col not in pool.columns:
            raise choices_error("split.stratify_by", col, set(pool.columns) | set(DERIVED_STRATA))
    strata = pool[stratify_by].astype(str).agg("|".join, axis=1) if stratify_by else ["all"] * len(pool)
    groups = split_groups(pool, spec.get("group_by"))
    return stratified_split(pool["image_id"], strata, spec["fractions"], seed, groups=groups, exact_totals=True)


def split_groups(pool: pd.DataFrame, group_by: str | None) -> pd.Series | None:
    """What must stay in one split: the `group_by` column's value (e.g. `source_image`) joined with exact duplicates.

    Without `group_by`, exact duplicates (same `content_hash`) only. With it, two groups that share a duplicate
    image are merged (connected components), so neither the source image nor a duplicate can leak.
    """
    hashes = pool["content_hash"] if "content_hash" in pool.columns else None
    if group_by is None:
        return hashes
    if group_by not in pool.columns:
        raise choices_error("split.group_by", group_by, pool.columns)
    missing = pool[group_by].isna()
    if missing.any():
        raise DataFormatError(f"split.group_by: image {pool.loc[missing, 'image_id'].iloc[0]!r} has no {group_by!r}")
    groups = pool[group_by].astype(str)
    if hashes is None:
        return groups
    # Union-find over (group value, content hash) links.
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    for group, digest in zip(groups, hashes):
        a, b = root(f"g:{group}"), root(f"h:{digest}")
        if a != b:
            parent[max(a, b)] = min(a, b)
    return groups.map(lambda g: root(f"g:{g}"))


def check_disjoint(manifest: pd.DataFrame) -> None:
    """Raise if an image id appears in more than one split."""
    dup = manifest["image_id"][manifest["image_id"].duplicated()]
    if len(dup):
        raise ValueError(f"image {dup.iloc[0]!r} appears in more than one split")


def _checked_fractions(fractions: dict[str, float]) -> tuple[list[str], np.ndarray]:
    """(split names with a share > 0, their shares); one-line ConfigError for bad values."""
    unknown = set(fractions) - set(SPLIT_NAMES)
    if unknown:
        raise choices_error("split.fractions", sorted(unknown)[0], SPLIT_NAMES)
    for name, value in fractions.items():
        if not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ConfigError(f"split.fractions.{name}: {value!r} must be a number between 0 and 1")
    total = sum(fractions.values())
    # Catch typos such as 0.8/0.1/0.3 instead of silently renormalising them.
    if abs(total - 1) > FRACTION_SUM_TOLERANCE:
        raise ConfigError(f"split.fractions: {fractions} sum to {total:g}, expected 1")
    names = [n for n in SPLIT_NAMES if fractions.get(n, 0) > 0]
    shares = np.array([float(fractions[n]) for n in names])
    return names, shares / shares.sum()


def _largest_remainder(n: int, shares: np.ndarray) -> np.ndarray:
    exact = shares * n
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    for i in order[: n - counts.sum()]:
        counts[i] += 1
    return counts


def _allocate(stratum_sizes: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Counts (strata x splits): rows sum to the stratum sizes, columns to the
    largest-remainder split totals, every cell the floor or ceiling of its exact share.

    Each stratum first gets the floor of its shares; its left-over members then
    go, one per split, to the splits still furthest below their totals (ties:
    larger remainder first). Giving a row's units to the columns of largest
    residual demand always completes a 0/1 table when one exists (Gale-Ryser).
    """
    exact = np.outer(stratum_sizes, shares)
    counts = np.floor(exact).astype(int)
    remainder = exact - counts
    column_need = _largest_remainder(int(stratum_sizes.sum()), shares) - counts.sum(axis=0)
    for s in range(len(stratum_sizes)):
        row_need = int(stratum_sizes[s] - counts[s].sum())
        ranked = sorted(range(len(shares)), key=lambda k: (-column_need[k], -remainder[s, k], k))
        for k in ranked[:row_need]:
            counts[s, k] += 1
            column_need[k] -= 1
    return counts


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    order = {name: i for i, name in enumerate(SPLIT_NAMES)}
    frame = frame.assign(_o=frame["split"].map(order)).sort_values(["_o", "image_id"], kind="stable")
    return frame.drop(columns="_o").reset_index(drop=True)
