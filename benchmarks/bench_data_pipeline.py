"""Benchmark: does the model ever wait for data? Loader images/s against model images/s.

* data pipeline: `SegmentationDataset` over a store (HDF5 read, resize to
  `--size`, the albumentations pipeline the augment stage builds, normalisation)
  batched by `make_loader` with N workers, for each N in `--workers`, over
  `--epochs` epochs. Workers persist across epochs (as in training), so the
  first epoch pays their start-up and the later ones do not; `--respawn` runs
  the loader as it was before: workers forked again every epoch, OpenCV and
  torch threads not limited inside them.
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
    .venv/bin/python benchmarks/bench_data_pipeline.py --respawn                  # the same, workers re-forked
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
from torch.utils.data import DataLoader

from nucleiflow.archive import safe_extract_zip
from nucleiflow.datasets.pannuke import convert_pannuke
from nucleiflow.device import IN_PROCESS, DeviceSetup, loader_kwargs, setup_device
from nucleiflow.models import build_model
from nucleiflow.segmentation.training.augment import build_pipeline
from nucleiflow.segmentation.training.data import SegmentationDataset, make_loader
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
    parser.add_argument("--epochs", type=int, default=3, help="passes over the store per worker count")
    parser.add_argument(
        "--respawn",
        action="store_true",
        help="fork workers again every epoch, without thread limits (the loader before persistent workers)",
    )
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


def build_loader(dataset, batch: int, workers: int, pin_memory: bool, respawn: bool) -> DataLoader:
    """`make_loader` as training uses it, or with `respawn` the loader as it was before persistent workers."""
    if not respawn:
        return make_loader(dataset, batch, shuffle=True, seed=0, workers=workers, pin_memory=pin_memory)
    options = loader_kwargs(IN_PROCESS, workers=workers, pin_memory=pin_memory)
    options.update(persistent_workers=False, worker_init_fn=None)
    generator = torch.Generator().manual_seed(0)
    return DataLoader(dataset, batch, shuffle=True, generator=generator, drop_last=len(dataset) > batch, **options)


def loader_rate(
    store_path: Path, size: int, batch: int, workers: int, epochs: int, pin_memory: bool, respawn: bool
) -> dict:
    """Images/s of the data pipeline alone, epoch by epoch as training sees it.

    `first_wait_s` is the wait for the first batch of the first epoch (worker
    start-up), `later_wait_s` the mean such wait of the later epochs (about zero
    with persistent workers); `first` and `later` are the images/s of the first
    epoch and the mean of the later ones, waits included.
    """
    store = Store(store_path)
    dataset = SegmentationDataset(store, store.ids, size, transform=build_pipeline(PAPER_AUGMENTATION), seed=0)
    loader = build_loader(dataset, batch, workers, pin_memory, respawn)
    rates, startups = [], []
    for epoch in range(1, epochs + 1):
        dataset.set_epoch(epoch)
        started = time.perf_counter()
        first = None
        images = 0
        for batch_images, _, _ in loader:
            images += len(batch_images)
            if first is None:
                first = time.perf_counter()  # workers are up and the first batch arrived
        rates.append(images / (time.perf_counter() - started))
        startups.append(first - started)
    del loader  # persistent workers end here, before the next worker count starts its own
    return {
        "workers": workers,
        "first_wait_s": startups[0],
        "later_wait_s": sum(startups[1:]) / len(startups[1:]) if len(startups) > 1 else float("nan"),
        "first_images_per_s": rates[0],
        "later_images_per_s": sum(rates[1:]) / len(rates[1:]) if len(rates) > 1 else float("nan"),
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
    mode = "workers re-forked every epoch, threads not limited" if args.respawn else "persistent workers, 1 thread each"
    print(f"loader: {mode}; {args.epochs} epochs per worker count")
    print(
        f"{'workers':>7s} {'wait epoch 1 s':>15s} {'wait later s':>13s} {'epoch 1 images/s':>17s} "
        f"{'later images/s':>15s} "
        f"{'later / model':>14s}  verdict"
    )
    for rate in rates:
        steady = rate["later_images_per_s"] if args.epochs > 1 else rate["first_images_per_s"]
        ratio = steady / model
        verdict = "model waits for data" if ratio < 1 else "loader keeps up"
        print(
            f"{rate['workers']:7d} {rate['first_wait_s']:15.3f} {rate['later_wait_s']:13.3f} "
            f"{rate['first_images_per_s']:17.1f} "
            f"{rate['later_images_per_s']:15.1f} {ratio:13.1f}x  {verdict}"
        )
    in_process = next((r for r in rates if r["workers"] == 0), None)
    if in_process is not None:
        serial = 1 / (1 / in_process["first_images_per_s"] + 1 / model)
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
        rates = [
            loader_rate(store_path, args.size, args.batch, w, args.epochs, setup.pin_memory, args.respawn)
            for w in workers
        ]
        model = model_rate(args, setup, encoder)
        report(args, setup, encoder, store_path, rates, model)


if __name__ == "__main__":
    main()
