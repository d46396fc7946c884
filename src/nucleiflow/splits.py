"""Seeded, stratified train/val/test split manifests.

A manifest is a DataFrame (and a CSV on disk) with columns `image_id, split`,
`split` in SPLIT_NAMES. Two schemes cover the studies:

* ``folds``: PanNuke's official protocol - whole source folds per split.
* ``proportions``: fractions of the pool, stratified by a metadata column,
  with exact duplicates (same content hash) kept in one split so no image
  leaks between train and test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import ConfigError, choices_error

SPLIT_NAMES = ("train", "val", "test")
SCHEMES = ("folds", "proportions")


def stratified_split(
    ids,
    strata,
    fractions: dict[str, float],
    seed: int,
    groups=None,
) -> pd.DataFrame:
    """Assign each id to a split so every stratum keeps the given fractions.

    `fractions` maps split names to shares (normalised to sum 1). Rounding is
    done per stratum by the largest-remainder method, so counts are exact and
    reproducible bit for bit from `seed`. `groups` (optional, same length as
    ids) keeps members of one group together - e.g. exact duplicate images.
    """
    ids = np.asarray(list(ids), dtype=object)
    strata = np.asarray(list(strata), dtype=object)
    if len(ids) != len(strata):
        raise ValueError(f"ids ({len(ids)}) and strata ({len(strata)}) differ in length")
    if len(set(ids)) != len(ids):
        raise ValueError("image ids are not unique")
    names, shares = _normalised_fractions(fractions)
    groups = ids if groups is None else np.asarray(list(groups), dtype=object)

    # Split on groups: one representative stratum per group (its first member's).
    frame = pd.DataFrame({"image_id": ids, "stratum": strata, "group": groups})
    group_strata = frame.drop_duplicates("group").set_index("group")["stratum"]
    rng = np.random.default_rng(seed)
    group_split: dict = {}
    for stratum in sorted(group_strata.unique(), key=str):
        members = np.array(sorted(group_strata.index[group_strata == stratum], key=str), dtype=object)
        rng.shuffle(members)
        counts = _largest_remainder(len(members), shares)
        start = 0
        for name, count in zip(names, counts):
            for g in members[start : start + count]:
                group_split[g] = name
            start += count
    frame["split"] = frame["group"].map(group_split)
    return _ordered(frame[["image_id", "split"]])


def fold_split(metadata: pd.DataFrame, train, val, test, fold_col: str = "fold") -> pd.DataFrame:
    """PanNuke's official protocol: whole folds per split (e.g. train 1, val 2, test 3)."""
    assignment = {}
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


def make_split(metadata: pd.DataFrame, spec: dict, seed: int) -> pd.DataFrame:
    """Build a manifest from a config split spec (see the config schema)."""
    scheme = spec.get("scheme")
    if scheme == "folds":
        return fold_split(metadata, spec["train"], spec["val"], spec["test"])
    if scheme == "proportions":
        pool = metadata
        if spec.get("exclude_empty", False):
            pool = pool[pool["n_nuclei"] > 0]
        stratify_by = spec.get("stratify_by") or []
        for col in stratify_by:
            if col not in pool.columns:
                raise choices_error("split.stratify_by", col, pool.columns)
        strata = pool[stratify_by].astype(str).agg("|".join, axis=1) if stratify_by else ["all"] * len(pool)
        groups = pool["content_hash"] if "content_hash" in pool.columns else None
        return stratified_split(pool["image_id"], strata, spec["fractions"], seed, groups=groups)
    raise choices_error("split.scheme", scheme, SCHEMES)


def check_disjoint(manifest: pd.DataFrame) -> None:
    """Raise if an image id appears in more than one split."""
    dup = manifest["image_id"][manifest["image_id"].duplicated()]
    if len(dup):
        raise ValueError(f"image {dup.iloc[0]!r} appears in more than one split")


def _normalised_fractions(fractions: dict[str, float]) -> tuple[list[str], np.ndarray]:
    unknown = set(fractions) - set(SPLIT_NAMES)
    if unknown:
        raise choices_error("split.fractions", sorted(unknown)[0], SPLIT_NAMES)
    names = [n for n in SPLIT_NAMES if fractions.get(n, 0) > 0]
    shares = np.array([float(fractions[n]) for n in names])
    if (shares < 0).any() or shares.sum() <= 0:
        raise ConfigError(f"split.fractions: {fractions} must be non-negative and sum to more than 0")
    return names, shares / shares.sum()


def _largest_remainder(n: int, shares: np.ndarray) -> list[int]:
    exact = shares * n
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    for i in order[: n - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    order = {name: i for i, name in enumerate(SPLIT_NAMES)}
    frame = frame.assign(_o=frame["split"].map(order)).sort_values(["_o", "image_id"], kind="stable")
    return frame.drop(columns="_o").reset_index(drop=True)
