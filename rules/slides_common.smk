# Input functions and targets of rules/slides.smk (whole-slide images, slides.<name>).
from nucleiflow.slides.config import model_mpp, slide_cell, slide_files, slide_mpp_override
from nucleiflow.workflow.cells import model_spec as cell_spec
from nucleiflow.paths import (
    DEMO_SLIDE_NAME,
    DEMO_SLIDES,
    SLIDE_CHUNKS,
    SLIDE_DIR,
    SLIDE_FIGURE,
    SLIDE_GEOJSON,
    SLIDE_LABELS,
    SLIDE_NUCLEI,
    SLIDE_PART,
    SLIDE_PLAN,
    SLIDE_SUMMARY,
    SLIDE_THUMBNAIL,
    SLIDE_TISSUE,
)

SLIDES = config.get("slides", {})
SLIDE_FILES = {name: slide_files(config, name, DEMO_DIR if DEMO else None) for name in SLIDES}


wildcard_constraints:
    slide=r"[A-Za-z0-9_.\-]+",
    part=r"[0-9]+",


def slide_file(wildcards):
    files = SLIDE_FILES[wildcards.name]
    if wildcards.slide not in files:
        raise WorkflowError(f"slides.{wildcards.name}: no slide named {wildcards.slide!r}; have {sorted(files)}")
    return files[wildcards.slide]


def slide_options(wildcards):
    """The plan's settings: run resolution, tiles, chunks, region, level, tissue detection."""
    entry = SLIDES[wildcards.name]
    keys = ("tile_size", "tile_overlap", "chunk_size", "region", "level", "tissue")
    return {"run_mpp": model_mpp(config, wildcards.name), **{key: entry[key] for key in keys}}


def slide_model(wildcards):
    return f"{MODEL_DIR}/model.pt".format(**slide_cell(config, wildcards.name).wildcards)


def slide_spec(wildcards):
    return cell_spec(config, **slide_cell(config, wildcards.name).wildcards).to_dict()


def slide_tuned(wildcards):
    return tuned_params_of(slide_cell(config, wildcards.name).wildcards)


def slide_postprocess(wildcards):
    """The model's experiment's post-processing, its test-time augmentation replaced by slides.<name>.tta if set."""
    postprocess = dict(SEGMENTATION[slide_cell(config, wildcards.name).experiment]["postprocess"])
    if SLIDES[wildcards.name]["tta"] is not None:
        postprocess["tta"] = SLIDES[wildcards.name]["tta"]
    return postprocess


def slide_parts(wildcards):
    jobs = SLIDES[wildcards.name]["jobs"]
    return [SLIDE_PART.format(name=wildcards.name, slide=wildcards.slide, part=k) for k in range(jobs)]


def slides_targets():
    """Each slide's GeoJSON, table, label pyramid, summary and overview."""
    targets = []
    for name, files in SLIDE_FILES.items():
        for slide in files:
            values = {"name": name, "slide": slide}
            targets += [
                p.format(**values) for p in (SLIDE_GEOJSON, SLIDE_NUCLEI, SLIDE_LABELS, SLIDE_SUMMARY, SLIDE_FIGURE)
            ]
    return targets
