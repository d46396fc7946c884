"""Benchmark: seconds to explain one 256 x 256 image with Grad-CAM and with LRP, per model.

Each method runs on one image (batch 1) of a freshly built model in evaluation
mode (weights do not change the cost), as `nucleiflow.segmentation.analyses.explain`
runs it in the explain stage: Grad-CAM is captum's `LayerGradCam` on the
default layer of the architecture, LRP zennit's `EpsilonPlusFlat` with the
BatchNorm and residual-sum canonizers. After one untimed warm-up call the
fastest of `--repeats` calls is reported (the least disturbed by other
processes on a shared machine) beside the median. The goal: under 10 s per
image per method on a 2-core CPU.

Run from the repository root:

    .venv/bin/python benchmarks/bench_explain.py                 # resunet and unet/resnet50, 2 threads
    .venv/bin/python benchmarks/bench_explain.py --models resunet/none deeplabv3plus/efficientnet-b4
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch

from nucleiflow.models import build_model
from nucleiflow.segmentation.analyses import explain as E
from nucleiflow.workflow.explain import DEFAULT_LAYERS


def time_call(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up: allocations, canonizer and hook set-up paths
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resunet/none", "unet/resnet50"], help="arch/encoder")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"{'model':28s} {'method':8s} {'best s/image':>12s} {'median':>8s}  ({args.size}px, {args.threads} threads)")
    for name in args.models:
        arch, encoder = name.split("/")
        model = E.prepare_for_attribution(build_model(arch, encoder))
        x = torch.rand(1, 3, args.size, args.size)
        _, _, mask = E.target_mask(model, x)
        mask = torch.ones_like(mask) if mask.sum() == 0 else mask
        layer = E.named_layer(model, DEFAULT_LAYERS[arch]["gradcam"], "gradcam_layer")
        methods = {
            "gradcam": partial(E.gradcam, model, x, mask, layer),
            "lrp": partial(E.lrp, model, x, mask, "epsilon_plus_flat"),
        }
        for method, fn in methods.items():
            best, median = time_call(fn, args.repeats)
            print(f"{name:28s} {method:8s} {best:12.2f} {median:8.2f}", flush=True)


if __name__ == "__main__":
    main()
