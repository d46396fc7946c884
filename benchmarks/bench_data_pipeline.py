"""Benchmark: does the model ever wait for data? Loader images/s against model images/s.

* data pipeline: `SegmentationDataset` over a store (HDF5 read, resize to
  `--size`, the albumentations pipeline the augment stage builds, normalisation)
  batched by `make_loader` with N workers, for each N in `--workers`. Startup
  (worker spawn, first batch) is timed apart from the steady rate.
* model: forward + backward + Adam step on in-memory batches of the same shape
  on `--device` (the bare loop of bench_training.py: what the model consumes).

A loader slower than the model means the accelerator waits for data. On CPU,
training loads in-process (`setup_device` gives 0 workers there: workers would
compete for the same cores), so each step pays loading plus compute; the
"serial" line shows that combined rate.

Without `--store`, a synthetic PanNuke store (`--images` 256 x 256 tiles) is
built in a temporary folder with the workflow's own synthetic generator and
converter. Run from the repository root:

    .venv/bin/python benchmarks/bench_data_pipeline.py                            # CPU, 128 px, workers 0,1,2
    .venv/bin/python benchmarks/bench_data_pipeline.py --device cuda --encoder resnet50 --size 256 \\
        --batch 16 --workers 0,4,8,15 --amp --store results/pannuke/store.h5
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch
from bench_training import BareLoop, make_batches, timed  # same folder: the model side

from nucleiflow.archive import safe_extract_zip
from nucleiflow.datasets.pannuke import convert_pannuke
from nucleiflow.device import DeviceSetup, setup_device
from nucleiflow.models import build_model
from nucleiflow.segmentation.augment import build_pipeline
from nucleiflow.segmentation.data import SegmentationDataset, make_loader
from nucleiflow.store import Store
from nucleiflow.synthetic.pannuke import write_fold_zip

PAPER_AUGMENTATION = {"rotate": True, "hflip": 0.5, "vflip": 0.5, "brightness_contrast": 0.2}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, help="an existing store.h5 (default: a synthetic PanNuke one)")
    parser.add_argument("--images", type=int, default=96, help="images of the synthetic store")
    parser.add_argument("--size", type=int, default=128, help="training input size")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--workers", default="0,1,2", help="comma-separated DataLoader worker counts")
    parser.add_argument("--epochs", type=int, default=1, help="passes over the store per worker count")
    parser.add_argument("--arch", default="unet")
    parser.add_argument("--encoder", default=None, help="default: resnet18 on CPU, resnet50 on CUDA")
    parser.add_argument("--model-steps", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; 1 is the steadiest on a shared machine (more threads spin-wait under load)",
    )
    return parser.parse_args(argv)


def synthetic_store(folder: Path, images: int, seed: int = 0) -> Path:
    """A PanNuke store of `images` tiles: the synthetic release layout through the real converter."""
    archive = write_fold_zip(folder / "fold_1.zip", 1, images, seed=seed)
    root = safe_extract_zip(archive, folder / "fold_1")
    out = folder / "store.h5"
    convert_pannuke([root], out, progress=False)
    return out


def loader_rate(store_path: Path, size: int, batch: int, workers: int, epochs: int, pin_memory: bool) -> dict:
    """Images/s of the data pipeline alone, per epoch as training sees it (workers re-spawn every epoch).

    `steady` leaves out each epoch's first batch (worker start-up); with workers
    it is flattered by the batches prefetched meanwhile, so `epoch` is the figure to compare.
    """
    store = Store(store_path)
    dataset = SegmentationDataset(store, store.ids, size, transform=build_pipeline(PAPER_AUGMENTATION), seed=0)
    loader = make_loader(dataset, batch, shuffle=True, seed=0, workers=workers, pin_memory=pin_memory)
    total = startup = steady_images = 0.0
    images = 0
    for epoch in range(1, epochs + 1):
        dataset.set_epoch(epoch)
        started = time.perf_counter()
        first = None
        for batch_images, _, _ in loader:
            images += len(batch_images)
            if first is None:
                first = time.perf_counter()  # workers are up and the first batch arrived
            else:
                steady_images += len(batch_images)
        ended = time.perf_counter()
        total += ended - started
        startup += first - started
    return {
        "workers": workers,
        "startup_s": startup / epochs,
        "epoch_images_per_s": images / total,
        "steady_images_per_s": steady_images / (total - startup),
    }


def model_rate(args: argparse.Namespace, setup: DeviceSetup, encoder: str) -> float:
    """Images/s the model consumes in training (forward + backward + step), data already in memory."""
    torch.manual_seed(0)
    bare = BareLoop(copy.deepcopy(build_model(args.arch, encoder)), setup, "dice")
    bare.run(make_batches(2, args.batch, args.size, seed=1))  # warm-up
    batches = make_batches(args.model_steps, args.batch, args.size)
    return args.model_steps * args.batch / timed(lambda: bare.run(batches), setup.device)


def report(args, setup: DeviceSetup, encoder: str, store_path: Path, rates: list[dict], model: float) -> None:
    print(
        f"store {store_path} ({len(Store(store_path))} images), {args.size} px, batch {args.batch}, "
        f"augmentation {PAPER_AUGMENTATION}"
    )
    print(
        f"model {args.arch}/{encoder} on {setup.device} (amp {setup.amp_dtype}, torch threads "
        f"{torch.get_num_threads()}): {model:.2f} images/s forward+backward+step"
    )
    print(
        f"{'workers':>7s} {'startup s':>10s} {'epoch images/s':>15s} {'steady images/s':>16s} "
        f"{'epoch / model':>14s}  verdict"
    )
    for rate in rates:
        ratio = rate["epoch_images_per_s"] / model
        verdict = "model waits for data" if ratio < 1 else "loader keeps up"
        print(
            f"{rate['workers']:7d} {rate['startup_s']:10.2f} {rate['epoch_images_per_s']:15.1f} "
            f"{rate['steady_images_per_s']:16.1f} {ratio:13.1f}x  {verdict}"
        )
    in_process = next((r for r in rates if r["workers"] == 0), None)
    if in_process is not None:
        serial = 1 / (1 / in_process["epoch_images_per_s"] + 1 / model)
        print(
            f"serial (0 workers: load then compute each step, as training on CPU does): {serial:.2f} images/s, "
            f"{(1 - serial / model) * 100:.1f} % below the model alone"
        )


def main(argv=None) -> None:
    args = parse_args(argv)
    setup = setup_device(args.device, args.threads, args.amp)
    encoder = args.encoder or ("resnet50" if setup.device.type == "cuda" else "resnet18")
    workers = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        store_path = args.store or synthetic_store(Path(tmp), args.images)
        rates = [loader_rate(store_path, args.size, args.batch, w, args.epochs, setup.pin_memory) for w in workers]
        model = model_rate(args, setup, encoder)
        report(args, setup, encoder, store_path, rates, model)


if __name__ == "__main__":
    main()
