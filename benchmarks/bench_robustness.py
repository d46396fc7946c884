"""Benchmark: what the robustness sweep costs, relative to one clean evaluation of the same model.

The sweep runs one evaluation per perturbation x severity (severity 0 is read
from the stored clean evaluation) plus the stain-normalised condition, on one
loaded model with the inference code's batching. Its cost is therefore about
(number of conditions) x (one clean evaluation), plus the perturbations
themselves (the Macenko stain estimate and torchstain's normaliser are the
dear ones on CPU). This measures both on a synthetic PanNuke store (256 x 256
tiles, the workflow's own generator and converter) with an untrained model.

    .venv/bin/python benchmarks/bench_robustness.py                       # CPU, unet/resnet18, 128 px, paper sweep
    .venv/bin/python benchmarks/bench_robustness.py --config config.yaml --experiment dsb_resunet_70_20_10
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from nucleiflow.archive import safe_extract_zip
from nucleiflow.datasets.pannuke import convert_pannuke
from nucleiflow.device import setup_device
from nucleiflow.models import build_model
from nucleiflow.segmentation.analyses import robustness as rb
from nucleiflow.segmentation.inference.inference import evaluate_split
from nucleiflow.segmentation.inference.predictor import InferenceConfig, Predictor
from nucleiflow.store import Store
from nucleiflow.synthetic.pannuke import write_fold_zip


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/paper.yaml", help="config whose robustness section is swept")
    parser.add_argument("--experiment", default=None, help="experiment with a robustness section (first one)")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--arch", default="unet")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def robustness_section(config_path: str, experiment: str | None) -> dict:
    experiments = yaml.safe_load(Path(config_path).read_text())["segmentation"]
    name = experiment or next(n for n, e in experiments.items() if e.get("robustness"))
    return experiments[name]["robustness"]


def main(argv=None) -> None:
    args = parse_args(argv)
    spec = robustness_section(args.config, args.experiment)
    setup = setup_device(args.device, args.threads, amp=False)
    predictor = Predictor(
        build_model(args.arch, args.encoder), InferenceConfig(args.size, batch_size=args.batch), setup
    )
    with tempfile.TemporaryDirectory() as tmp:
        archive = write_fold_zip(Path(tmp) / "fold_1.zip", 1, args.images, seed=0)
        convert_pannuke([safe_extract_zip(archive, Path(tmp) / "fold_1")], Path(tmp) / "store.h5", progress=False)
        store = Store(Path(tmp) / "store.h5")
        ids = store.labelled_ids[: args.images]
        evaluate_split(predictor, store, ids[:2], progress=False)  # warm-up
        started = time.perf_counter()
        clean = evaluate_split(predictor, store, ids, progress=False)
        clean_s = time.perf_counter() - started
        perturb_s = 0.0

        def timed_evaluate(image_of):
            nonlocal perturb_s

            def timed_image(sample):
                nonlocal perturb_s
                t0 = time.perf_counter()
                image = image_of(sample)
                perturb_s += time.perf_counter() - t0
                return image

            return evaluate_split(predictor, store, ids, progress=False, image_of=timed_image)

        normaliser = rb.StainNormaliser(store[ids[0]].image)
        started = time.perf_counter()
        frame = rb.sweep(timed_evaluate, clean, spec, seed=0, normaliser=normaliser)
        sweep_s = time.perf_counter() - started
    n_conditions = len(rb.conditions(spec)) + 1
    print(f"{args.arch}/{args.encoder}, {args.size} px, {len(ids)} images, device {setup.device}")
    print(f"clean evaluation: {clean_s:.2f} s")
    print(f"sweep ({n_conditions} evaluations: {len(rb.conditions(spec))} perturbation x severity + normalised):")
    print(f"  {sweep_s:.2f} s = {sweep_s / clean_s:.1f} x one clean evaluation; perturbing images {perturb_s:.2f} s")
    per = pd.Series(frame.groupby("perturbation").size() / len(ids), name="evaluations")
    print(per.astype(int).to_string())
    assert np.isfinite(frame["dice"]).all()


if __name__ == "__main__":
    main()
