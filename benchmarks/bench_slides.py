"""Benchmark: the whole-slide stage against the network alone, its peak memory, and a real slide end to end.

Three parts, each printed as it finishes:

* ``throughput``: on one slide (default: a synthetic 4096 x 4096 slide at 0.25 um/px, about half tissue),
  the tiles the stage runs (its plan: tissue tiles of every chunk window) are read once into memory and
  timed through the network alone (`SlideModel.predict_maps_batch`: images/s, megapixels/s); then the
  stage end to end on the same slide (plan, segment, gather: reading, network, post-processing, every
  output), with post-processing in process and in `--workers` worker processes: tiles/s, megapixels/s,
  nuclei/s, and each one's share of the network-alone throughput.
* ``memory``: synthetic slides of 10k x 10k and 50k x 50k pixels (tiled pyramidal OME-TIFF written tile
  by tile) with the same tissue piece, each segmented end to end in a fresh child process: peak RSS
  (`ru_maxrss`) of that process. Bounded memory: the two are the same.
* ``cmu``: CMU-1-Small-Region.svs (../shared/data/wsi, 20x: run at the model's 0.25 um/px) end to end.

The model is a trained one (`--model-dir`, default the demo's PanNuke hv model; its tuned postprocess.json
is used when present). Run from the repository root, niced on a shared machine:

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/bench_slides.py --threads 1
    .venv/bin/python benchmarks/bench_slides.py --device cuda --parts throughput cmu --batch 64
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "results/pannuke/pannuke_hv/models/unet/resnet18/none"
CMU = REPO.parent / "shared/data/wsi/CMU-1-Small-Region.svs"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", default=["throughput", "memory", "cmu"])
    parser.add_argument("--model-dir", type=Path, default=DEMO_MODEL)
    parser.add_argument("--tta", default="none", help="test-time augmentation (none, flips, d4)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="post-processing worker processes of the stage (0: in process; 2: the stage on a 2-core CPU)",
    )
    parser.add_argument("--chunk", type=int, default=2048, help="side of the region chunks (the stage's default)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--size", type=int, default=4096, help="side of the throughput slide (pixels)")
    parser.add_argument("--tissue-px", type=int, default=1536, help="side of the memory slides' tissue piece")
    parser.add_argument("--tmp", type=Path, default=None)
    parser.add_argument("--cmu", type=Path, default=CMU, help="CMU-1-Small-Region.svs (default: ../shared/data/wsi)")
    parser.add_argument("--child", nargs=2, metavar=("SLIDE", "OUT"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def load_model(args):
    import torch

    from nucleiflow.datasets.pannuke import CLASS_NAMES
    from nucleiflow.segmentation.inference.predictor import Predictor
    from nucleiflow.slides.model import SlideModel

    torch.set_num_threads(args.threads)
    tuned = args.model_dir / "postprocess.json"
    predictor = Predictor.from_model_dir(
        args.model_dir,
        tuned_path=tuned if tuned.is_file() else None,
        postprocess={"tune": False} if not tuned.is_file() else None,
        device=args.device,
        threads=args.threads,
        batch_size=args.batch,
    )
    predictor.config = replace(predictor.config, tta=args.tta)
    names = CLASS_NAMES[1:] if predictor.config.layout.type_classes else ()
    return SlideModel(predictor, args.tile, args.batch, tuple(names))


def run_stage(
    slide: Path, out: Path, model, run_mpp: float = 0.25, slide_mpp=None, workers: int = 0, chunk_size: int = 2048
) -> dict:
    from nucleiflow.slides.stage import gather_slide, plan_slide, segment_slide_part

    files = SimpleNamespace(
        plan=out / "plan.json",
        tissue=out / "tissue_mask.png",
        thumbnail=out / "thumbnail.png",
        geojson=out / "nuclei.geojson",
        nuclei=out / "nuclei.parquet",
        labels=out / "labels.ome.tif",
        table=out / "tables" / "summary.csv",
        figure=out / "figures" / "overview.png",
    )
    options = {"run_mpp": run_mpp, "tile_size": model.tile_size, "tile_overlap": 32, "chunk_size": chunk_size}
    started = time.perf_counter()
    plan = plan_slide(slide, options, slide_mpp, files)
    part = out / "parts" / "part_0.json"
    summary = segment_slide_part(files.plan, files.tissue, model, slide, out / "chunks", 0, 1, part, workers=workers)
    gathering = time.perf_counter()
    row = gather_slide(files.plan, files.tissue, files.thumbnail, [part], out / "chunks", files)
    ended = time.perf_counter()
    return {
        "seconds": ended - started,
        "gather_seconds": ended - gathering,
        "plan": plan,
        "summary": summary,
        "row": row,
    }


def stage_tiles(slide: Path, plan: dict, mask) -> list[np.ndarray]:
    """Every tile the stage runs for this plan, read as the stage reads them."""
    from nucleiflow.slides.chunks import chunk_window, read_run_window, window_tiles
    from nucleiflow.slides.reader import open_slide

    tiles, size = [], plan["tile_size"]
    with open_slide(slide) as opened:
        for chunk in plan["chunks"]:
            window = chunk_window(plan, chunk)
            image = read_run_window(opened, plan, *window)
            tiles += [image[y : y + size, x : x + size].copy() for y, x in window_tiles(plan, mask, *window)]
    return tiles


def throughput(args, model, tmp: Path) -> None:
    from nucleiflow.slides.stage import read_mask
    from nucleiflow.synthetic.slide import SyntheticSlide, write_synthetic_slide

    slide = write_synthetic_slide(
        tmp / "throughput.ome.tif", SyntheticSlide(width=args.size, height=args.size, mpp=0.25, seed=5)
    )
    warm = model.predict_maps_batch([np.full((args.tile, args.tile, 3), 200, np.uint8)] * args.batch)  # noqa: F841
    in_process = run_stage(slide, tmp / "in_process", model, chunk_size=args.chunk)
    end_to_end = run_stage(slide, tmp / "throughput", model, workers=args.workers, chunk_size=args.chunk)
    plan = end_to_end["plan"]
    tiles = stage_tiles(slide, plan, read_mask(tmp / "throughput" / "tissue_mask.png"))
    started = time.perf_counter()
    for start in range(0, len(tiles), args.batch):
        model.predict_maps_batch(tiles[start : start + args.batch])
    network = time.perf_counter() - started
    megapixels = len(tiles) * args.tile**2 / 1e6
    nuclei = end_to_end["row"]["nuclei"]
    chunks = len(plan["chunks"])
    print(f"throughput slide: {args.size} x {args.size} px at 0.25 um/px, {chunks} chunks, {len(tiles)} tiles")
    print(f"  network alone : {len(tiles) / network:8.2f} images/s {megapixels / network:8.2f} MP/s ({network:.1f} s)")
    for label, run in (("in process", in_process), (f"{args.workers} worker(s)", end_to_end)):
        e2e = run["seconds"]
        print(
            f"  stage, post-processing {label:>11}: {len(tiles) / e2e:8.2f} images/s {megapixels / e2e:8.2f} MP/s "
            f"({e2e:.1f} s end to end: segment {run['summary']['seconds']:.1f} s, gather "
            f"{run['gather_seconds']:.1f} s; {nuclei} nuclei, {nuclei / e2e:.1f} nuclei/s); "
            f"end to end / network alone: {network / e2e:.0%}"
        )


def memory(args, tmp: Path) -> None:
    from nucleiflow.synthetic.slide import SyntheticSlide, write_synthetic_slide

    rows = []
    for side in (10_000, 50_000):
        piece = args.tissue_px / side / 2  # the same tissue piece (absolute size) on both slides
        spec = SyntheticSlide(width=side, height=side, mpp=0.25, seed=9, tissue=((0.5, 0.5, piece, piece),))
        started = time.perf_counter()
        slide = write_synthetic_slide(tmp / f"memory_{side}.ome.tif", spec)
        written = time.perf_counter() - started
        command = [sys.executable, __file__, "--child", str(slide), str(tmp / f"memory_{side}")]
        command += ["--model-dir", str(args.model_dir), "--tta", args.tta, "--device", args.device]
        command += ["--threads", str(args.threads), "--batch", str(args.batch), "--tile", str(args.tile)]
        command += ["--workers", str(args.workers), "--chunk", str(args.chunk)]
        child_run = subprocess.run(command, check=True, capture_output=True, text=True)
        result = json.loads(child_run.stdout.splitlines()[-1])
        rows.append((side, written, result))
        print(
            f"memory slide {side} x {side} px ({slide.stat().st_size / 2**20:.0f} MiB, written in {written:.0f} s): "
            f"peak RSS {result['peak_rss_mib']:.0f} MiB (largest worker {result['worker_rss_mib']:.0f} MiB), "
            f"{result['nuclei']} nuclei, "
            f"{result['seconds']:.1f} s end to end"
        )
    small, large = rows[0][2]["peak_rss_mib"], rows[1][2]["peak_rss_mib"]
    print(f"  peak RSS 50k / 10k: {large / small:.2f} (25x the pixels)")


def child(args) -> None:
    model = load_model(args)
    result = run_stage(Path(args.child[0]), Path(args.child[1]), model, workers=args.workers, chunk_size=args.chunk)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest worker process
    record = {"peak_rss_mib": peak, "worker_rss_mib": worker, "nuclei": result["row"]["nuclei"]}
    print(json.dumps({**record, "seconds": result["seconds"]}))


def cmu(args, model, tmp: Path) -> None:
    if not args.cmu.is_file():
        print(f"cmu: {args.cmu} is absent; skipped")
        return
    result = run_stage(args.cmu, tmp / "cmu", model, workers=args.workers, chunk_size=args.chunk)
    row, plan = result["row"], result["plan"]
    print(
        f"CMU-1-Small-Region.svs: {row['width_px']} x {row['height_px']} px at {row['slide_mpp']} um/px, run at "
        f"{plan['run_mpp']} um/px ({plan['run_size'][0]} x {plan['run_size'][1]}), {result['summary']['tiles']} tiles, "
        f"{row['nuclei']} nuclei, {row['tissue_area_mm2']:.2f} mm2 tissue: {result['seconds']:.1f} s end to end"
    )


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args)
        return
    if not (args.model_dir / "model.pt").is_file():
        sys.exit(f"{args.model_dir}: no model.pt; train the demo's pannuke_hv model first or give --model-dir")
    print(f"model {args.model_dir} (TTA {args.tta}), {args.device}, {args.threads} thread(s), batch {args.batch}")
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        tmp = Path(tmp)
        model = load_model(args) if {"throughput", "cmu"} & set(args.parts) else None
        if "throughput" in args.parts:
            throughput(args, model, tmp)
        if "memory" in args.parts:
            memory(args, tmp)
        if "cmu" in args.parts:
            cmu(args, model, tmp)


if __name__ == "__main__":
    main()
