"""The slide stage's three jobs on files: plan, segment (one part of the chunks), gather.

The rules (rules/slides.smk) call these through thin scripts; the tests and the benchmark call them
directly. Paths are the rules' outputs (`nucleiflow.paths`: SLIDE_*).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from nucleiflow.io import read_json, write_json
from nucleiflow.slides.chunks import SlideOptions, make_plan, segment_part
from nucleiflow.slides.outputs import Chunks, write_nuclei
from nucleiflow.slides.overview import read_mask, summary_row, warm_up, write_summary_and_overview
from nucleiflow.slides.reader import Region
from nucleiflow.slides.tissue import TissueSettings

log = logging.getLogger(__name__)


def slide_options(options: dict) -> SlideOptions:
    """SlideOptions from a `slides.<name>` entry's plan settings (run_mpp, tiles, chunk, region, level, tissue,
    stain normalisation)."""
    region = options.get("region")
    return SlideOptions(
        run_mpp=float(options["run_mpp"]),
        tile_size=int(options.get("tile_size", 256)),
        tile_overlap=int(options.get("tile_overlap", 32)),
        chunk_size=int(options.get("chunk_size", 2048)),
        region=Region(**region) if region else None,
        level=options.get("level"),
        tissue=TissueSettings.from_dict(options.get("tissue")),
        stain_normalisation=options.get("stain_normalisation"),
    )


def _write_png(path, array: np.ndarray) -> None:
    from nucleiflow.io import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def plan_slide(slide, options: dict, slide_mpp: float | None, out) -> dict:
    """Write the plan (JSON), tissue mask (PNG 0/255) and thumbnail (PNG) of one slide; return the plan."""
    plan, images = make_plan(slide, slide_options(options), slide_mpp)
    plan["slide_mpp_given"] = slide_mpp
    if not plan["chunks"]:
        log.warning("%s: no tissue found; its outputs will be empty", slide)
    _write_png(out.tissue, (images["mask"] * 255).astype(np.uint8))
    _write_png(out.thumbnail, images["thumbnail"])
    write_json(out.plan, plan)
    return plan


def model_fingerprint(*paths) -> str:
    """A digest of the model's files (checkpoint, tuned settings; every file of a package folder).

    Part of each chunk's key: finished chunks of another model, or of other settings, are redone.
    """
    from nucleiflow.download import sha256sum

    files = []
    for path in (Path(p) for p in paths if p):
        files += sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    return "".join(sha256sum(f)[:12] for f in files)


def segment_slide_part(
    plan_path, mask_path, model, model_files, chunk_dir, part: int, parts: int, out_path, workers: int = 0
) -> dict:
    """Segment chunks `part` of `parts` of a planned slide into `chunk_dir`; write the part summary (JSON).

    `workers`: post-processing worker processes beside the model (`chunks.segment_part`).

    `model_files`: the model's weights (model.pt, or a package's zip or folder), or a list of them with its
    tuned settings; their digest keys the finished chunks (`model_fingerprint`).
    """
    plan = read_json(plan_path)
    files = [model_files] if isinstance(model_files, (str, Path)) else list(model_files)
    key = model_fingerprint(*files) + "/" + getattr(model, "settings", f"tile{model.tile_size}")
    summary = segment_part(
        plan,
        read_mask(mask_path),
        model,
        chunk_dir,
        part=part,
        parts=parts,
        model_fingerprint=key,
        slide_mpp=plan.get("slide_mpp_given"),
        progress=lambda chunk, n: log.info("chunk %d: %d nuclei", chunk["index"], n),
        workers=workers,
    )
    summary["type_names"] = list(model.type_names)
    write_json(out_path, summary)
    return summary


def gather_slide(plan_path, mask_path, thumbnail_path, part_paths, chunk_dir, out, name: str = "") -> dict:
    """Every output of one slide from its parts' chunks; returns its summary row.

    The summary table and overview figure are written by a second process (`nucleiflow.slides.overview`),
    started first so that its imports overlap the reading of the chunks, and its drawing the writing of
    the GeoJSON, table and label pyramid (`outputs.write_nuclei`): the gather is the serial tail of a
    slide, after its last chunk.
    """
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    plan = read_json(plan_path)
    parts = [read_json(p) for p in part_paths]
    keys = {p["fingerprint"] for p in parts}
    if len(keys) != 1:
        from nucleiflow.errors import DataFormatError

        raise DataFormatError(f"{chunk_dir}: the parts were segmented with different plans or models; rerun them")
    type_names = parts[0].get("type_names", []) if parts else []
    # Forked, as the segment step's workers are: a spawned child would re-run the Snakemake script's
    # top level. The child only draws and writes tables: it never calls torch, whose thread pools a
    # fork does not copy.
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("fork")) as side:
        side.submit(warm_up)
        chunks = Chunks(plan, chunk_dir, keys.pop(), type_names)
        row = summary_row(plan, chunks.n_nuclei, chunks.type_counts, type_names, parts, name)
        title = f"{Path(plan['slide']).name}: {row['nuclei']} nuclei"
        if row["note"]:
            title += f" ({row['note']})"
        overview = side.submit(
            write_summary_and_overview,
            row,
            out.table,
            out.figure,
            thumbnail_path,
            mask_path,
            chunks.points,
            plan,
            title,
        )
        write_nuclei(chunks, {"geojson": out.geojson, "table": out.nuclei, "labels": out.labels}, type_names)
        overview.result()
    return row
