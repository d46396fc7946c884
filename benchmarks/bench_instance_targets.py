"""Benchmark: binary vs contour vs hv training targets on the 45 real DSB2018 images.

Trains the same architecture (the residual U-Net of the DSB2018 study, 256 x 256
tiles at native scale, BCE + Dice on the foreground) once per training target
for the same number of epochs on the same seeded split of
../shared/data/dsb2018_stage1_test_sample (stage-1 test images with the official
solution's masks, none of them in any training set of ours), tunes each
target's watershed on the validation images only, and scores the test images:

* pixel IoU of the foreground;
* the standard deviation of PQ over the test images, and the tuned setting's mean PQ on the validation images;
* AJI (Kumar et al. 2017), PQ (Kirillov et al. 2019; IoU > 0.5 matches) and
  the DSB2018 competition's object score (mean over IoU thresholds 0.5-0.95 of
  TP / (TP + FP + FN)), mean over test images.

The binary model is scored twice: with the demo's fixed distance-transform
watershed (`postprocess: {watershed: true}`) and with its watershed tuned on
the validation images like the others, so the comparison is with the best a
binary model can do, not with a strawman. The split (seed, fractions, strata)
is the workflow's own `splits.make_split`. Prints a Markdown table and the
training time of each model; writes the table as CSV to `--out`.

    .venv/bin/python benchmarks/bench_instance_targets.py                 # 60 epochs per target
    .venv/bin/python benchmarks/bench_instance_targets.py --epochs 2      # a quick check of the path
    .venv/bin/python benchmarks/bench_instance_targets.py --workdir /tmp/targets --tta d4  # models kept, reused
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path

import pandas as pd
import torch
import yaml
from snakemake.utils import validate

from nucleiflow.catalog import TTA_MODES
from nucleiflow.datasets.dsb2018 import convert_dsb2018
from nucleiflow.io import write_csv, write_json
from nucleiflow.segmentation.run import evaluate_from_spec, train_from_spec, tune_from_spec
from nucleiflow.segmentation.training.augment import build_pipeline, save_pipeline
from nucleiflow.splits import make_split
from nucleiflow.store import Store
from nucleiflow.workflow.cells import model_spec
from nucleiflow.workflow.checks import check_config

REPO = Path(__file__).resolve().parents[1]
SHARED_DSB = REPO.parent / "shared" / "data" / "dsb2018_stage1_test_sample"
SCHEMA = REPO / "schemas" / "config.schema.yaml"
TARGETS = ("binary", "contour", "hv")
METRICS = {"iou": "pixel IoU", "aji": "AJI", "pq": "PQ", "map": "DSB mAP"}
SPLIT = {
    "scheme": "proportions",
    "fractions": {"train": 0.7, "val": 0.1, "test": 0.2},
    "stratify_by": ["modality_hint"],
}


def experiment_config(target: str, epochs: int, tta: str) -> dict:
    training = {
        "epochs": epochs,
        "batch_size": 4,
        "lr": 0.001,
        "loss": "bce_dice",
        "input_size": 256,
        "size_policy": "tile",
        "target": target,
        "amp": False,
        "device": "cpu",
        "lr_patience": 10,
    }
    return {
        "dataset": "dsb2018",
        "split": "benchmark",
        "augmentation": "flips_rotations",
        "models": [{"arch": "resunet"}],
        "training": training,
        "evaluate_splits": ["test"],
        # Binary: the demo's fixed watershed; every target is also tuned on the validation images below.
        "postprocess": {"watershed": True, "tune": True, "tta": tta},
    }


def build_config(epochs: int, tta: str, seed: int) -> dict:
    config = {
        "seed": seed,
        "datasets": {
            "dsb2018": {
                "format": "dsb2018",
                "files": {"stage1_test.zip": {"url": "file:///unused"}},
                "splits": {"benchmark": SPLIT},
            }
        },
        "augmentation": {"flips_rotations": {"rotate": True, "hflip": 0.5, "vflip": 0.5}},
        "segmentation": {f"dsb_{t}": experiment_config(t, epochs, tta) for t in TARGETS},
    }
    validate(config, str(SCHEMA))  # fills the schema's defaults, as the workflow does
    check_config(config)
    return config


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="split, initialisation and augmentation seed")
    parser.add_argument("--tta", choices=TTA_MODES, default="none", help="test-time augmentation, tuning included")
    parser.add_argument("--data", type=Path, default=SHARED_DSB)
    parser.add_argument(
        "--workdir", type=Path, help="keep the store and models here (default: temporary); trained models are reused"
    )
    parser.add_argument("--out", type=Path, help="write the table as CSV")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"{args.data}: not found; the 45 shared DSB2018 images are expected there")
    torch.set_num_threads(args.threads)
    config = build_config(args.epochs, args.tta, args.seed)

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        store_path, split_path, pipeline_path = work / "store.h5", work / "split.csv", work / "pipeline.json"
        if not store_path.exists():
            convert_dsb2018([args.data], store_path, progress=False)
        store = Store(store_path)
        manifest = make_split(store.metadata, SPLIT, args.seed)
        write_csv(split_path, manifest)
        counts = manifest["split"].value_counts().to_dict()
        print(f"split (seed {args.seed}, stratified by modality): {counts}")
        print("test images:", ", ".join(sorted(manifest.loc[manifest["split"] == "test", "image_id"].str[:8])))
        save_pipeline(build_pipeline(config["augmentation"]["flips_rotations"]), pipeline_path)

        rows = []
        for target in TARGETS:
            name = f"dsb_{target}"
            spec = model_spec(config, "dsb2018", name, "resunet", "none", "none")
            model_dir = work / name
            info = train_from_spec(spec, store_path, split_path, pipeline_path, model_dir, threads=args.threads)
            postprocess = config["segmentation"][name]["postprocess"]
            tuned_path = model_dir / f"postprocess_tta_{args.tta}.json"
            record = tune_from_spec(
                spec, model_dir / "model.pt", store_path, split_path, postprocess, threads=args.threads, progress=False
            )
            write_json(tuned_path, record)
            print(f"{target}: tuned on {record['val_images']} val images: {record['params']}")
            variants = [("tuned on val", tuned_path)]
            if target == "binary":
                variants.insert(0, ("fixed watershed", None))
            for label, params_path in variants:
                fixed = copy.deepcopy(postprocess) | {"tune": False}
                per_image, _ = evaluate_from_spec(
                    spec,
                    model_dir / "model.pt",
                    store_path,
                    split_path,
                    "test",
                    predictions_path=None,
                    threads=args.threads,
                    progress=False,
                    postprocess=fixed if params_path is None else postprocess,
                    params_path=params_path,
                )
                rows.append(
                    {
                        "target": target,
                        "post-processing": label,
                        **{title: per_image[key].mean() for key, title in METRICS.items()},
                        "PQ std": per_image["pq"].std(),  # spread over the test images
                        "val PQ": json.loads(params_path.read_text())["mean_pq"] if params_path else None,
                        "epochs": info["epochs_run"],
                        "train s": round(info["train_seconds"]),
                    }
                )
        table = pd.DataFrame(rows)
    print(table.to_markdown(index=False, floatfmt=".3f"))
    if args.out:
        write_csv(args.out, table)
    print(yaml.safe_dump({"torch_threads": args.threads, "epochs": args.epochs, "seed": args.seed, "tta": args.tta}))


if __name__ == "__main__":
    main()
