"""Command line: `python -m nucleiflow.synthetic OUT_DIR [options]` writes the demo archives.

Prints one `<sha256>  <path relative to OUT_DIR>` line per archive (the format
of `sha256sum`, so `cd OUT_DIR && sha256sum -c` can check them later).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nucleiflow.download import sha256sum
from nucleiflow.synthetic import demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m nucleiflow.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", metavar="OUT_DIR", help="directory to write pannuke/, dsb2018/ and nucrec/ into")
    parser.add_argument("--seed", type=int, default=demo.DEFAULT_SEED)
    parser.add_argument("--pannuke-images-per-fold", type=int, default=demo.DEFAULT_PANNUKE_IMAGES_PER_FOLD)
    parser.add_argument("--dsb-images", type=int, default=demo.DEFAULT_DSB_IMAGES)
    parser.add_argument("--nucrec-images-per-class", type=int, default=demo.DEFAULT_NUCREC_IMAGES_PER_CLASS)
    parser.add_argument("--slide", action="store_true", help="also write slides/demo_slide.ome.tif (a whole slide)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    archives = demo.write_demo_archives(
        args.out_dir,
        seed=args.seed,
        pannuke_images_per_fold=args.pannuke_images_per_fold,
        dsb_images=args.dsb_images,
        nucrec_images_per_class=args.nucrec_images_per_class,
    )
    if args.slide:
        archives[f"slides/{demo.DEMO_SLIDE_NAME}"] = demo.write_demo_slide(Path(args.out_dir) / "slides", args.seed)
    for name, path in archives.items():
        print(f"{sha256sum(path)}  {name}")


if __name__ == "__main__":
    main()
