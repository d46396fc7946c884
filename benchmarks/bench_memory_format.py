"""Benchmark: channels-last against the default (NCHW) memory format on the CPU, for inference and training.

For each architecture the same model and batch run in both formats, alternately, and the best of
`--repeats` timed passes is printed (seconds per batch and the speed-up of channels-last). Inference
is what `nucleiflow.device.for_inference` decides on (channels-last everywhere); training keeps NCHW on
the CPU, where the gain is uneven across encoders and a new format would change every CPU run's weights.

    .venv/bin/python benchmarks/bench_memory_format.py                 # one thread, both parts
    .venv/bin/python benchmarks/bench_memory_format.py --threads 2 --parts inference
"""

from __future__ import annotations

import argparse
import time

import torch

from nucleiflow.models.registry import build_model

# (arch, encoder, input side, batch): the studies' models at the sizes they run at.
CASES = [
    ("resunet", "none", 256, 8),
    ("classic_unet", "none", 256, 4),
    ("unet", "resnet18", 256, 8),
    ("unet", "resnet50", 256, 4),
    ("deeplabv3plus", "resnet50", 256, 4),
    ("unet", "efficientnet-b4", 256, 4),
]
FORMATS = {"NCHW": torch.contiguous_format, "channels-last": torch.channels_last}


def time_inference(model: torch.nn.Module, batch: torch.Tensor, repeats: int) -> dict[str, float]:
    best = dict.fromkeys(FORMATS, float("inf"))
    model.eval()
    with torch.inference_mode():
        for _ in range(repeats):
            for name, fmt in FORMATS.items():
                net, x = model.to(memory_format=fmt), batch.contiguous(memory_format=fmt)
                net(x)  # oneDNN picks its kernels for this format on the first pass
                start = time.perf_counter()
                net(x)
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def time_training(model: torch.nn.Module, batch: torch.Tensor, repeats: int) -> dict[str, float]:
    best = dict.fromkeys(FORMATS, float("inf"))
    target = (torch.rand(batch.shape[0], 1, *batch.shape[2:]) > 0.5).float()
    model.train()
    for _ in range(repeats):
        for name, fmt in FORMATS.items():
            net, x = model.to(memory_format=fmt), batch.contiguous(memory_format=fmt)
            optimiser = torch.optim.SGD(net.parameters(), lr=1e-4)
            for timed in (False, True):  # the first step picks the kernels
                start = time.perf_counter()
                optimiser.zero_grad()
                torch.nn.functional.binary_cross_entropy_with_logits(net(x), target).backward()
                optimiser.step()
                if timed:
                    best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=["inference", "training"], default=["inference", "training"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=None, help="input side for every model (default: per model)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"CPU, {args.threads} torch thread(s), best of {args.repeats}; seconds per batch")
    for part in args.parts:
        timer = time_inference if part == "inference" else time_training
        for arch, encoder, size, batch_size in CASES:
            size = args.size or size
            model = build_model(arch, encoder, classes=1)
            best = timer(model, torch.randn(batch_size, 3, size, size), args.repeats)
            print(
                f"{part:9s} {arch}/{encoder} {size} px, batch {batch_size}: NCHW {best['NCHW']:.2f} s, "
                f"channels-last {best['channels-last']:.2f} s, speed-up {best['NCHW'] / best['channels-last']:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
