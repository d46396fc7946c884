"""Benchmark: PanNuke fold conversion, streaming converter vs whole-array load.

Builds a synthetic fold of real size on disk (default 2,656 images, ~12.5 GB
of float64 like a real fold), slice by slice through `np.lib.format.open_memmap`
so building it needs little memory either, then converts it once per method,
each in a fresh child process so the peak resident memory (ru_maxrss) of one
method cannot leak into another's:

* ``stream``: `nucleiflow.datasets.pannuke.convert_pannuke` (one image per read)
* ``naive``:  `np.load` of the whole arrays (no memory map), then the same
  per-image validate / merge / write loop

Prints one row per method: images, seconds, images/s, the child's RSS after
imports, its peak RSS during the conversion (the peak mark is reset after the
imports), the growth between the two, and the child's ru_maxrss over its whole
life (imports included). Run from the repository root:

    .venv/bin/python benchmarks/bench_pannuke_convert.py --images 512
    .venv/bin/python benchmarks/bench_pannuke_convert.py            # full 2,656-image fold
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from nucleiflow.synthetic.pannuke import BACKGROUND_CHANNEL, IMAGE_SIZE, make_sample, member_names

FULL_FOLD_IMAGES = 2656  # fold 1 of the release
BYTES_PER_IMAGE = IMAGE_SIZE * IMAGE_SIZE * (3 + BACKGROUND_CHANNEL + 1) * 8  # images + masks, float64
WRITE_CHUNK = 32  # images per re-opened memory map while building
GIB = 1024**3


# ---------------------------------------------------------------- building the fold


def write_synthetic_fold(
    root: str | os.PathLike, fold: int, n_images: int, seed: int = 0, chunk: int = WRITE_CHUNK
) -> Path:
    """Write an unpacked `fold_N.zip` layout with `n_images` synthetic images under `root`; return `root`.

    Arrays are created with `open_memmap` and filled `chunk` images at a time
    through a freshly opened map, so at most one chunk is ever resident.
    """
    root = Path(root)
    names = member_names(fold)
    paths = {key: root / name for key, name in names.items()}
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    shapes = {
        "images": (n_images, IMAGE_SIZE, IMAGE_SIZE, 3),
        "masks": (n_images, IMAGE_SIZE, IMAGE_SIZE, BACKGROUND_CHANNEL + 1),
    }
    for key, shape in shapes.items():
        created = np.lib.format.open_memmap(paths[key], mode="w+", dtype=np.float64, shape=shape)
        del created  # the header is written and the file sized; the data follow chunk by chunk
    tissues = []
    children = np.random.default_rng([seed, fold]).spawn(n_images)
    for start in range(0, n_images, chunk):
        stop = min(start + chunk, n_images)
        images = np.lib.format.open_memmap(paths["images"], mode="r+")
        masks = np.lib.format.open_memmap(paths["masks"], mode="r+")
        for index in range(start, stop):
            images[index], masks[index], tissue = make_sample(children[index])
            tissues.append(tissue)
        images.flush()
        masks.flush()
        del images, masks  # unmap: the written pages leave this process
    np.save(paths["types"], np.array(tissues, dtype=str))
    for key in ("images", "masks"):
        evict_from_page_cache(paths[key])
    return root


def evict_from_page_cache(path: Path) -> None:
    """Flush `path` and ask the kernel to drop its cached pages, so the next read comes from disk."""
    if not hasattr(os, "posix_fadvise"):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- the two methods


def convert_stream(root: Path, out: Path) -> int:
    from nucleiflow.datasets.pannuke import convert_pannuke

    return convert_pannuke([root], out, progress=False)["images"]


def convert_naive(root: Path, out: Path, fold: int = 1) -> int:
    """Whole arrays in memory (np.load without mmap), then the converter's per-image steps."""
    from nucleiflow.datasets.pannuke import CLASS_NAMES, fold_files, image_to_uint8, merge_instances
    from nucleiflow.image_keys import content_hash, modality_features
    from nucleiflow.store import StoreWriter

    files = fold_files(root, fold)
    images, masks, types = (np.load(files[key]) for key in ("images", "masks", "types"))
    with StoreWriter(out, "pannuke", CLASS_NAMES) as writer:
        for index in range(len(images)):
            image = image_to_uint8(images[index], f"fold {fold} image {index}")
            instances, classes, overlap = merge_instances(masks[index], f"fold {fold} image {index}")
            writer.add(
                f"fold{fold}_{index:04d}",
                image,
                instances,
                classes,
                tissue=str(types[index]),
                fold=fold,
                source_index=index,
                content_hash=content_hash(image),
                n_overlap_pixels=overlap,
                **modality_features(image),
            )
    return len(images)


METHODS = {"stream": convert_stream, "naive": convert_naive}


def _status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS: now, VmHWM: peak) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def _reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark (Linux >= 4.0), so the peak is the conversion's, not the imports'."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(method: str, root: str, out: str) -> dict:
    """Run one method (in a child process): wall time, RSS before, peak RSS during, and ru_maxrss of the child."""
    import h5py  # noqa: F401  - import everything first, so the libraries are in the baseline

    import nucleiflow.datasets.pannuke  # noqa: F401

    reset = _reset_peak_rss()
    baseline = _status_mib("VmRSS")
    start = time.perf_counter()
    images = METHODS[method](Path(root), Path(out))
    seconds = time.perf_counter() - start
    child_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    peak = _status_mib("VmHWM") if reset else child_max
    return {
        "method": method,
        "images": images,
        "seconds": seconds,
        "baseline_mib": baseline,
        "peak_mib": peak,
        "growth_mib": peak - baseline,
        "ru_maxrss_mib": child_max,
    }


def measure_in_child(method: str, root: Path, out: Path) -> dict:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(measure, method, str(root), str(out)).result()


# ---------------------------------------------------------------- command line


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images", type=int, default=FULL_FOLD_IMAGES, help="images in the synthetic fold (default: %(default)s)"
    )
    parser.add_argument(
        "--tmp", default=None, help="folder for the fold and stores (default: a new folder in the system temp dir)"
    )
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=["stream", "naive"])
    parser.add_argument(
        "--naive-max-gib",
        type=float,
        default=8.0,
        help="skip the naive method for larger folds: it loads the whole fold (default: %(default)s)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the fold and stores")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="bench_pannuke_", dir=args.tmp))
    fold_gib = args.images * BYTES_PER_IMAGE / GIB
    free_gib = shutil.disk_usage(base).free / GIB
    if fold_gib * 1.1 + 1 > free_gib:
        sys.exit(f"{base}: the fold needs {fold_gib:.1f} GiB on disk, only {free_gib:.1f} GiB free")
    try:
        start = time.perf_counter()
        root = write_synthetic_fold(base / "unpacked", 1, args.images)
        print(
            f"built a {args.images}-image fold ({fold_gib:.2f} GiB of float64) "
            f"in {time.perf_counter() - start:.0f} s at {root}"
        )
        rows = []
        for method in args.methods:
            if method == "naive" and fold_gib > args.naive_max_gib:
                print(f"naive: skipped, it would load {fold_gib:.1f} GiB (> --naive-max-gib {args.naive_max_gib:g})")
                continue
            for name in ("images", "masks"):
                evict_from_page_cache(root / member_names(1)[name])  # every method starts from disk
            rows.append(measure_in_child(method, root, base / f"store_{method}.h5"))
        print_table(rows, fold_gib)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


def print_table(rows: list[dict], fold_gib: float) -> None:
    print(f"\nfold: {fold_gib:.2f} GiB float64 on disk")
    header = (
        "method",
        "images",
        "seconds",
        "images/s",
        "RSS before MiB",
        "peak RSS MiB",
        "growth MiB",
        "ru_maxrss MiB",
    )
    print(f"{header[0]:<8}" + "".join(f"{h:>15}" for h in header[1:]))
    for r in rows:
        values = (
            r["images"],
            f"{r['seconds']:.1f}",
            f"{r['images'] / r['seconds']:.1f}",
            f"{r['baseline_mib']:.0f}",
            f"{r['peak_mib']:.0f}",
            f"{r['growth_mib']:.0f}",
            f"{r['ru_maxrss_mib']:.0f}",
        )
        print(f"{r['method']:<8}" + "".join(f"{v:>15}" for v in values))


if __name__ == "__main__":
    main()
