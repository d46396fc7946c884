"""Per-image scores of one evaluation, averaged per imaging modality (fluorescence, brightfield, H&E).

The evaluation tables give the mean over a split's images; the stage-1 test set's mix of modalities differs
from stage1_train's, so this prints the mean of every score per modality (the converter's `modality_hint` in
the store) beside the mean over all images, as a Markdown table.

    .venv/bin/python benchmarks/dsb2018_per_modality.py results/dsb2018/store.h5 \
        results/dsb2018/dsb_recipe_hv/evaluation/resunet/none/none/test_per_image.csv
"""

from __future__ import annotations

import argparse

import pandas as pd

from nucleiflow.segmentation.evaluation.metrics import summarize
from nucleiflow.store import Store

SCORES = ("iou", "dice", "aji", "pq", "map")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("per_image", nargs="+", help="<subset>_per_image.csv of one or more evaluations")
    return parser.parse_args(argv)


def per_modality(per_image: pd.DataFrame, modality: pd.Series) -> pd.DataFrame:
    """Mean of each score per modality and over all images, with the image count."""
    table = per_image.join(modality.rename("modality"), on="image_id")
    scores = [c for c in SCORES if c in table.columns]
    grouped = table.groupby("modality")[scores].mean()
    grouped.loc["all"] = table[scores].mean()
    if {"tp", "fp", "fn", "tn"} <= set(table.columns):  # pixel IoU pooled over the images' summed counts too
        pooled = summarize(table, "modality", ["iou"]).set_index("modality")["iou_pooled"]
        grouped.insert(1, "iou_pooled", pooled.reindex(grouped.index))
        grouped.loc["all", "iou_pooled"] = summarize(table, metrics=["iou"])["iou_pooled"].iloc[0]
    grouped.insert(0, "images", table.groupby("modality").size().reindex(grouped.index).fillna(len(table)))
    return grouped


def main() -> None:
    args = parse_args()
    modality = Store(args.store).metadata.set_index("image_id")["modality_hint"]
    for path in args.per_image:
        print(f"\n{path}\n")
        print(per_modality(pd.read_csv(path), modality).round(3).to_markdown())


if __name__ == "__main__":
    main()
