"""H&E annotation formats -> store: HoVer-Net .mat (CoNSeP), MoNuSeg ImageScope XML, QuPath GeoJSON.

Each format on a synthetic twin of its release layout (rules, counts, bad input), then on small subsets of the
real shared data (marker shared_data; skipped when ../shared/data is absent). NUCLEIFLOW_SHARED_DATA points the
real-data tests at another copy of the shared data folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import tifffile
import yaml
from conftest import SHARED_DATA, assert_store_fails_cleanly, dry_run, link_shared_data, touching_discs
from PIL import Image

from nucleiflow.datasets.geojson_folders import convert_geojson
from nucleiflow.datasets.hovernet_mat import CONSEP_CLASSES, convert_hovernet_mat, source_image
from nucleiflow.datasets.monuseg import convert_monuseg
from nucleiflow.geojson import label_features, write_feature_collection
from nucleiflow.splits import make_split
from nucleiflow.store import Store

CONSEP = SHARED_DATA / "consep_train_patches" / "Train"
MONUSEG = SHARED_DATA / "monuseg_2018_training_sample"


def _rgb(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (*shape, 3), dtype=np.uint8)


# ---------------------------------------------------------------- HoVer-Net .mat


def _write_mat_patch(root: Path, name: str, labels: np.ndarray, types, suffix=".jpg", **extra) -> None:
    (root / "Images").mkdir(parents=True, exist_ok=True)
    (root / "Labels").mkdir(parents=True, exist_ok=True)
    Image.fromarray(_rgb(labels.shape)).save(root / "Images" / f"{name}{suffix}")
    fields = {"inst_map": labels.astype(np.int32), "inst_type": np.asarray(types, float).reshape(-1, 1), **extra}
    scipy.io.savemat(root / "Labels" / f"{name}.mat", fields)


def test_hovernet_mat_instances_types_and_source_images(tmp_path):
    labels = touching_discs([(10, 10), (10, 20), (40, 40)], [5, 5, 8])
    for name in ("train_1_000", "train_1_001", "train_2_000"):
        _write_mat_patch(tmp_path / "Train", name, labels, [2, 3, 4])
    summary = convert_hovernet_mat([tmp_path], tmp_path / "store.h5", progress=False)
    assert summary["images"] == 3 and summary["source_images"] == 2 and summary["nuclei"] == 9
    assert summary["nuclei_per_class"] == {"other": 0, "inflammatory": 3, "epithelial": 3, "spindle-shaped": 3}
    store = Store(tmp_path / "store.h5")
    assert store.class_names == ["background", *CONSEP_CLASSES]
    sample = store["train_1_001"]
    assert np.array_equal(sample.instances, labels)
    assert np.array_equal(sample.classes, np.choose(labels, [0, 2, 3, 4]))
    assert list(store.metadata["source_image"]) == ["train_1", "train_1", "train_2"]
    assert source_image("train_12_015") == "train_12" and source_image("image") == "image"


def test_hovernet_mat_config_class_names(tmp_path):
    labels = touching_discs([(10, 10)], [5])
    _write_mat_patch(tmp_path, "a", labels, [2], suffix=".png")
    convert_hovernet_mat([tmp_path], tmp_path / "store.h5", class_names=["tumour", "stroma"], progress=False)
    assert Store(tmp_path / "store.h5").class_names == ["background", "tumour", "stroma"]


@pytest.mark.parametrize(
    "damage, pattern",
    [
        ("no_label", r"Images/b\.jpg: image without a label file \(Labels/b\.mat missing\)"),
        ("no_image", r"Labels/c\.mat: label file without an image"),
        ("no_inst_map", r"Labels/b\.mat: no inst_map in the \.mat file"),
        ("wrong_size", r"Labels/b\.mat: inst_map size \(32, 32\) differs from image size \(64, 64\)"),
        ("bad_type", r"Labels/b\.mat: nucleus 1 has type 7; the dataset's classes name types 1\.\.4"),
    ],
)
def test_hovernet_mat_bad_input_names_the_file(tmp_path, damage, pattern):
    labels = touching_discs([(10, 10)], [5])
    _write_mat_patch(tmp_path, "a", labels, [1])
    _write_mat_patch(tmp_path, "b", labels, [7 if damage == "bad_type" else 1])
    if damage == "no_label":
        (tmp_path / "Labels" / "b.mat").unlink()
    elif damage == "no_image":
        scipy.io.savemat(tmp_path / "Labels" / "c.mat", {"inst_map": labels})
    elif damage == "no_inst_map":
        scipy.io.savemat(tmp_path / "Labels" / "b.mat", {"type_map": labels})
    elif damage == "wrong_size":
        scipy.io.savemat(tmp_path / "Labels" / "b.mat", {"inst_map": labels[:32, :32], "inst_type": [[1]]})
    assert_store_fails_cleanly(convert_hovernet_mat, [tmp_path], tmp_path / "store.h5", pattern)


# ---------------------------------------------------------------- MoNuSeg ImageScope XML


def _region(region_id, vertices) -> str:
    points = "".join(f'<Vertex X="{x}" Y="{y}"/>' for x, y in vertices)
    return f'<Region Id="{region_id}"><Attributes/><Vertices>{points}</Vertices></Region>'


def _write_monuseg(root: Path, stem: str, regions: list[str], mpp: str | None = "0.252700", shape=(40, 40)) -> None:
    (root / "Tissue Images").mkdir(parents=True, exist_ok=True)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(root / "Tissue Images" / f"{stem}.tif", _rgb(shape))
    header = f' MicronsPerPixel="{mpp}"' if mpp else ""
    (root / "Annotations" / f"{stem}.xml").write_text(
        f'<Annotations{header}><Annotation Id="1"><Regions>{"".join(regions)}</Regions></Annotation></Annotations>'
    )


SQUARE = [(2, 2), (12, 2), (12, 12), (2, 12)]  # 100 pixels
INNER = [(8, 8), (11, 8), (11, 11), (8, 11)]  # 9 pixels, inside SQUARE
BORDER = [(30, 30), (42, 30), (42, 42), (30, 42)]  # crosses the 40 x 40 image's corner: 100 pixels inside
LINE = [(20, 20), (25, 25)]  # degenerate: two vertices


def test_monuseg_rules_are_applied_and_counted(tmp_path):
    _write_monuseg(tmp_path / "MoNuSeg", "TCGA-A", [_region(1, SQUARE), _region(2, LINE), _region(3, INNER)])
    _write_monuseg(tmp_path / "MoNuSeg", "TCGA-B", [_region(1, BORDER)], mpp=None)
    summary = convert_monuseg([tmp_path], tmp_path / "store.h5", progress=False)
    assert (summary["images"], summary["regions"], summary["nuclei"]) == (2, 4, 3)
    assert (summary["degenerate"], summary["clipped"], summary["overlapped"], summary["overlap_pixels"]) == (1, 1, 1, 9)
    assert summary["microns_per_pixel"] == {"0.2527": 1, "null": 1}
    store = Store(tmp_path / "store.h5")
    a = store["TCGA-A"].instances
    assert sorted(np.unique(a, return_counts=True)[1][1:]) == [9, 91]  # the inner nucleus keeps its pixels
    assert np.count_nonzero(store["TCGA-B"].instances) == 100
    meta = store.metadata.set_index("image_id")
    assert meta.loc["TCGA-A", "microns_per_pixel"] == pytest.approx(0.2527)
    assert meta.loc["TCGA-A", "n_degenerate"] == 1 and meta.loc["TCGA-A", "n_overlap_pixels"] == 9


@pytest.mark.parametrize(
    "regions, pattern",
    [
        ("", r"Annotations/TCGA-A\.xml: no <Region> element"),
        (_region(5, [(50, 50), (60, 50), (60, 60)]), r"TCGA-A\.xml: <Region Id='5'> lies outside the image"),
        ('<Region Id="6"><Vertices><Vertex X="1"/></Vertices></Region>', r"<Region Id='6'> has a <Vertex> without"),
        ("<Region", r"TCGA-A\.xml: not a readable ImageScope XML"),
    ],
)
def test_monuseg_bad_xml_names_the_file_and_region(tmp_path, regions, pattern):
    _write_monuseg(tmp_path, "TCGA-A", [regions])
    assert_store_fails_cleanly(convert_monuseg, [tmp_path], tmp_path / "store.h5", pattern)


def test_monuseg_image_without_annotation(tmp_path):
    _write_monuseg(tmp_path, "TCGA-A", [_region(1, SQUARE)])
    tifffile.imwrite(tmp_path / "Tissue Images" / "TCGA-C.tif", _rgb((40, 40)))
    pattern = r"TCGA-C\.tif: image without an annotation \(Annotations/TCGA-C\.xml missing\)"
    assert_store_fails_cleanly(convert_monuseg, [tmp_path], tmp_path / "store.h5", pattern)


# ---------------------------------------------------------------- QuPath GeoJSON exports


def _write_qupath(root: Path, stem: str, labels, types=None, names=None) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    Image.fromarray(_rgb(labels.shape)).save(root / "images" / f"{stem}.png")
    features = label_features(labels, types=types, class_names=names, object_type="annotation")
    write_feature_collection(root / "annotations" / f"{stem}.geojson", features)


def test_geojson_export_converts_to_the_same_instances_and_types(tmp_path):
    labels = touching_discs([(10, 10), (10, 19), (40, 40)], [6, 5, 8])
    names = ["background", "Tumor", "Immune cells"]
    _write_qupath(tmp_path, "slide_a", labels, {1: 2, 2: 1, 3: 0}, names)
    Image.fromarray(_rgb((64, 64))).save(tmp_path / "images" / "slide_b.png")  # not annotated: prediction only
    summary = convert_geojson([tmp_path], tmp_path / "store.h5", progress=False)
    assert summary["classes"] == ["Immune cells", "Tumor"]  # found in the files, sorted
    assert (summary["labelled"], summary["unlabelled"], summary["nuclei"]) == (1, 1, 3)
    store = Store(tmp_path / "store.h5")
    assert store.class_names == ["background", "Immune cells", "Tumor"]
    assert store.labelled_ids == ["slide_a"]
    sample = store["slide_a"]
    assert np.array_equal(sample.instances, labels)
    assert np.array_equal(sample.classes, np.choose(labels, [0, 1, 2, 0]))


def test_geojson_bad_input(tmp_path):
    labels = touching_discs([(10, 10)], [6])
    _write_qupath(tmp_path, "a", labels, {1: 1}, ["background", "Tumor"])
    pattern = r"a\.geojson: features\[0\] .*classification 'Tumor' is not a class of the dataset; classes: Stroma"
    convert = lambda roots, out, progress: convert_geojson(roots, out, class_names=["Stroma"], progress=progress)  # noqa: E731
    assert_store_fails_cleanly(convert, [tmp_path], tmp_path / "store.h5", pattern)
    (tmp_path / "annotations" / "orphan.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    pattern = r"annotations/orphan\.geojson: annotation without an image"
    assert_store_fails_cleanly(convert_geojson, [tmp_path], tmp_path / "store.h5", pattern)


# ---------------------------------------------------------------- a split that keeps each source image together


def test_group_by_keeps_every_patch_of_an_image_in_one_split():
    images = [f"train_{k}" for k in range(1, 21)]
    metadata = pd.DataFrame(
        {"image_id": [f"{i}_{p:03d}" for i in images for p in range(16)], "source_image": np.repeat(images, 16)}
    )
    spec = {"scheme": "proportions", "fractions": {"train": 0.7, "val": 0.15, "test": 0.15}, "group_by": "source_image"}
    manifest = make_split(metadata, spec, seed=3).merge(metadata, on="image_id")
    assert manifest.groupby("source_image")["split"].nunique().max() == 1
    assert manifest.drop_duplicates("source_image")["split"].value_counts().to_dict() == {
        "train": 14,
        "val": 3,
        "test": 3,
    }
    flat = make_split(metadata, {**spec, "group_by": None}, seed=3).merge(metadata, on="image_id")
    assert flat.groupby("source_image")["split"].nunique().max() > 1  # a patch-level split leaks images
    with pytest.raises(
        ValueError, match="split.group_by: 'tissue' is not valid; choose one of: image_id, source_image"
    ):
        make_split(metadata, {**spec, "group_by": "tissue"}, seed=3)


# ---------------------------------------------------------------- the real shared data (small subsets)


def _subset(tmp_path: Path, source: Path, folders: dict[str, str], stems: list[str]) -> Path:
    """A copy of the release layout holding only `stems`, as links to the real files."""
    for folder, suffix in folders.items():
        (tmp_path / folder).mkdir(parents=True)
        for stem in stems:
            (tmp_path / folder / f"{stem}{suffix}").symlink_to(source / folder / f"{stem}{suffix}")
    return tmp_path


@pytest.mark.shared_data
def test_real_consep_patches_convert(tmp_path):
    if not CONSEP.is_dir():
        pytest.skip(f"{CONSEP} is absent")
    stems = ["train_1_000", "train_1_001", "train_13_005"]
    root = _subset(tmp_path / "consep", CONSEP, {"Images": ".jpg", "Labels": ".mat"}, stems)
    summary = convert_hovernet_mat([root], tmp_path / "store.h5", progress=False)
    store = Store(tmp_path / "store.h5")
    for stem in stems:
        mat = scipy.io.loadmat(CONSEP / "Labels" / f"{stem}.mat")
        sample = store[stem]
        assert sample.image.shape == (256, 256, 3)
        assert np.array_equal(sample.instances, mat["inst_map"])
        ids = np.unique(mat["inst_map"])[1:]
        assert len(ids) == len(mat["inst_centroid"])
        assert np.array_equal(sample.classes, np.asarray(mat["type_map"]) * (mat["inst_map"] > 0))
    assert summary["source_images"] == 2


@pytest.mark.shared_data
def test_real_monuseg_annotation_converts(tmp_path):
    if not MONUSEG.is_dir():
        pytest.skip(f"{MONUSEG} is absent")
    stem = "TCGA-50-5931-01Z-00-DX1"  # holds a degenerate region (Region Id 180)
    root = _subset(tmp_path / "monuseg", MONUSEG, {"Tissue Images": ".tif", "Annotations": ".xml"}, [stem])
    summary = convert_monuseg([root], tmp_path / "store.h5", progress=False)
    assert (summary["regions"], summary["degenerate"], summary["nuclei"]) == (445, 1, 444)
    assert summary["microns_per_pixel"] == {"0.2468": 1}
    sample = Store(tmp_path / "store.h5")[stem]
    assert sample.image.shape == (1000, 1000, 3) and sample.instances.max() == 444


HNE_COMMAND = ".venv/bin/snakemake --workflow-profile profiles/local --cores 2 --configfile config/hne.yaml"


@pytest.mark.shared_data
def test_hne_config_dry_runs_beside_the_shared_data(checkout):
    """The README's H&E command plans conversion, training, tuning, the CoNSeP test and the MoNuSeg table."""
    if not (CONSEP.is_dir() and MONUSEG.is_dir()):
        pytest.skip(f"{SHARED_DATA} lacks the CoNSeP or MoNuSeg folder")
    link_shared_data(checkout)  # the config reads ../shared/data, as beside the project
    output = dry_run(checkout, HNE_COMMAND)
    for rule in ("convert", "train_segmentation", "tune_postprocess", "evaluate_cross", "typed_pq_table"):
        assert f"rule {rule}:" in output, rule
    assert "results/monuseg/store.h5" in output and "results/consep/splits/by_image.csv" in output


@pytest.mark.shared_data
def test_dsb2018_models_on_monuseg_dry_run_beside_the_shared_data(checkout, tmp_path):
    """config/dsb2018_on_monuseg.yaml over the CPU config: the recipe candidates scored on MoNuSeg."""
    if not MONUSEG.is_dir():
        pytest.skip(f"{SHARED_DATA} lacks the MoNuSeg folder")
    link_shared_data(checkout)
    release = tmp_path / "bbbc038"
    release.mkdir()
    names = ("stage1_train.zip", "stage1_test.zip", "stage1_solution.csv")
    for name in names:
        (release / name).touch()
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        yaml.safe_dump({"datasets": {"dsb2018": {"files": {n: {"source": str(release / n)} for n in names}}}})
    )
    command = [".venv/bin/snakemake", "--cores", "1", "--configfile", "config/dsb2018_cpu.yaml"]
    output = dry_run(checkout, command, str(sources), "config/dsb2018_on_monuseg.yaml")
    for experiment in ("dsb_recipe_contour", "dsb_recipe_hv"):
        assert f"results/dsb2018/{experiment}/tables/cross_dataset.csv" in output
    assert "results/monuseg/store.h5" in output


@pytest.mark.shared_data
def test_the_hne_model_on_the_cmu_slide_dry_runs_beside_the_shared_data(checkout):
    """config/hne_slides.yaml: the CoNSeP model segments CMU-1-Small-Region.svs, its training planned first."""
    cmu = SHARED_DATA / "wsi" / "CMU-1-Small-Region.svs"
    if not (CONSEP.is_dir() and cmu.is_file()):
        pytest.skip(f"{SHARED_DATA} lacks the CoNSeP folder or the CMU slide")
    link_shared_data(checkout)
    target = "results/slides/hne/CMU-1-Small-Region/nuclei.geojson"
    command = [".venv/bin/snakemake", "--cores", "1", target, "--configfile", "config/hne.yaml"]
    output = dry_run(checkout, command, "config/hne_slides.yaml")
    assert "results/consep/consep_hv/models/unet/resnet18/none/model.pt" in output
    for rule in ("train_segmentation", "tune_postprocess", "slide_plan", "slide_segment", "slide_gather"):
        assert f"rule {rule}:" in output, rule
