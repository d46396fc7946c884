# Input functions and targets of rules/slides.smk (whole-slide images, slides.<name>).
from nucleiflow.slides.config import model_mpp, slide_cell, slide_files, slide_mpp_override, slide_package
from nucleiflow.workflow.cells import cell_type_names
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
    """The plan's settings: run resolution, tiles, chunks, region, level, tissue detection, stain normalisation."""
    entry = SLIDES[wildcards.name]
    keys = ("tile_size", "tile_overlap", "chunk_size", "region", "level", "tissue", "stain_normalisation")
    return {"run_mpp": model_mpp(config, wildcards.name), **{key: entry[key] for key in keys}}


def slide_model(wildcards):
    """The model's weights: an exported package (zip or folder) as named, or the cell's model.pt."""
    package = slide_package(config, wildcards.name)
    if package is not None:
        return package
    return f"{MODEL_DIR}/model.pt".format(**slide_cell(config, wildcards.name).wildcards)


def slide_spec(wildcards):
    """The cell's spec; none for a package, which carries its own."""
    if slide_package(config, wildcards.name) is not None:
        return None
    return cell_spec(config, **slide_cell(config, wildcards.name).wildcards).to_dict()


def slide_tuned(wildcards):
    if slide_package(config, wildcards.name) is not None:
        return []
    return tuned_params_of(slide_cell(config, wildcards.name).wildcards)


def slide_type_names(wildcards):
    """The type names of the model's training data (a package carries its own)."""
    if slide_package(config, wildcards.name) is not None:
        return None
    return cell_type_names(config, slide_cell(config, wildcards.name))


def slide_postprocess(wildcards):
    """The model's post-processing (its experiment's, or the package's own: None), TTA from slides.<name>.tta."""
    if slide_package(config, wildcards.name) is not None:
        postprocess = {}
    else:
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
