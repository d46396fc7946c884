"""MoNuSeg (Kumar et al. 2017/2019) release: `Tissue Images/*.tif` + `Annotations/*.xml` (Aperio ImageScope) -> store.

Layout: a folder (or one wrapping folder level) holding ``Tissue Images/<id>.tif``
(1000 x 1000 RGB, 40x) and ``Annotations/<id>.xml``, the release's own names
(`IMAGE_FOLDERS`, `ANNOTATION_FOLDERS` also accept the lower-case ``images/``
and ``annotations/`` that re-packed copies use). An ImageScope XML holds one
``<Region>`` per nucleus, its ``<Vertices>/<Vertex X= Y=>`` the outline in
pixels of the image; ``<Annotations MicronsPerPixel=...>`` is the scan's
resolution, recorded per image as `microns_per_pixel` (null where a file lacks
it) and summarised as the dataset's resolution.

Outlines are rasterised at the image's size by `nucleiflow.polygons.rasterise`:
a pixel belongs to a nucleus when its centre lies inside the outline; a
degenerate region (fewer than three distinct vertices, or no area) is skipped;
where outlines overlap the pixel goes to the smaller nucleus; a region crossing
the image border is clipped. Each image's metadata and the conversion summary
count degenerate, empty, clipped and overlapping regions; the log names every
skipped region by file and Region Id.

Bad input (an image without an annotation or the reverse, an XML that does not
parse or has no ``<Region>``, a vertex without numeric X/Y, a region wholly
outside its image) stops the conversion with one line naming the file and the
element; no store is left.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nucleiflow.datasets.dsb2018 import modality_hint
from nucleiflow.datasets.hovernet_mat import read_any_image
from nucleiflow.errors import DataFormatError
from nucleiflow.image_keys import content_hash, modality_features
from nucleiflow.polygons import is_degenerate, outside_image, rasterise, relabel
from nucleiflow.store import BINARY_CLASS_NAMES, StoreWriter

log = logging.getLogger(__name__)

IMAGE_FOLDERS = ("Tissue Images", "images")
ANNOTATION_FOLDERS = ("Annotations", "annotations")
IMAGE_SUFFIXES = (".tif", ".tiff", ".png")
COUNTED = ("regions", "drawn", "degenerate", "empty", "clipped", "overlapped", "covered", "overlap_pixels")


def _child(root: Path, names) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


def layout_root(root: str | Path) -> Path:
    """The folder holding `Tissue Images/` and `Annotations/`: `root` or its single wrapping subfolder."""
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"{root}: not a folder (expected 'Tissue Images/' and 'Annotations/', MoNuSeg's layout)")
    if _child(root, IMAGE_FOLDERS):
        return root
    children = [p for p in sorted(root.iterdir()) if p.is_dir() and _child(p, IMAGE_FOLDERS)]
    if len(children) == 1:
        return children[0]
    raise DataFormatError(f"{root}: no 'Tissue Images/' folder (expected 'Tissue Images/' and 'Annotations/*.xml')")


def find_pairs(root: str | Path) -> list[tuple[str, Path, Path]]:
    """(id, image, XML) of every image, sorted; an image without an annotation or the reverse is an error."""
    root = layout_root(root)
    image_dir, xml_dir = _child(root, IMAGE_FOLDERS), _child(root, ANNOTATION_FOLDERS)
    if image_dir is None:
        raise DataFormatError(f"{root / IMAGE_FOLDERS[0]}: missing (expected the tissue images, <id>.tif)")
    if xml_dir is None:
        raise DataFormatError(f"{root / ANNOTATION_FOLDERS[0]}: missing (expected one <id>.xml per tissue image)")
    images = {p.stem: p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    xmls = {p.stem: p for p in xml_dir.iterdir() if p.suffix.lower() == ".xml"}
    if not images:
        raise DataFormatError(f"{image_dir}: holds no image (valid: {', '.join(IMAGE_SUFFIXES)} files)")
    for stem in sorted(set(images) - set(xmls)):
        raise DataFormatError(f"{images[stem]}: image without an annotation ({xml_dir.name}/{stem}.xml missing)")
    for stem in sorted(set(xmls) - set(images)):
        raise DataFormatError(f"{xmls[stem]}: annotation without an image (no {image_dir.name}/{stem}.tif)")
    return [(stem, images[stem], xmls[stem]) for stem in sorted(images)]


def read_regions(path: Path) -> tuple[list[tuple[str, np.ndarray]], float | None]:
    """([(Region Id, (N, 2) x, y vertices)], MicronsPerPixel or None) of one ImageScope XML."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as err:
        raise DataFormatError(f"{path}: not a readable ImageScope XML ({type(err).__name__}: {err})") from None
    regions = root.findall(".//Region")
    if not regions:
        raise DataFormatError(f"{path}: no <Region> element (expected one <Region> with <Vertices> per nucleus)")
    out = []
    for position, region in enumerate(regions):
        region_id = region.get("Id", f"#{position}")
        try:
            vertices = [(float(v.attrib["X"]), float(v.attrib["Y"])) for v in region.iter("Vertex")]
        except (KeyError, ValueError):
            raise DataFormatError(f"{path}: <Region Id={region_id!r}> has a <Vertex> without numeric X and Y") from None
        array = np.asarray(vertices, dtype=np.float64).reshape(-1, 2)
        if not np.isfinite(array).all():
            raise DataFormatError(f"{path}: <Region Id={region_id!r}> has non-finite vertex coordinates")
        out.append((region_id, array))
    mpp = root.get("MicronsPerPixel")
    try:
        resolution = float(mpp) if mpp not in (None, "") else None
    except ValueError:
        raise DataFormatError(f"{path}: <Annotations MicronsPerPixel={mpp!r}> is not a number") from None
    return out, resolution


def annotation_instances(path: Path, shape: tuple[int, int]) -> tuple[np.ndarray, dict]:
    """(int32 instance map 1..n, counts) of one XML rasterised at `shape` (module docstring for the rules)."""
    regions, resolution = read_regions(path)
    for region_id, vertices in regions:
        if is_degenerate(vertices):
            log.info("%s: <Region Id=%s> is degenerate (%d vertices): skipped", path.name, region_id, len(vertices))
        elif outside_image(vertices, shape):
            lo, hi = vertices.min(axis=0), vertices.max(axis=0)
            raise DataFormatError(
                f"{path}: <Region Id={region_id!r}> lies outside the image (x {lo[0]:g}..{hi[0]:g}, "
                f"y {lo[1]:g}..{hi[1]:g}; image {shape[1]} x {shape[0]} px)"
            )
    instances, stats = rasterise([vertices for _, vertices in regions], shape)
    counts = {"regions": len(regions), **{k: v for k, v in stats.as_dict().items() if k != "polygons"}}
    return relabel(instances), {**counts, "microns_per_pixel": resolution}


def convert_monuseg(roots: list[str | Path], out_path: str | Path, progress: bool = True) -> dict:
    """Convert MoNuSeg folders (layout above) into one store, atomically; returns a summary with the counts."""
    pairs = [pair for root in roots for pair in find_pairs(root)]
    summary: dict = {"images": len(pairs), "nuclei": 0, **dict.fromkeys(COUNTED, 0), "microns_per_pixel": {}}
    with StoreWriter(out_path, "monuseg", BINARY_CLASS_NAMES) as writer:
        for image_id, image_path, xml_path in tqdm(pairs, desc="MoNuSeg", unit="img", disable=not progress):
            image, meta = read_any_image(image_path)
            instances, counts = annotation_instances(xml_path, image.shape[:2])
            n_nuclei = int(instances.max(initial=0))
            writer.add(
                image_id,
                image,
                instances,
                source_file=image_path.name,
                annotation_file=xml_path.name,
                labelled=True,
                modality_hint=modality_hint(image),
                content_hash=content_hash(image),
                microns_per_pixel=counts["microns_per_pixel"],
                **{f"n_{key}": counts[key] for key in COUNTED},  # n_overlap_pixels as every converter records it
                **meta,
                **modality_features(image),
            )
            summary["nuclei"] += n_nuclei
            for key in COUNTED:
                summary[key] += counts[key]
            key = "null" if counts["microns_per_pixel"] is None else f"{counts['microns_per_pixel']:g}"
            summary["microns_per_pixel"][key] = summary["microns_per_pixel"].get(key, 0) + 1
    log.info("MoNuSeg: %s", summary)
    return summary
