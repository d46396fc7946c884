"""Images annotated in QuPath: `images/` + one GeoJSON export per image -> store.

Layout: ``images/<stem>.<png|tif|tiff|jpg>`` and ``annotations/<stem>.geojson``
(or ``.json``), the root optionally wrapped in one folder; each annotation file
is what QuPath's "Export objects as GeoJSON" writes for that image (a
FeatureCollection or a list of Features; annotations, detections or cells;
`nucleiflow.geojson` reads them). One Feature is one nucleus; its
``classification.name`` is its type.

Types: the dataset config's `classes` name them (class ids 1, 2, ... in that
order), and a nucleus of another name is a one-line error naming the file and
the feature. Without `classes`, the classification names found across all
files, sorted, are the classes. Unclassified nuclei have type 0. When no file
classifies any nucleus the store is binary (no class map).

Rasterising follows `nucleiflow.polygons` (pixel centres inside the outline;
degenerate outlines skipped; overlaps to the smaller nucleus; outlines crossing
the border clipped), each counted per image and in the summary. An image
without an annotation file is stored unlabelled (prediction only), as in
`image_folders`; an annotation without an image, an unreadable file, or an
outline wholly outside its image stops the conversion, and no store is left.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tqdm import tqdm

from nucleiflow.datasets.dsb2018 import modality_hint
from nucleiflow.datasets.hovernet_mat import read_any_image
from nucleiflow.errors import DataFormatError
from nucleiflow.geojson import class_name, features_to_instances, read_features
from nucleiflow.image_keys import content_hash, modality_features
from nucleiflow.polygons import relabel
from nucleiflow.store import BINARY_CLASS_NAMES, StoreWriter

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
ANNOTATION_SUFFIXES = (".geojson", ".json")
IMAGES, ANNOTATIONS = "images", "annotations"
COUNTED = ("drawn", "degenerate", "empty", "clipped", "overlapped", "covered", "overlap_pixels", "not_areas")


def layout_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"{root}: not a folder (expected {IMAGES}/ and {ANNOTATIONS}/<stem>.geojson)")
    if (root / IMAGES).is_dir():
        return root
    children = [p for p in sorted(root.iterdir()) if p.is_dir() and (p / IMAGES).is_dir()]
    if len(children) == 1:
        return children[0]
    raise DataFormatError(f"{root}: no {IMAGES}/ folder (expected {IMAGES}/ and {ANNOTATIONS}/<stem>.geojson)")


def find_pairs(root: str | Path) -> list[tuple[str, Path, Path | None]]:
    """(stem, image, annotation file or None) of every image, sorted by stem."""
    root = layout_root(root)
    images = {p.stem: p for p in (root / IMAGES).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    if not images:
        raise DataFormatError(f"{root / IMAGES}: holds no image (valid: {', '.join(IMAGE_SUFFIXES)} files)")
    found: dict[str, Path] = {}
    if (root / ANNOTATIONS).is_dir():
        for path in sorted((root / ANNOTATIONS).iterdir()):
            if path.suffix.lower() not in ANNOTATION_SUFFIXES:
                continue
            if path.stem in found:
                raise DataFormatError(f"{path}: two annotation files for {path.stem!r} ({found[path.stem].name})")
            found[path.stem] = path
    for stem in sorted(set(found) - set(images)):
        raise DataFormatError(f"{found[stem]}: annotation without an image (no {IMAGES}/{stem}.* file)")
    return [(stem, images[stem], found.get(stem)) for stem in sorted(images)]


def dataset_classes(pairs, class_names=None) -> list[str]:
    """The type names, class 1 first: the config's, or every classification name in the files, sorted."""
    if class_names:
        return list(class_names)
    names = {class_name(f) for _, _, path in pairs if path is not None for f in read_features(path)}
    return sorted(n for n in names if n is not None)


def convert_geojson(roots: list[str | Path], out_path: str | Path, class_names=None, progress: bool = True) -> dict:
    """Convert QuPath-annotated image folders (layout above) into one store, atomically; returns a summary."""
    pairs = [pair for root in roots for pair in find_pairs(root)]
    names = dataset_classes(pairs, class_names)
    class_ids = {name: i for i, name in enumerate(names, start=1)}
    summary: dict = {"images": len(pairs), "labelled": 0, "unlabelled": 0, "nuclei": 0, **dict.fromkeys(COUNTED, 0)}
    summary["classes"] = names
    typed = bool(names)
    with StoreWriter(out_path, "geojson", ["background", *names] if typed else BINARY_CLASS_NAMES) as writer:
        for stem, image_path, annotation in tqdm(pairs, desc="GeoJSON", unit="img", disable=not progress):
            image, meta = read_any_image(image_path)
            meta.update(
                source_file=image_path.name,
                annotation_file=annotation.name if annotation else None,
                labelled=annotation is not None,
                modality_hint=modality_hint(image),
                content_hash=content_hash(image),
                **modality_features(image),
            )
            if annotation is None:
                writer.add(stem, image, None, **meta)
                summary["unlabelled"] += 1
                continue
            nuclei = features_to_instances(read_features(annotation), image.shape[:2], class_ids, where=str(annotation))
            counts = nuclei.summary()
            instances = relabel(nuclei.instances)
            writer.add(
                stem,
                image,
                instances,
                nuclei.classes if typed else None,
                **{f"n_{key}": counts[key] for key in COUNTED},
                **meta,
            )
            summary["labelled"] += 1
            summary["nuclei"] += int(instances.max(initial=0))
            for key in COUNTED:
                summary[key] += counts[key]
    log.info("GeoJSON: %s", summary)
    return summary
