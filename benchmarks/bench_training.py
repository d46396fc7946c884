"""Benchmark: training-step overhead of the engine against a bare PyTorch loop, and AMP against fp32.

Both variants train the same architecture from the same initial weights on the
same in-memory batches (random images, binary masks; in pinned memory on CUDA,
as the training loader delivers them) with the same loss, optimiser (Adam),
autocast dtype, gradient scaler and memory format, as
`nucleiflow.device.setup_device` chooses them for the device:

* ``bare``:   zero_grad -> forward -> loss -> backward -> step, nothing else
* ``engine``: `SegmentationTrainer.train_epoch` (`nucleiflow.engine.Trainer`) over the same batches
  (finite-loss check, per-batch metrics, `EpochMeter`, progress bar disabled)

On CUDA both run in each precision of `--precision` (default: the mixed
precision `setup_device` picks for the GPU, and fp32), so one run gives AMP
against fp32 images/s and the engine's overhead in each.

The variants alternate `--repeats` times after `--warmup` untimed steps each;
the fastest repeat of each is reported (the least disturbed by other processes:
on a shared machine the median drifts with its load; the "spread" column shows
how far the median is from it). CUDA is synchronised before and after every
timed region, so queued kernels are counted. On CPU with one torch thread (the
default) the clock is this process's CPU time, which leaves out the time other
processes hold the core; otherwise wall time. To show where any overhead comes
from, three more bare loops each add one thing the engine does per batch, and
`EpochMeter.result()` (once per epoch) is timed per image. The goal is an
engine at most 5 % slower than bare.

With `--store` the batches are real instead: random native-scale tiles of a
converted store (e.g. the real DSB2018 release, `results/dsb2018/store.h5`), cut
and augmented by the training dataset (`SegmentationDataset`, size_policy tile)
with their binary masks; the seconds the dataset took to prepare them are
printed too (they are outside the timed steps of both variants).

Run from the repository root:

    .venv/bin/python benchmarks/bench_training.py                  # CPU: unet/resnet18, 128 px, batch 4
    .venv/bin/python benchmarks/bench_training.py --store results/dsb2018/store.h5 --arch resunet --encoder none \
        --size 256 --batch 8 --loss bce_dice                       # real DSB2018 tiles, the residual U-Net
    .venv/bin/python benchmarks/bench_training.py --device cuda --encoder resnet50 --size 256 --batch 16 --steps 50
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from collections.abc import Callable

import torch

from nucleiflow.device import DeviceSetup, setup_device
from nucleiflow.models import build_model
from nucleiflow.segmentation.training.losses import build_loss
from nucleiflow.segmentation.training.trainer import EpochMeter, SegmentationTrainer, TrainSettings, batch_counts

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
# A per-step addition to the bare loop: called with (loss, logits, masks) after optimizer.step().
StepExtra = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]
EPOCH_IMAGES = 5000  # a PanNuke-sized training epoch, to put EpochMeter.result() in scale
BARE = "bare loop (fwd+bwd+step)"
ENGINE = "engine Trainer.train_epoch"
PRECISIONS = ("auto", "amp", "fp32", "both")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="unet")
    parser.add_argument("--encoder", default=None, help="default: resnet18 on CPU, resnet50 on CUDA")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="amp: the mixed precision setup_device picks (CUDA only); both: amp and fp32; "
        "auto: both on CUDA, fp32 elsewhere",
    )
    parser.add_argument("--loss", default="dice")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; 1 is the steadiest on a shared machine (more threads spin-wait under load)",
    )
    parser.add_argument(
        "--clock",
        choices=("auto", "wall", "cpu"),
        default="auto",
        help="auto: process CPU time on CPU with 1 thread, else wall time",
    )
    parser.add_argument("--no-breakdown", action="store_true", help="skip the per-cost bare variants")
    parser.add_argument(
        "--store", default=None, help="a converted store: train on its real tiles instead of random tensors"
    )
    return parser.parse_args(argv)


def make_batches(n: int, batch: int, size: int, seed: int = 0, pin: bool = False) -> list[Batch]:
    """`n` CPU batches of (normalised images, binary masks, indices), as SegmentationDataset yields them.

    `pin`: in page-locked memory, as a loader with `pin_memory` hands them over (the host-to-GPU copy
    is then asynchronous, as in training).
    """
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for step in range(n):
        images = torch.randn(batch, 3, size, size, generator=generator)
        masks = (torch.rand(batch, 1, size, size, generator=generator) > 0.7).float()
        if pin:
            images, masks = images.pin_memory(), masks.pin_memory()
        batches.append((images, masks, torch.arange(step * batch, (step + 1) * batch)))
    return batches


def store_batches(path: str, n: int, batch: int, size: int, seed: int = 0, pin: bool = False) -> list[Batch]:
    """`n` batches of real random tiles (image, binary mask, index) from the store at `path`, in memory."""
    import numpy as np

    from nucleiflow.segmentation.training.data import SegmentationDataset
    from nucleiflow.store import Store

    store = Store(path)
    ids = list(np.random.default_rng(seed).choice(store.ids, size=n * batch, replace=len(store.ids) < n * batch))
    dataset = SegmentationDataset(store, ids, size, policy="tile", random_tiles=True, seed=seed)
    batches = []
    for step in range(n):
        items = [dataset[step * batch + k] for k in range(batch)]
        images = torch.stack([torch.as_tensor(item[0]) for item in items])
        masks = torch.stack([torch.as_tensor(item[1]) for item in items])
        if pin:
            images, masks = images.pin_memory(), masks.pin_memory()
        batches.append((images, masks, torch.arange(step * batch, (step + 1) * batch)))
    return batches


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], object], device: torch.device, clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds `run()` takes by `clock`, with the device's queued work included."""
    synchronize(device)
    started = clock()
    run()
    synchronize(device)
    return clock() - started


def pick_clock(name: str, device: torch.device) -> Callable[[], float]:
    """Wall time, or this process's CPU time: on a shared CPU with one torch thread the latter
    leaves out the time other processes hold the core (it would count spin-waits with more threads)."""
    if name == "auto":
        name = "cpu" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall"
    return time.process_time if name == "cpu" else time.perf_counter


class BareLoop:
    """forward / loss / backward / step exactly as the engine sets them up, and nothing more."""

    def __init__(self, model: torch.nn.Module, setup: DeviceSetup, loss: str, lr: float = 1e-4):
        self.setup = setup
        self.memory_format = torch.channels_last if setup.channels_last else torch.contiguous_format
        self.model = model.to(setup.device, memory_format=self.memory_format)
        self.loss_fn = build_loss(loss)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.scaler = torch.amp.GradScaler(setup.device.type, enabled=setup.needs_grad_scaler)

    def forward(self, images: torch.Tensor, masks: torch.Tensor):
        images = images.to(self.setup.device, non_blocking=True, memory_format=self.memory_format)
        masks = masks.to(self.setup.device, non_blocking=True)
        with torch.autocast(
            self.setup.device.type,
            dtype=self.setup.amp_dtype or torch.float32,
            enabled=self.setup.amp_dtype is not None,
        ):
            logits = self.model(images)
        return logits, masks, self.loss_fn(logits.float(), masks)

    def step(self, images: torch.Tensor, masks: torch.Tensor):
        logits, masks, loss = self.forward(images, masks)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return logits, masks, loss

    def run(self, batches: list[Batch], extra: StepExtra | None = None) -> None:
        self.model.train()
        for images, masks, _ in batches:
            logits, masks, loss = self.step(images, masks)
            if extra is not None:
                extra(loss, logits, masks)


def engine_trainer(
    model: torch.nn.Module, setup: DeviceSetup, args: argparse.Namespace, out_dir: str
) -> SegmentationTrainer:
    settings = TrainSettings(epochs=1, batch_size=args.batch, lr=1e-4, loss=args.loss)
    return SegmentationTrainer(model, settings, setup, out_dir, progress=False)


# --- the engine's per-batch costs, one at a time ---------------------------------
def finite_check(loss, logits, masks) -> None:
    if not torch.isfinite(loss):  # a per-batch device -> host sync (train_epoch now checks every SYNC_EVERY batches)
        raise RuntimeError("loss is not finite")


def two_items(loss, logits, masks) -> None:
    loss.item()  # what EpochMeter.update once took per batch (it now keeps tensors on the device)
    f"{loss.item():.4f}"  # the progress bar's postfix (now every SYNC_EVERY batches)


def meter_update(meter: EpochMeter) -> StepExtra:
    def update(loss, logits, masks) -> None:
        meter.update(loss, batch_counts(logits.detach(), masks, 0.5))

    return update


def measure(
    variants: dict[str, Callable[[list[Batch]], object]],
    batches: list[Batch],
    warmup: list[Batch],
    repeats: int,
    device: torch.device,
    clock: Callable[[], float],
) -> dict[str, list[float]]:
    """Seconds of every repeat per variant; variants interleave so drifts (load, clock) hit all alike."""
    for run in variants.values():
        timed(lambda run=run: run(warmup), device)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for repeat in range(repeats):
        # Rotate the order too, so no variant always runs first (or right after the same one).
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            samples[name].append(timed(lambda run=variants[name]: run(batches), device, clock))
    return samples


def isolated_step_costs_us(setup: DeviceSetup, args: argparse.Namespace, reps: int = 200) -> dict[str, float]:
    """Microseconds per call of each per-batch addition, timed alone on outputs of the benchmark's shape.

    Precise where the end-to-end difference drowns in noise; on CUDA it includes
    the wait for the queue to drain (here empty, so the stall inside a real step
    is larger: the CPU stops queueing the next step's kernels).
    """
    device = setup.device
    logits = torch.randn(args.batch, 1, args.size, args.size, device=device)
    masks = (torch.rand(args.batch, 1, args.size, args.size, device=device) > 0.7).float()
    loss = logits.mean()
    extras = {
        "isfinite(loss) check": finite_check,
        "2x loss.item()": two_items,
        "batch_counts + EpochMeter.update": meter_update(EpochMeter()),
    }
    costs = {}
    for name, extra in extras.items():
        costs[name] = timed(lambda extra=extra: [extra(loss, logits, masks) for _ in range(reps)], device) / reps * 1e6
    return costs


def epoch_meter_result_us_per_image(images: int, size: int, device: torch.device) -> float:
    """Microseconds per image of EpochMeter.result() (its per-image Python loop), on `images` images."""
    meter = EpochMeter()
    logits = torch.randn(images, 1, size, size, device=device)
    masks = (torch.rand(images, 1, size, size, device=device) > 0.7).float()
    meter.update(torch.tensor(0.5, device=device), batch_counts(logits, masks, 0.5))
    return timed(meter.result, device) / images * 1e6  # the counts are computed before the clock starts


def precision_label(setup: DeviceSetup) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(setup.amp_dtype, "fp32")


def precision_setups(args: argparse.Namespace) -> list[DeviceSetup]:
    """One device setup per precision to compare: the first is the one the breakdown uses."""
    first = setup_device(args.device, args.threads, args.precision != "fp32")
    if first.device.type != "cuda":
        if args.precision in ("amp", "both"):
            print(f"note: no mixed precision on {first.device} (setup_device trains in fp32 there)")
        return [first]
    if args.precision in ("auto", "both"):
        return [first, setup_device(args.device, args.threads, False)]
    return [first]


def report(
    args,
    setups: list[DeviceSetup],
    encoder: str,
    samples: dict[str, list[float]],
    costs: dict[str, float],
    result_us: float | None,
    clock: Callable[[], float],
) -> None:
    images = args.steps * args.batch
    seconds = {name: min(times) for name, times in samples.items()}
    labels = [precision_label(setup) for setup in setups]
    first = setups[0]
    name = f" ({torch.cuda.get_device_name(first.device)})" if first.device.type == "cuda" else ""
    print(
        f"device {first.device}{name}, {args.arch}/{encoder}, {args.size} px, batch {args.batch}, "
        f"{args.steps} steps x {args.repeats} repeats (fastest; {args.warmup} warm-up steps), "
        f"precision {' and '.join(labels)}, channels_last {first.channels_last}, pinned batches {first.pin_memory}, "
        f"torch threads {torch.get_num_threads()}, clock {'process CPU time' if clock is time.process_time else 'wall'}"
    )
    print(f"{'variant':50s} {'images/s':>9s} {'ms/step':>9s} {'vs bare':>9s} {'spread':>8s}")
    for variant, sec in seconds.items():
        label = variant[variant.rindex("[") + 1 : -1]
        bare = seconds[f"{BARE} [{label}]"]
        delta = "" if variant == f"{BARE} [{label}]" else f"{(sec / bare - 1) * 100:+8.1f}%"
        spread = (statistics.median(samples[variant]) / sec - 1) * 100
        print(f"{variant:50s} {images / sec:9.2f} {sec / args.steps * 1e3:9.1f} {delta:>9s} {spread:7.1f}%")
    if costs:
        step_us = seconds[f"{BARE} [{labels[0]}]"] / args.steps * 1e6
        print(
            f"per-batch additions timed alone ({labels[0]}): "
            + ", ".join(f"{name} {us:.0f} us ({us / step_us * 100:.3f} % of a bare step)" for name, us in costs.items())
        )
    if result_us is not None:
        print(
            f"EpochMeter.result(): {result_us:.1f} us/image "
            f"({result_us * EPOCH_IMAGES / 1e6:.2f} s per {EPOCH_IMAGES}-image epoch, once per epoch)"
        )
    for label in labels:
        overhead = (seconds[f"{ENGINE} [{label}]"] / seconds[f"{BARE} [{label}]"] - 1) * 100
        verdict = "within" if overhead <= 5 else "ABOVE"
        print(f"engine overhead ({label}): {overhead:+.1f} % ({verdict} the 5 % goal)")
    if len(labels) > 1:
        amp, fp32 = labels[0], labels[1]
        print(
            f"{amp} against fp32: bare loop {seconds[f'{BARE} [{fp32}]'] / seconds[f'{BARE} [{amp}]']:.2f}x, "
            f"engine {seconds[f'{ENGINE} [{fp32}]'] / seconds[f'{ENGINE} [{amp}]']:.2f}x the images/s"
        )


def main(argv=None) -> None:
    args = parse_args(argv)
    setups = precision_setups(args)
    first = setups[0]
    encoder = args.encoder or ("resnet50" if first.device.type == "cuda" else "resnet18")
    torch.manual_seed(0)
    model = build_model(args.arch, encoder)
    if args.store:
        started = time.perf_counter()
        batches = store_batches(args.store, args.steps, args.batch, args.size, pin=first.pin_memory)
        prepared = time.perf_counter() - started
        warmup = store_batches(args.store, args.warmup, args.batch, args.size, seed=1, pin=first.pin_memory)
        print(
            f"real tiles from {args.store}: {args.steps * args.batch} tiles of {args.size} px prepared in "
            f"{prepared:.1f} s wall ({args.steps * args.batch / prepared:.1f} tiles/s, outside the timed steps)"
        )
    else:
        batches = make_batches(args.steps, args.batch, args.size, pin=first.pin_memory)
        warmup = make_batches(args.warmup, args.batch, args.size, seed=1, pin=first.pin_memory)
    with tempfile.TemporaryDirectory() as out_dir:
        variants: dict[str, Callable[[list[Batch]], object]] = {}
        for index, setup in enumerate(setups):
            tag = f" [{precision_label(setup)}]"
            bare = BareLoop(copy.deepcopy(model), setup, args.loss)
            trainer = engine_trainer(copy.deepcopy(model), setup, args, f"{out_dir}/{index}")
            variants[BARE + tag] = bare.run
            variants[ENGINE + tag] = lambda b, trainer=trainer: trainer.train_epoch(b, epoch=1)
            if index == 0 and not args.no_breakdown:
                variants.update(
                    {
                        "bare + isfinite(loss) check" + tag: lambda b, bare=bare: bare.run(b, finite_check),
                        "bare + 2x loss.item()" + tag: lambda b, bare=bare: bare.run(b, two_items),
                        "bare + batch_counts + EpochMeter.update" + tag: lambda b, bare=bare: bare.run(
                            b, meter_update(EpochMeter())
                        ),
                    }
                )
        clock = pick_clock(args.clock, first.device)
        samples = measure(variants, batches, warmup, args.repeats, first.device, clock)
    costs = {} if args.no_breakdown else isolated_step_costs_us(first, args)
    result_us = None if args.no_breakdown else epoch_meter_result_us_per_image(512, args.size, first.device)
    report(args, setups, encoder, samples, costs, result_us, clock)


if __name__ == "__main__":
    main()
