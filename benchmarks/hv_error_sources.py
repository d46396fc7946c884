"""Where an hv model's PQ is lost: its foreground map or its h/v maps (one model, one labelled split).

The watershed of an hv model (HoVer-Net's post-processing) takes a foreground probability and the
horizontal/vertical distance maps. Each image is segmented three times with the model's tuned settings:
with both predicted maps, with the true foreground in place of the predicted one, and with the true h/v
maps (`targets.hv_target` of the ground truth) in place of the predicted ones. The mean PQ, DQ and SQ of
each row say which map costs more: a row far above "predicted" names the map worth improving. Run it on
the validation split (the test split is for scoring, not for choosing what to change):

    .venv/bin/python benchmarks/hv_error_sources.py results/consep/consep_hv/models/unet/resnet18/none \\
        results/consep/store.h5 results/consep/splits/by_image.csv --split val --tta d4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from nucleiflow.segmentation.evaluation.instances import panoptic_quality
from nucleiflow.segmentation.inference.predictor import Predictor
from nucleiflow.segmentation.representation.postprocess import instances_from_hv
from nucleiflow.segmentation.representation.targets import hv_target
from nucleiflow.segmentation.training.data import split_ids
from nucleiflow.store import Store

ROWS = ("predicted", "true foreground", "true h/v")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path, help="the model folder (model.pt, train_info.json, postprocess.json)")
    parser.add_argument("store", type=Path)
    parser.add_argument("split_csv", type=Path, help="the experiment's split manifest")
    parser.add_argument("--split", default="val")
    parser.add_argument("--tta", default="none", choices=("none", "flips", "d4"))
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def error_sources(predictor: Predictor, store: Store, ids: list[str]) -> pd.DataFrame:
    """PQ, DQ and SQ per image (rows x image) with predicted, true-foreground and true-h/v maps."""
    params = predictor.config.watershed
    records = []
    for image_id in tqdm(ids, desc="images", unit="image"):
        sample = store[image_id]
        maps = predictor.predict_maps(sample.image)[:3].astype(np.float64)
        truth = hv_target(sample.instances).astype(np.float64)
        inputs = {
            "predicted": maps,
            "true foreground": np.stack([truth[0], maps[1], maps[2]]),
            "true h/v": np.stack([maps[0], truth[1], truth[2]]),
        }
        for row, channels in inputs.items():
            scores = panoptic_quality(sample.instances, instances_from_hv(channels, params))
            records.append({"maps": row, "image_id": image_id, **{k: scores[k] for k in ("pq", "dq", "sq")}})
    return pd.DataFrame(records)


def main(argv=None) -> None:
    args = parse_args(argv)
    predictor = Predictor.from_model_dir(
        args.model_dir,
        postprocess={"tta": args.tta},
        tuned_path=args.model_dir / "postprocess.json",
        threads=args.threads,
    )
    if predictor.config.layout.target != "hv":
        raise SystemExit(f"{args.model_dir}: an hv model is needed; this one predicts {predictor.config.layout.target}")
    ids = split_ids(pd.read_csv(args.split_csv), args.split)
    table = error_sources(predictor, Store(args.store), ids)
    means = table.groupby("maps", sort=False)[["pq", "dq", "sq"]].mean().reindex(list(ROWS))
    print(f"{args.model_dir}, {args.split} split ({len(ids)} images), TTA {args.tta}:")
    print(means.round(3).to_markdown())


if __name__ == "__main__":
    main()
