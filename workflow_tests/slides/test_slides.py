"""Whole slides: reading (real SVS, synthetic pyramidal TIFF), tissue, chunks, outputs, resume, scatter, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import REPO
from scipy import ndimage as ndi

from nucleiflow.errors import ConfigError, DataFormatError
from nucleiflow.slides.chunks import SlideOptions, chunk_path, make_plan, segment_part
from nucleiflow.slides.reader import Region, best_level, open_slide, slide_name
from nucleiflow.slides.stage import gather_slide, plan_slide, segment_slide_part
from nucleiflow.synthetic.slide import SyntheticSlide, render_tile, synthetic_nuclei, write_synthetic_slide

WSI = REPO.parent / "shared" / "data" / "wsi"
CMU = WSI / "CMU-1-Small-Region.svs"
TCGA = WSI / "TCGA-CR-7395-01A-01-TS1.svs"
SMALL = SyntheticSlide(width=1100, height=800, mpp=0.5, seed=3, tile=256)


class StainModel:
    """A stand-in for a trained model: dark (hematoxylin) pixels are nucleus, nuclei their connected components.

    `delay` seconds per batch slow it down for the kill test.
    """

    tile_size = 128
    batch_size = 16
    type_names = ()

    def __init__(self, delay: float = 0.0):
        self.delay = delay

    def predict_maps_batch(self, tiles):
        if self.delay:
            time.sleep(self.delay)
        return [((255 - t.min(axis=2)) > 120).astype(np.float32)[None] for t in tiles]

    def nuclei(self, maps):
        return ndi.label(maps[0] > 0.5)[0], None, None


@pytest.fixture(scope="module")
def small_slide(tmp_path_factory) -> Path:
    return write_synthetic_slide(tmp_path_factory.mktemp("slide") / "small.ome.tif", SMALL)


def run_stage(
    slide: Path, out: Path, *, run_mpp=0.5, chunk_size=256, parts=1, model=None, region=None, stain=None, workers=0
) -> dict:
    """plan -> every part -> gather, as the rules run them; returns the output paths and summary row."""
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
    options = {"run_mpp": run_mpp, "tile_size": 128, "tile_overlap": 32, "chunk_size": chunk_size, "region": region}
    options["stain_normalisation"] = stain
    plan_slide(slide, options, None, files)
    model = model or StainModel()
    part_paths = [out / "parts" / f"part_{k}.json" for k in range(parts)]
    for k, path in enumerate(part_paths):
        segment_slide_part(files.plan, files.tissue, model, slide, out / "chunks", k, parts, path, workers=workers)
    row = gather_slide(files.plan, files.tissue, files.thumbnail, part_paths, out / "chunks", files, name="t")
    return {"files": files, "row": row}


def outputs_of(files) -> dict:
    return {
        "table": pd.read_parquet(files.nuclei),
        "geojson": files.geojson.read_text(),
        "labels": tifffile.imread(files.labels),
        "summary": pd.read_csv(files.table).drop(columns="seconds"),
    }


def assert_same_outputs(a: dict, b: dict) -> None:
    pd.testing.assert_frame_equal(a["table"], b["table"])
    assert a["geojson"] == b["geojson"]
    np.testing.assert_array_equal(a["labels"], b["labels"])
    pd.testing.assert_frame_equal(a["summary"], b["summary"])


# ---------------------------------------------------------------- reading


@pytest.mark.shared_data
def test_real_svs_slides_read_as_openslide_reads_them():
    if not CMU.is_file() or not TCGA.is_file():
        pytest.skip("../shared/data/wsi is absent")
    import openslide

    with open_slide(CMU) as slide:
        assert slide.backend == "openslide"
        assert slide.dimensions == (2220, 2967) and slide.level_count == 1
        assert slide.mpp == pytest.approx(0.499)
        ours = slide.read_region(700, 1200, 0, 300, 200)
    reference = np.asarray(openslide.OpenSlide(str(CMU)).read_region((700, 1200), 0, (300, 200)).convert("RGB"))
    assert ours.shape == (200, 300, 3) and ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, reference)
    with open_slide(TCGA) as slide:
        assert slide.level_dimensions == ((4443, 3567), (2221, 1783))
        assert slide.mpp is None  # the cut-down TCGA slide records no resolution
        ours = slide.read_region(1000, 800, 1, 256, 128)
    reference = np.asarray(openslide.OpenSlide(str(TCGA)).read_region((1000, 800), 1, (256, 128)).convert("RGB"))
    np.testing.assert_array_equal(ours, reference)
    with open_slide(TCGA, mpp=0.25) as slide:  # slides.<name>.slide_mpp supplies it
        assert slide.mpp == 0.25 and slide.level_mpp(1) == pytest.approx(0.5001, abs=1e-3)
        assert best_level(slide, 0.5) == 1 and best_level(slide, 0.25) == 0


def test_synthetic_slide_is_a_tiled_pyramid_read_tile_by_tile(small_slide):
    with tifffile.TiffFile(small_slide) as tif:
        levels = tif.series[0].levels
        shapes = [(800, 1100, 3), (400, 550, 3), (200, 275, 3), (100, 138, 3)]  # halved until a tile holds it
        assert tif.is_ome and [lv.shape for lv in levels] == shapes
        assert all(lv.keyframe.is_tiled and lv.keyframe.tilewidth == 256 for lv in levels)
    with open_slide(small_slide) as slide:
        assert slide.backend == "tifffile" and slide.mpp == pytest.approx(0.5)
        assert slide.level_downsamples == pytest.approx((1.0, 2.0, 4.0, 1100 / 138))
        # A region across tile borders, and one over the slide's edge (white beyond it).
        np.testing.assert_array_equal(slide.read_region(200, 240, 0, 120, 50), render_tile(SMALL, 0, 240, 200, 50, 120))
        np.testing.assert_array_equal(
            slide.read_region(2 * 500, 2 * 390, 1, 80, 30)[:10, :50], render_tile(SMALL, 1, 390, 500, 10, 50)
        )
        assert (slide.read_region(2 * 500, 2 * 390, 1, 80, 30)[10:] == 255).all()
    assert slide_name(small_slide) == "small" and slide_name("a/TCGA-1.svs") == "TCGA-1"


# ---------------------------------------------------------------- the stage on a synthetic slide


def test_every_nucleus_found_once_and_whole_across_chunks(small_slide, tmp_path):
    # 256 px chunks and 128 px tiles: most nuclei of the slide lie near a chunk or tile border.
    result = run_stage(small_slide, tmp_path / "out")
    files, row = result["files"], result["row"]
    truth = synthetic_nuclei(SMALL)
    table = pd.read_parquet(files.nuclei)
    assert row["chunks"] > 6 and row["nuclei"] == len(table) == len(truth["x"])
    # Each true nucleus matched by exactly one found centroid (within a pixel): none cut, none twice.
    found = table[["centroid_y_px", "centroid_x_px"]].to_numpy()
    distance = np.hypot(found[:, None, 0] - truth["y"][None], found[:, None, 1] - truth["x"][None])
    assert (distance.min(axis=1) < 1.0).all() and len(set(distance.argmin(axis=1))) == len(truth["x"])
    np.testing.assert_allclose(
        table["area_um2"], np.pi * (truth["radius"][distance.argmin(axis=1)] * 0.5) ** 2, rtol=0.2
    )
    labels = tifffile.imread(files.labels)
    assert labels.dtype == np.uint32 and labels.shape == (800, 1100)
    assert sorted(np.unique(labels[labels > 0])) == list(table["nucleus_id"]) == list(range(1, len(table) + 1))
    areas = np.bincount(labels.ravel())[1:] * 0.5**2
    np.testing.assert_allclose(areas, table["area_um2"])  # run at the slide's resolution: the same pixels
    # The GeoJSON: QuPath detections whose outlines rasterise back to the label image exactly.
    from nucleiflow.geojson import features_to_instances, read_features

    features = read_features(files.geojson)
    assert len(features) == len(table)
    assert all(f["properties"]["objectType"] == "detection" for f in features)
    assert [f["properties"]["nucleus_id"] for f in features] == list(table["nucleus_id"])
    back = features_to_instances(features, labels.shape).instances
    np.testing.assert_array_equal(back > 0, labels > 0)
    import shapely

    assert all(shapely.geometry.shape(f["geometry"]).is_valid for f in features)
    # Summary, tissue mask, overview.
    summary = pd.read_csv(files.table)
    assert summary.loc[0, "nuclei"] == len(table) and summary.loc[0, "tissue_area_mm2"] > 0
    assert summary.loc[0, "density_per_mm2"] == pytest.approx(len(table) / summary.loc[0, "tissue_area_mm2"])
    assert files.figure.is_file() and files.figure.with_suffix(".pdf").is_file()
    with tifffile.TiffFile(files.labels) as tif:
        assert tif.is_ome and len(tif.series[0].levels) >= 2 and tif.series[0].levels[0].keyframe.is_tiled


def test_a_20x_slide_is_resampled_to_the_models_resolution(small_slide, tmp_path):
    result = run_stage(small_slide, tmp_path / "out", run_mpp=0.25, chunk_size=512)
    plan = json.loads(result["files"].plan.read_text())
    assert plan["scale"] == 2.0 and plan["run_size"] == [2200, 1600] and plan["level"] == 0
    table = pd.read_parquet(result["files"].nuclei)
    truth = synthetic_nuclei(SMALL)
    assert len(table) == len(truth["x"])
    # Areas in um^2 do not depend on the resolution run at; the label image sits on the slide's pixels.
    at_slide = run_stage(small_slide, tmp_path / "native")
    np.testing.assert_allclose(
        np.sort(table["area_um2"]), np.sort(pd.read_parquet(at_slide["files"].nuclei)["area_um2"]), rtol=0.15
    )
    assert tifffile.imread(result["files"].labels).shape == (800, 1100)


def test_scattered_parts_gather_to_the_single_job_outputs(small_slide, tmp_path):
    single = outputs_of(run_stage(small_slide, tmp_path / "single")["files"])
    scattered = outputs_of(run_stage(small_slide, tmp_path / "scattered", parts=3)["files"])
    assert len(single["table"]) > 100
    assert_same_outputs(single, scattered)


KILLED_RUN = """
import sys
sys.path[:0] = [{tests!r}, {conftest_dir!r}]
from test_slides import StainModel
from nucleiflow.slides.stage import segment_slide_part
segment_slide_part({plan!r}, {mask!r}, StainModel(delay=0.3), {slide!r}, {chunks!r}, 0, 1, {part!r})
"""


def test_post_processing_in_worker_processes_writes_the_same_outputs(small_slide, tmp_path):
    in_process = run_stage(small_slide, tmp_path / "in_process", chunk_size=256)
    workers = run_stage(small_slide, tmp_path / "workers", chunk_size=256, workers=2)
    assert len(json.loads(in_process["files"].plan.read_text())["chunks"]) > 2  # several chunks in flight
    assert_same_outputs(outputs_of(workers["files"]), outputs_of(in_process["files"]))


def test_shape_measures_equal_skimages():
    from skimage.draw import disk, ellipse
    from skimage.measure import regionprops

    from nucleiflow.slides.chunks import convex_area, eccentricity

    rng = np.random.default_rng(1)
    labels = np.zeros((400, 400), np.int32)
    for k in range(1, 301):  # discs, rotated ellipses, pixels missing, single pixels and lines
        y, x = rng.integers(15, 385, 2)
        if k % 3:
            rr, cc = disk((y, x), rng.uniform(0.5, 12), shape=labels.shape)
        else:
            rr, cc = ellipse(y, x, rng.uniform(0.5, 12), rng.uniform(1, 12), labels.shape, rng.uniform(0, np.pi))
        keep = rng.random(len(rr)) > 0.05
        labels[rr[keep], cc[keep]] = k
    labels[5, 5:20] = 301
    labels[390, 390] = 302
    props = regionprops(labels)
    assert len(props) > 250
    assert [convex_area(p.image) for p in props] == [int(p.area_convex) for p in props]
    np.testing.assert_allclose([eccentricity(p.image) for p in props], [p.eccentricity for p in props], atol=1e-12)


def test_chunks_with_the_most_tissue_tiles_are_segmented_first(small_slide, tmp_path):
    # The last chunk's post-processing has no inference left to overlap it: it should be a small one.
    from nucleiflow.slides.chunks import chunk_window, window_tiles

    plan, images = make_plan(small_slide, SlideOptions(run_mpp=0.5, tile_size=128, chunk_size=256), None)
    tiles = {c["index"]: len(window_tiles(plan, images["mask"], *chunk_window(plan, c))) for c in plan["chunks"]}
    assert len(set(tiles.values())) > 1  # the slide's chunks differ in tissue
    order = []
    segment_part(plan, images["mask"], StainModel(), tmp_path, progress=lambda chunk, n: order.append(chunk["index"]))
    assert sorted(order) == sorted(tiles)
    assert [tiles[i] for i in order] == sorted(tiles.values(), reverse=True)


def test_a_killed_job_resumes_from_its_finished_chunks(small_slide, tmp_path):
    reference = outputs_of(run_stage(small_slide, tmp_path / "reference")["files"])
    out = tmp_path / "killed"
    files = SimpleNamespace(plan=out / "plan.json", tissue=out / "tissue_mask.png", thumbnail=out / "thumbnail.png")
    plan = plan_slide(
        small_slide, {"run_mpp": 0.5, "tile_size": 128, "tile_overlap": 32, "chunk_size": 256}, None, files
    )
    code = KILLED_RUN.format(
        tests=str(Path(__file__).parent),
        conftest_dir=str(Path(__file__).parents[1]),  # workflow_tests/conftest.py, which test_slides imports
        plan=str(files.plan),
        mask=str(files.tissue),
        slide=str(small_slide),
        chunks=str(out / "chunks"),
        part=str(out / "parts" / "part_0.json"),
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    job = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.time() + 120
    while len(list((out / "chunks").glob("chunk_*.npz"))) < 3 and time.time() < deadline and job.poll() is None:
        time.sleep(0.1)
    job.send_signal(signal.SIGKILL)
    job.wait()
    done = len(list((out / "chunks").glob("chunk_*.npz")))
    assert 3 <= done < len(plan["chunks"]) and not (out / "parts" / "part_0.json").exists()
    # The chunks written are whole (atomic): each one reads back; the rerun only does the rest.
    summary = segment_slide_part(
        files.plan, files.tissue, StainModel(), small_slide, out / "chunks", 0, 1, out / "parts" / "part_0.json"
    )
    assert summary["resumed"] == done and summary["chunks"] == len(plan["chunks"])
    assert not list((out / "chunks").glob(".*.tmp.npz"))
    files.__dict__.update(
        geojson=out / "nuclei.geojson",
        nuclei=out / "nuclei.parquet",
        labels=out / "labels.ome.tif",
        table=out / "tables" / "summary.csv",
        figure=out / "figures" / "overview.png",
    )
    gather_slide(files.plan, files.tissue, files.thumbnail, [out / "parts" / "part_0.json"], out / "chunks", files)
    assert_same_outputs(outputs_of(files), reference)


def test_chunks_of_another_model_are_redone(small_slide, tmp_path):
    options = SlideOptions(run_mpp=0.5, tile_size=128, tile_overlap=32, chunk_size=256)
    plan, images = make_plan(small_slide, options)
    first = segment_part(plan, images["mask"], StainModel(), tmp_path, model_fingerprint="a")
    again = segment_part(plan, images["mask"], StainModel(), tmp_path, model_fingerprint="a")
    other = segment_part(plan, images["mask"], StainModel(), tmp_path, model_fingerprint="b")
    assert first["resumed"] == 0 and again["resumed"] == again["chunks"] and other["resumed"] == 0
    assert chunk_path(tmp_path, 0).is_file()


# ---------------------------------------------------------------- stain normalisation


def beer_lambert_tissue(vectors, concentration_scale=(1.0, 1.0), size=256, seed=0) -> np.ndarray:
    """An H&E-like RGB image of two stains (Beer-Lambert): nucleus blobs of H over an E background."""
    rng = np.random.default_rng(seed)
    h = ndi.gaussian_filter(rng.random((size, size)), 3)
    h = (h > np.percentile(h, 70)) * 1.2 + 0.15
    e = 0.4 + 0.6 * ndi.gaussian_filter(rng.random((size, size)), 8)
    c = np.stack([h * concentration_scale[0], e * concentration_scale[1]]).reshape(2, -1)
    v = np.asarray(vectors, float) / np.linalg.norm(vectors, axis=0)
    return np.clip(240 * np.exp(-(v @ c)).T.reshape(size, size, 3), 0, 255).astype(np.uint8)


def test_a_restained_slide_is_normalised_back_to_the_reference_stains(tmp_path):
    from PIL import Image

    from nucleiflow.slides.stain import SlideStainNormaliser, estimate_slide_stains, reference_stains

    # The same tissue in two stainings: Macenko's reference H&E vectors, and bluer H, redder E, more H.
    original = beer_lambert_tissue([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]])
    restained = beer_lambert_tissue([[0.65, 0.30], [0.70, 0.70], [0.29, 0.65]], concentration_scale=(1.4, 1.4))
    Image.fromarray(original).save(tmp_path / "reference.png")
    target = reference_stains(tmp_path / "reference.png")
    source = estimate_slide_stains(restained, np.ones(restained.shape[:2], bool))
    normalise = SlideStainNormaliser(source, target)
    before = np.abs(restained.astype(float) - original).mean()
    after = np.abs(normalise(restained).astype(float) - original).mean()
    assert after < 0.3 * before, (before, after)
    # One transform for the whole slide: two windows normalised apart equal the whole normalised at once.
    halves = np.concatenate([normalise(restained[:, :200]), normalise(restained[:, 200:])], axis=1)
    np.testing.assert_array_equal(halves, normalise(restained))
    # Glass alone (nothing stained) gives no estimate: the slide is left as it is.
    assert estimate_slide_stains(np.full((64, 64, 3), 245, np.uint8), np.ones((64, 64), bool)) is None
    with pytest.raises(DataFormatError, match="stained pixels"):
        Image.fromarray(np.full((64, 64, 3), 245, np.uint8)).save(tmp_path / "glass.png")
        reference_stains(tmp_path / "glass.png")


def test_the_stage_feeds_the_model_normalised_tiles_and_measures_the_slides_own_pixels(small_slide, tmp_path):
    class Recording(StainModel):
        seen: list = []

        def predict_maps_batch(self, tiles):
            type(self).seen += [t.copy() for t in tiles]
            return super().predict_maps_batch(tiles)

    plain = run_stage(small_slide, tmp_path / "plain", model=Recording())
    plain_tiles, Recording.seen = Recording.seen, []
    normalised = run_stage(small_slide, tmp_path / "macenko", model=Recording(), stain={"reference": None})
    plan = json.loads(normalised["files"].plan.read_text())
    assert plan["stain"]["method"] == "macenko" and len(plan["stain"]["source"]["vectors"]) == 3
    assert json.loads(plain["files"].plan.read_text())["stain"] is None
    assert plan["fingerprint"] != json.loads(plain["files"].plan.read_text())["fingerprint"]  # chunks redone
    assert len(Recording.seen) == len(plain_tiles)
    assert any(not np.array_equal(a, b) for a, b in zip(Recording.seen, plain_tiles))
    assert normalised["row"]["nuclei"] > 0


# ---------------------------------------------------------------- bad input, one line each


def assert_one_line(error, *words):
    text = str(error.value)
    assert "\n" not in text and all(word in text for word in words), text


def test_bad_slides_fail_with_one_line_naming_the_file(small_slide, tmp_path):
    options = SlideOptions(run_mpp=0.5, tile_size=128, tile_overlap=32, chunk_size=256)
    text = tmp_path / "notes.svs"
    text.write_text("not a slide\n")
    with pytest.raises(DataFormatError) as caught:
        make_plan(text, options)
    assert_one_line(caught, str(text), "not a slide")
    truncated = tmp_path / "truncated.ome.tif"
    truncated.write_bytes(small_slide.read_bytes()[: small_slide.stat().st_size // 3])
    with pytest.raises(DataFormatError) as caught, open_slide(truncated) as slide:
        slide.read_level(0)
    assert_one_line(caught, str(truncated), "truncated")
    # A codec tifffile cannot decode (JPEG 2000, as in the TCGA slide's tiles): the compression tag rewritten.
    codec = tmp_path / "jp2k.ome.tif"
    codec.write_bytes(small_slide.read_bytes())
    with tifffile.TiffFile(codec) as tif:
        tag = tif.pages[0].tags["Compression"]
        offset = tag.valueoffset
    data = bytearray(codec.read_bytes())
    data[offset : offset + 2] = (33005).to_bytes(2, "little")
    codec.write_bytes(bytes(data))
    with pytest.raises(DataFormatError) as caught, open_slide(codec) as slide:
        slide.read_region(0, 0, 0, 64, 64)
    assert_one_line(caught, str(codec), "cannot decode")
    with pytest.raises(DataFormatError) as caught:
        make_plan(small_slide, replace(options, region=Region(1000, 0, 200, 100)))
    assert_one_line(caught, str(small_slide), "outside the slide", "1100 x 800")
    with pytest.raises(DataFormatError) as caught:
        make_plan(small_slide, replace(options, level=5))
    assert_one_line(caught, str(small_slide), "level 5", "0-3")


def test_a_slide_without_tissue_gives_empty_outputs_and_a_note(tmp_path):
    glass = write_synthetic_slide(tmp_path / "glass.ome.tif", replace(SMALL, tissue=()))
    result = run_stage(glass, tmp_path / "out")
    assert result["row"]["nuclei"] == 0 and "no tissue" in result["row"]["note"]
    outputs = outputs_of(result["files"])
    assert outputs["table"].empty and list(outputs["table"].columns)[0] == "nucleus_id"
    assert json.loads(outputs["geojson"]) == {"type": "FeatureCollection", "features": []}
    assert not outputs["labels"].any()


def test_a_region_of_interest_is_all_that_is_segmented(small_slide, tmp_path):
    region = {"x": 300, "y": 200, "width": 400, "height": 300}
    table = pd.read_parquet(run_stage(small_slide, tmp_path / "out", region=region)["files"].nuclei)
    truth = synthetic_nuclei(SMALL)
    inside = (truth["x"] >= 300) & (truth["x"] < 700) & (truth["y"] >= 200) & (truth["y"] < 500)
    assert 0 < len(table) <= inside.sum() + 10
    assert table["centroid_x_px"].between(295, 705).all() and table["centroid_y_px"].between(195, 505).all()


# ---------------------------------------------------------------- configuration


def slides_config(slides, **entry):
    from snakemake.utils import validate

    config = yaml_config()
    config["slides"] = {"wsi": {"model": "pannuke_hv/unet/resnet18/none", "slides": slides, **entry}}
    validate(config, str(REPO / "schemas" / "config.schema.yaml"))
    return config


def yaml_config():
    import yaml

    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_slides_config_resolution_and_missing_mpp(small_slide, tmp_path):
    from nucleiflow.slides.config import check_slides, model_mpp, slide_files
    from nucleiflow.workflow.checks import check_config

    config = slides_config([str(small_slide)])
    check_config(config)
    check_slides(config)
    assert model_mpp(config, "wsi") == 0.25  # PanNuke's 40x
    assert config["slides"]["wsi"]["jobs"] == 1 and config["slides"]["wsi"]["tile_size"] == 256
    assert slide_files(slides_config(str(small_slide.parent / "*.ome.tif")), "wsi") == {"small": str(small_slide)}
    with pytest.raises(ConfigError) as caught:
        check_slides(slides_config([str(tmp_path / "absent.svs")]))
    assert_one_line(caught, "slides.wsi.slides", "absent.svs")
    config = slides_config([str(small_slide)], model="dsb_resunet/resunet/none/none")
    with pytest.raises(ConfigError) as caught:
        check_slides(config)
    assert_one_line(caught, "datasets.dsb2018.microns_per_pixel", "slides.wsi.mpp")
    no_mpp = tmp_path / "no_mpp.tif"  # a plain tiled TIFF without resolution tags
    tifffile.imwrite(no_mpp, render_tile(SMALL, 0, 0, 0, 512, 512), tile=(256, 256))
    with pytest.raises(ConfigError) as caught:
        check_slides(slides_config([str(no_mpp)]))
    assert_one_line(caught, "slides.wsi.slide_mpp", "'no_mpp'", "records no microns per pixel")
    check_slides(slides_config([str(no_mpp)], slide_mpp={"no_mpp": 0.5}))
    check_slides(slides_config([str(no_mpp)], slide_mpp=0.5))
    with pytest.raises(ConfigError) as caught:
        check_slides(slides_config([str(small_slide)], stain_normalisation={"reference": str(tmp_path / "ref.png")}))
    assert_one_line(caught, "slides.wsi.stain_normalisation.reference", "ref.png")
    check_slides(slides_config([str(small_slide)], stain_normalisation={"reference": None}))


@pytest.mark.shared_data
def test_the_tcga_slide_without_resolution_stops_the_run_before_any_job(tmp_path):
    if not TCGA.is_file():
        pytest.skip("../shared/data/wsi is absent")
    from nucleiflow.slides.config import check_slides

    with pytest.raises(ConfigError) as caught:
        check_slides(slides_config([str(CMU), str(TCGA)]))
    assert_one_line(caught, "TCGA-CR-7395-01A-01-TS1", "slide_mpp")
    check_slides(slides_config([str(CMU), str(TCGA)], slide_mpp={"TCGA-CR-7395-01A-01-TS1": 0.25}))
