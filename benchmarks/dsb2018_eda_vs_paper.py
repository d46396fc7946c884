"""The residual U-Net study's EDA numbers (Section 4) beside the same quantities on the real stage1_train.

Reads a converted DSB2018 store (the `convert` rule's `results/dsb2018/store.h5`), measures its stage1_train
images with the workflow's EDA (`nucleiflow.eda.measure_store`) and prints one Markdown row per quantity the
paper prints (`published_values.yaml`, table `eda`): the paper's value and ours. The paper does not define
its quantities; the definitions used here are printed in the last column.

    .venv/bin/python benchmarks/dsb2018_eda_vs_paper.py results/dsb2018/store.h5
"""

from __future__ import annotations

import argparse

import numpy as np

from nucleiflow.eda import measure_store
from nucleiflow.store import Store


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--source-set", default="stage1_train", help="which release's images (default stage1_train)")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    store = Store(args.store)
    tables = measure_store(store)
    meta = store.metadata.set_index("image_id")
    ids = set(meta.index[meta["source_set"] == args.source_set])
    images = tables.per_image[tables.per_image["image_id"].isin(ids)]
    nuclei = tables.nuclei[tables.nuclei["image_id"].isin(ids)]
    sides = np.concatenate([images["height"], images["width"]])
    area_p5, area_p95 = np.percentile(nuclei["area"], [5, 95])
    circ = nuclei["circularity"].dropna()
    circ_p5, circ_p95 = np.percentile(circ, [5, 95])
    grey = images["mean_intensity"] / 255
    contrast = images["contrast"] / images["contrast"].max()
    rows = [
        ("images", "740 (670 train)", f"{len(images)}", "images of the release"),
        ("image side (px)", "256 to 1024", f"{sides.min()} to {sides.max()}", "min and max of heights and widths"),
        (
            "nuclei per image",
            "mean 71, std 9",
            f"mean {images['n_nuclei'].mean():.1f}, std {images['n_nuclei'].std():.1f}, "
            f"median {images['n_nuclei'].median():.0f}, range {images['n_nuclei'].min()} to {images['n_nuclei'].max()}",
            "mask files per image",
        ),
        (
            "nucleus area (px)",
            "8 to 45",
            f"{nuclei['area'].min()} to {nuclei['area'].max()}; 5th-95th percentile {area_p5:.0f} to {area_p95:.0f}; "
            f"median {nuclei['area'].median():.0f}",
            "pixels per nucleus",
        ),
        (
            "circularity",
            "0.6 to 0.9",
            f"5th-95th percentile {circ_p5:.2f} to {circ_p95:.2f}; median {circ.median():.2f}",
            "4 pi A / P^2 per nucleus",
        ),
        (
            "images with overlapping nuclei",
            "about 27 %",
            f"{(images['n_overlap_pixels'] > 0).mean() * 100:.1f} % overlapping; "
            f"{(images['n_touching'] > 0).mean() * 100:.1f} % with touching nuclei",
            "a pixel in two masks; touching: two nuclei 8-adjacent",
        ),
        (
            "mean intensity (0-1)",
            "0.2 to 0.8",
            f"{grey.min():.2f} to {grey.max():.2f}; 5th-95th percentile "
            f"{np.percentile(grey, 5):.2f} to {np.percentile(grey, 95):.2f}",
            "grey mean / 255 per image",
        ),
        (
            "normalized contrast",
            "0.4 to 0.9",
            f"{contrast.min():.2f} to {contrast.max():.2f}; 5th-95th percentile "
            f"{np.percentile(contrast, 5):.2f} to {np.percentile(contrast, 95):.2f}",
            "grey std / the largest grey std of the release",
        ),
    ]
    print(f"| quantity | paper (Section 4) | {args.source_set}, real release | our definition |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\nmodalities (converter's hint): {images['modality'].value_counts().to_dict()}")


if __name__ == "__main__":
    main()
