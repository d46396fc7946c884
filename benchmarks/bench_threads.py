"""Benchmark: wall and CPU time of one training and one evaluation job of the demo at 1 and 2 threads.

The jobs are the workflow's own (`rules/train.smk`, `rules/evaluate.smk`, their
scripts and package calls), run by Snakemake on the demo configuration in a
scratch folder, so the figures include each job's start-up as `make demo` pays it:

1. untimed: the demo data and everything the chosen model cell needs (store,
   split, augmentation pipeline), with `--omit-from train_segmentation`;
2. timed, for each thread count in turn (`--repeats` rounds, interleaved):
   `snakemake --forcerun <model.pt> --set-threads train_segmentation=N
   evaluate_segmentation=N --cores 2 <evaluation of one split>`, which retrains
   the cell and re-evaluates it; the figures are the jobs' own: wall seconds
   from their Snakemake benchmark files, CPU seconds as their logs account them
   (user + system of the job's process and its children; Snakemake's benchmark
   `cpu_time` samples every 30 s and undercounts longer jobs).

It prints, per job and thread count, the wall and CPU time of the fastest
round, CPU / wall (the cores the job kept busy), and the speed-up in wall time
over one thread. Two one-thread jobs side by side on two cores finish twice the
work of one job in the same time, so a second thread pays only where its
speed-up approaches 2; below that, the thread policy (`nucleiflow.threads`)
gives CPU-only runs one thread per job and lets Snakemake run two at a time.
On a shared machine the wall times (and so the speed-up) move with its load;
CPU time is the steadier figure: a second thread that only adds CPU time does
nothing useful.

Run from the repository root:

    .venv/bin/python benchmarks/bench_threads.py                        # pannuke_grid unet/resnet50, ~5 min
    .venv/bin/python benchmarks/bench_threads.py --cell dsb_classic_unet/classic_unet/none/none --subset test
    .venv/bin/python benchmarks/bench_threads.py --workdir /tmp/threads --repeats 3   # inputs kept, reused
    .venv/bin/python benchmarks/bench_threads.py --epochs 3   # a shorter window (the config's epochs: 10)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from nucleiflow import run_summary
from nucleiflow.log import logged_cpu

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
JOBS = ("train_segmentation", "evaluate_segmentation")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cell",
        default="pannuke_grid/unet/resnet50/none",
        help="experiment/arch/encoder/reg of the demo config (default: the first PanNuke grid cell)",
    )
    parser.add_argument("--subset", default="test", choices=("train", "val", "test"), help="split to evaluate")
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated (default 1,2)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds per thread count; the fastest is kept")
    parser.add_argument("--configfile", type=Path, default=REPO / "config.yaml")
    parser.add_argument(
        "--epochs", type=int, help="train the cell for this many epochs instead of the config's (a shorter window)"
    )
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one, removed after)")
    return parser.parse_args(argv)


def dataset_of(config: dict, experiment: str) -> str:
    try:
        return config["segmentation"][experiment]["dataset"]
    except KeyError:
        raise SystemExit(f"--cell: experiment {experiment!r} is not in the config's segmentation section") from None


def snakemake(workdir: Path, configfile: Path, *args: str) -> None:
    command = [
        SNAKEMAKE,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        "--cores",
        "2",
        "--rerun-incomplete",  # after a stopped benchmark
        "--quiet",
        "rules",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{(result.stdout + result.stderr)[-3000:]}")


def read_benchmark(path: Path) -> tuple[float, float]:
    """(wall s, CPU s) of a job: its benchmark file's wall time, and the CPU time its log accounts
    (`nucleiflow.log.RESOURCES`), else the benchmark's sampled `cpu_time` (`nucleiflow.run_summary`)."""
    times = run_summary.read_benchmark(path)
    logged = logged_cpu(run_summary.job_log(path))
    return times.wall_s, times.cpu_s if logged is None else logged


def run(args: argparse.Namespace, workdir: Path) -> dict[tuple[str, int], list[tuple[float, float]]]:
    config = yaml.safe_load(args.configfile.read_text())
    experiment, arch, encoder, reg = args.cell.split("/")
    if args.epochs is not None:
        config["segmentation"][experiment]["training"]["epochs"] = args.epochs
        args.configfile = workdir / "bench_threads_config.yaml"
        args.configfile.write_text(yaml.safe_dump(config, sort_keys=False))
    base = f"results/{dataset_of(config, experiment)}/{experiment}"
    model = f"{base}/models/{arch}/{encoder}/{reg}/model.pt"
    evaluation = f"{base}/evaluation/{arch}/{encoder}/{reg}/{args.subset}_per_image.csv"
    benchmarks = {
        "train_segmentation": workdir / base / "benchmarks" / f"train_{arch}_{encoder}_{reg}.tsv",
        "evaluate_segmentation": workdir / base / "benchmarks" / f"evaluate_{arch}_{encoder}_{reg}_{args.subset}.tsv",
    }
    started = time.monotonic()
    snakemake(workdir, args.configfile, "--omit-from", "train_segmentation", "--", evaluation)
    print(f"inputs of {args.cell} ready in {time.monotonic() - started:.0f} s ({workdir})", flush=True)
    counts = [int(n) for n in args.threads.split(",")]
    times: dict[tuple[str, int], list[tuple[float, float]]] = {(job, n): [] for job in JOBS for n in counts}
    for round_ in range(1, args.repeats + 1):
        for threads in counts:
            snakemake(
                workdir,
                args.configfile,
                "--forcerun",
                model,
                "--set-threads",
                *(f"{job}={threads}" for job in JOBS),
                "--",
                evaluation,
            )
            for job in JOBS:
                wall, cpu = read_benchmark(benchmarks[job])
                times[job, threads].append((wall, cpu))
                print(f"round {round_}, {threads} thread(s), {job}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    return times


def report(times: dict[tuple[str, int], list[tuple[float, float]]], cell: str) -> None:
    print(f"\n{cell}: fastest round per job and thread count")
    print("| job | threads | wall s | CPU s | CPU / wall | speed-up (wall) |")
    print("|---|---|---|---|---|---|")
    for job in JOBS:
        rounds = {n: min(runs) for (name, n), runs in times.items() if name == job}
        one = rounds[min(rounds)][0]
        for threads, (wall, cpu) in sorted(rounds.items()):
            print(f"| {job} | {threads} | {wall:.1f} | {cpu:.1f} | {cpu / wall:.2f} | {one / wall:.2f}x |")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.workdir is None:
        with tempfile.TemporaryDirectory(prefix="bench_threads_") as scratch:
            times = run(args, Path(scratch))
    else:
        args.workdir.mkdir(parents=True, exist_ok=True)
        times = run(args, args.workdir.resolve())
    report(times, args.cell)


if __name__ == "__main__":
    main()
