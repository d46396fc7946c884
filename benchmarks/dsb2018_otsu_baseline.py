"""The classical baseline on the real DSB2018 images: Otsu threshold + connected components, per modality.

What a trained model has to beat. Each image of a converted store (by default its stage-1 test images,
`--source-set stage1_test`) is turned grey, inverted when its background is bright (brightfield and H&E
nuclei are darker than their background: the border pixels' median decides), thresholded at Otsu's level
and labelled into 8-connected components; objects under `--min-size` pixels are dropped. The
per-image scores are the workflow's own (`metrics.pixel_metrics` IoU, per image and pooled over the
images' pixels; `instances.label_metrics` AJI, PQ and the DSB competition's mAP); the table gives the
mean over the images per modality (the store's `modality_hint`) and over all of them.

    .venv/bin/python benchmarks/dsb2018_otsu_baseline.py results/dsb2018/store.h5
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage.filters import threshold_otsu

from nucleiflow.segmentation.evaluation.instances import label_metrics
from nucleiflow.segmentation.evaluation.metrics import pixel_metrics, summarize
from nucleiflow.store import Store


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--source-set", default="stage1_test", help="which release's images (default stage1_test)")
    parser.add_argument("--min-size", type=int, default=10, help="drop objects smaller than this (pixels)")
    return parser.parse_args(argv)


def otsu_instances(image: np.ndarray, min_size: int) -> np.ndarray:
    """Label map: Otsu foreground (nuclei brighter than the background after inversion), 8-connected."""
    grey = image.astype(np.float32).mean(axis=2)
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    if np.median(border) > grey.mean():  # bright background: nuclei are the dark objects
        grey = grey.max() - grey
    labels, _ = ndimage.label(grey > threshold_otsu(grey), structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    labels[small[labels]] = 0
    return labels


def main() -> None:
    args = parse_args()
    store = Store(args.store)
    meta = store.metadata.set_index("image_id")
    rows = []
    for image_id in meta.index[meta["source_set"] == args.source_set]:
        sample = store[image_id]
        pred = otsu_instances(sample.image, args.min_size)
        rows.append(
            {
                "image_id": image_id,
                "modality": meta.loc[image_id, "modality_hint"],
                **pixel_metrics(pred > 0, sample.instances > 0),
                **label_metrics(sample.instances, pred),
            }
        )
    table = pd.DataFrame(rows)
    scores = ["iou", "aji", "pq", "map"]
    summary = table.groupby("modality")[scores].mean()
    summary.loc["all"] = table[scores].mean()
    # Pixel IoU pooled over the images' summed counts (the evaluation tables' iou_pooled) beside the mean.
    pooled = summarize(table, "modality", ["iou"]).set_index("modality")["iou_pooled"]
    summary.insert(1, "iou_pooled", pooled.reindex(summary.index))
    summary.loc["all", "iou_pooled"] = summarize(table, metrics=["iou"])["iou_pooled"].iloc[0]
    summary.insert(0, "images", table.groupby("modality").size().reindex(summary.index).fillna(len(table)))
    print(f"Otsu + connected components on {len(table)} {args.source_set} images (min size {args.min_size} px)\n")
    print(summary.round(3).to_markdown())


if __name__ == "__main__":
    main()
