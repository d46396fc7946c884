"""The `slides.<name>` configuration: its model, run resolution, slide files, and the checks before any job.

Torch-free (the workflow imports it while it builds the DAG); opening a slide to read its resolution
imports OpenSlide or tifffile only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from nucleiflow.config import ModelCell
from nucleiflow.errors import ConfigError, choices_error
from nucleiflow.workflow.cells import dataset_microns_per_pixel, model_package, named_cell

SLIDE_NAME = r"[A-Za-z0-9_.\-]+"  # a slide's name in result paths: its file name without the format suffix


def slide_package(config: dict, name: str) -> str | None:
    """The exported model package (a .zip or a package folder) `slides.<name>.model` names, else None."""
    return model_package(config["slides"][name]["model"])


def slide_cell(config: dict, name: str) -> ModelCell:
    """The model cell that `slides.<name>.model` names (not for a package: `slide_package`)."""
    return named_cell(config, f"slides.{name}.model", config["slides"][name]["model"])


def model_mpp(config: dict, name: str) -> float:
    """The resolution (um/px) slides.<name> runs at: its `mpp`, else the model's training data's.

    A package records its training data's resolution (`config.nucleiflow.microns_per_pixel`); one that the
    workflow has not exported yet is read for it once it exists, so until then `mpp` must be given.
    """
    entry = config["slides"][name]
    if entry.get("mpp"):
        return float(entry["mpp"])
    package = slide_package(config, name)
    if package is not None:
        found = package_mpp(package) if Path(package).exists() else None
        if not found:
            raise ConfigError(
                f"slides.{name}.mpp: the model package {package!r} records no training resolution (or does not "
                f"exist yet); give slides.{name}.mpp, the um per pixel of the images it was trained on"
            )
        return found
    cell = slide_cell(config, name)
    dataset = config["segmentation"][cell.experiment]["dataset"]
    found = dataset_microns_per_pixel(config, dataset)
    if not found:
        raise ConfigError(
            f"slides.{name}.mpp: the model's dataset {dataset!r} records no resolution; set "
            f"datasets.{dataset}.microns_per_pixel (um per pixel of its images) or slides.{name}.mpp"
        )
    return found


def package_mpp(package: str) -> float | None:
    """The training resolution a package records; None when it records none."""
    from nucleiflow.export.load import package_meta

    found = package_meta(package).get("microns_per_pixel")
    return float(found) if found else None


def slide_files(config: dict, name: str, produced_under: str | None = None) -> dict[str, str]:
    """{slide name: path} of slides.<name>.slides (paths and glob patterns, in order), names unique."""
    import glob
    import re

    from nucleiflow.slides.reader import slide_name

    entry = config["slides"][name]["slides"]
    patterns = [entry] if isinstance(entry, str) else list(entry)
    files: dict[str, str] = {}
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise ConfigError(f"slides.{name}.slides: {pattern!r} matches no file")
        else:
            made = produced_under and Path(pattern).as_posix().startswith(produced_under.rstrip("/") + "/")
            if not made and not Path(pattern).is_file():
                raise ConfigError(f"slides.{name}.slides: {pattern!r} does not exist")
            matches = [pattern]
        for path in matches:
            slide = slide_name(path)
            if not re.fullmatch(SLIDE_NAME, slide):
                raise ConfigError(f"slides.{name}.slides: {path!r}: rename it to letters, digits, '_', '.', '-'")
            if slide in files and files[slide] != path:
                raise ConfigError(f"slides.{name}.slides: {files[slide]!r} and {path!r} have the same name {slide!r}")
            files[slide] = path
    return files


def slide_mpp_override(config: dict, name: str, slide: str) -> float | None:
    """`slides.<name>.slide_mpp` for one slide (a number for all, or a per-slide mapping)."""
    value = config["slides"][name].get("slide_mpp")
    if isinstance(value, Mapping):
        return value.get(slide)
    return value


def check_slides(config: dict, produced_under: str | None = None) -> None:
    """Each slides.<name>: its model, its run resolution, and every slide readable with a known resolution.

    Runs before any job: a slide whose metadata record no microns per pixel, and that slide_mpp does not
    give, stops the run here with a line naming it (a job would otherwise fail after its predecessors ran).
    """
    from nucleiflow.errors import DataFormatError
    from nucleiflow.slides.reader import slide_mpp

    for name, entry in config.get("slides", {}).items():
        if slide_package(config, name) is None:
            slide_cell(config, name)
        model_mpp(config, name)
        reference = (entry.get("stain_normalisation") or {}).get("reference")
        if reference and not Path(reference).is_file():
            raise ConfigError(
                f"slides.{name}.stain_normalisation.reference: {reference!r} does not exist "
                "(an RGB H&E image, or null for the default reference)"
            )
        if entry.get("tile_overlap", 0) >= entry.get("tile_size", 256):
            raise ConfigError(f"slides.{name}.tile_overlap: {entry['tile_overlap']} must be below tile_size")
        overrides = entry.get("slide_mpp")
        files = slide_files(config, name, produced_under)
        if isinstance(overrides, Mapping):
            for slide in overrides:
                if slide not in files:
                    raise choices_error(f"slides.{name}.slide_mpp", slide, files)
        for slide, path in files.items():
            if not Path(path).is_file():  # made by the workflow (the demo's slide)
                continue
            try:
                found = slide_mpp(path)
            except DataFormatError as err:
                raise ConfigError(f"slides.{name}.slides: {err}") from None
            if found is None and slide_mpp_override(config, name, slide) is None:
                raise ConfigError(
                    f"slides.{name}.slide_mpp: slide {slide!r} ({path}) records no microns per pixel; "
                    f"give it, e.g. slide_mpp: {{{slide}: 0.25}} (40x) or 0.5 (20x)"
                )
