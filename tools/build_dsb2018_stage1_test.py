"""Build a stage-1 test release (``stage1_test.zip`` + ``stage1_solution.csv``) from the shared sample.

The official DSB2018 stage-1 test release is an archive of ``<id>/images/<id>.png`` (no masks) and a
separate run-length encoded solution file (``ImageId,EncodedPixels,Height,Width,Usage``). The shared
data holds 45 of its 65 images, each with its decoded masks, and the solution rows of exactly those 45
images. This script re-packs them in the official layout, so that a configuration can point its
``source:`` entries at them, as a user holding the real files would:

    .venv/bin/python tools/build_dsb2018_stage1_test.py --out /work/scratch/me/dsb2018

Only the images go into the archive (the masks stay out, as in the official release); the solution
rows are copied as they are. Both files are written atomically; the SHA-256 of each is printed for the
configuration's ``sha256:``.
"""

from __future__ import annotations

import argparse
import shutil
import zipfile
from pathlib import Path

from nucleiflow.download import sha256sum
from nucleiflow.io import atomic_path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# A fixed timestamp makes the archive byte-identical from run to run (a stable SHA-256 to pin).
ZIP_DATE = (2018, 4, 11, 0, 0, 0)


def build(sample_dir: Path, solution: Path, out_dir: Path) -> dict[str, Path]:
    """Write ``stage1_test.zip`` and ``stage1_solution.csv`` under `out_dir`; returns their paths."""
    images = sorted(sample_dir.glob("*/images/*.png"))
    if not images:
        raise SystemExit(f"{sample_dir}: no <id>/images/<id>.png files")
    out_dir.mkdir(parents=True, exist_ok=True)
    archive, csv = out_dir / "stage1_test.zip", out_dir / "stage1_solution.csv"
    with atomic_path(archive) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for image in images:
            image_id = image.parent.parent.name
            for folder in (f"{image_id}/", f"{image_id}/images/"):
                zf.writestr(zipfile.ZipInfo(folder, ZIP_DATE), b"")
            zf.writestr(zipfile.ZipInfo(f"{image_id}/images/{image.name}", ZIP_DATE), image.read_bytes())
    with atomic_path(csv) as tmp:
        shutil.copyfile(solution, tmp)
    return {"stage1_test.zip": archive, "stage1_solution.csv": csv}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, default=SHARED_DATA / "dsb2018_stage1_test_sample")
    parser.add_argument("--solution", type=Path, default=SHARED_DATA / "dsb2018_stage1_solution_sample.csv")
    parser.add_argument("--out", type=Path, required=True, help="scratch folder (never the repository)")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    for name, path in build(args.samples, args.solution, args.out).items():
        print(f"{name}: {path} sha256 {sha256sum(path)}")


if __name__ == "__main__":
    main()
