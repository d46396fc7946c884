"""Benchmark: prediction throughput (images/s) of the residual U-Net on 256 x 256 images.

Two figures, after `--warmup` untimed images:

* ``model``: the network alone (`Predictor.predict_maps_batch`, batches of `--batch`)
* ``predict``: the predict stage end to end, one image at a time
  (`segmentation.inference.predict.predict_images`: probability, threshold, watershed
  post-processing, per-nucleus table, label/probability TIFFs and overlay PNG)

The images are synthetic DSB2018-like fluorescence and brightfield images
(`nucleiflow.synthetic.dsb2018`) padded or cropped to the size; the weights are
the untrained (seeded) initialisation: the network's cost does not depend on what
it learnt, the post-processing's only on how many objects it finds (printed).
The end-to-end figure includes the warm-up images.

Run from the repository root:

    .venv/bin/python benchmarks/bench_predict.py                  # CPU, 2 threads, 32 images
    .venv/bin/python benchmarks/bench_predict.py --device cuda --images 256
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from nucleiflow.device import setup_device
from nucleiflow.models import build_model
from nucleiflow.segmentation.inference.predict import predict_images
from nucleiflow.segmentation.inference.predictor import InferenceConfig, Predictor
from nucleiflow.segmentation.representation.postprocess import configured_params
from nucleiflow.synthetic.dsb2018 import make_sample


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    return parser.parse_args(argv)


def synthetic_images(n: int, size: int, seed: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    images = []
    for k in range(n):
        image, _ = make_sample(rng, ("fluorescence", "brightfield")[k % 2])
        image = np.pad(
            image[:size, :size, :3], ((0, max(0, size - image.shape[0])), (0, max(0, size - image.shape[1])), (0, 0))
        )
        images.append(np.ascontiguousarray(image))
    return images


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    setup = setup_device(args.device, args.threads, amp=args.device != "cpu")
    torch.manual_seed(0)
    model = build_model("resunet", "none")
    post = {"watershed": True, "min_size": 4}
    config = InferenceConfig(args.size, batch_size=args.batch, watershed=configured_params("binary", post, 0.5))
    predictor = Predictor(model, config, setup)
    images = synthetic_images(args.images + args.warmup, args.size)
    predictor.predict_maps_batch(images[: args.warmup])
    started = time.perf_counter()
    predictor.predict_maps_batch(images[args.warmup :])
    model_rate = args.images / (time.perf_counter() - started)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for k, image in enumerate(images):
            tifffile.imwrite(folder / f"img_{k:04d}.tif", image)
        started = time.perf_counter()
        table, nuclei = predict_images(predictor, Path(tmp), Path(tmp) / "out", progress=False)
        predict_rate = len(table) / (time.perf_counter() - started)
    print(
        f"device: {setup.device}, threads: {args.threads}, residual U-Net, "
        f"{args.size} x {args.size}, {args.images} images"
    )
    print(f"model (batch {args.batch}):            {model_rate:8.2f} images/s")
    print(f"predict stage end to end (1 at a time): {predict_rate:8.2f} images/s ({len(nuclei)} nuclei found)")


if __name__ == "__main__":
    main()
