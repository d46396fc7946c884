# Whole-slide images (slides.<name>): plan (resolution, tissue, chunks) -> segment (one job, or `jobs`
# scattered over the chunks; GPU) -> gather (QuPath GeoJSON, per-nucleus table, label pyramid, summary,
# overview). The logic is nucleiflow.slides; paths in nucleiflow.paths.
from nucleiflow.config import model_mpp, slide_cell, slide_files, slide_mpp_override
from nucleiflow.paths import (
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
from nucleiflow.synthetic.demo import DEMO_SLIDE_NAME

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


rule demo_slide:
    output:
        f"{DEMO_SLIDES}/{DEMO_SLIDE_NAME}",
    log:
        log_path("demo_slide", DEMO_DIR),
    benchmark:
        bench_path("demo_slide", DEMO_DIR)
    conda:
        "../envs/slides.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        seed=(DEMO or {}).get("seed", 7),
    script:
        "../scripts/demo_slide.py"


rule slide_plan:
    input:
        slide=slide_file,
    output:
        plan=SLIDE_PLAN,
        tissue=SLIDE_TISSUE,
        thumbnail=SLIDE_THUMBNAIL,
    log:
        log_path("slide_plan_{slide}", SLIDE_DIR),
    benchmark:
        bench_path("slide_plan_{slide}", SLIDE_DIR)
    conda:
        "../envs/slides.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        options=slide_options,
        slide_mpp=lambda wc: slide_mpp_override(config, wc.name, wc.slide),
    script:
        "../scripts/slide_plan.py"


rule slide_segment:
    input:
        plan=SLIDE_PLAN,
        tissue=SLIDE_TISSUE,
        model=slide_model,
        tuned=slide_tuned,
    output:
        SLIDE_PART,
    log:
        log_path("slide_segment_{slide}_{part}", SLIDE_DIR),
    benchmark:
        bench_path("slide_segment_{slide}_{part}", SLIDE_DIR)
    conda:
        "../envs/slides.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=1,
    params:
        spec=slide_spec,
        postprocess=slide_postprocess,
        parts=lambda wc: SLIDES[wc.name]["jobs"],
        chunks=lambda wc: SLIDE_CHUNKS.format(name=wc.name, slide=wc.slide),
        tile_size=lambda wc: SLIDES[wc.name]["tile_size"],
        batch_size=lambda wc: SLIDES[wc.name]["batch_size"],
    script:
        "../scripts/slide_segment.py"


rule slide_gather:
    input:
        plan=SLIDE_PLAN,
        tissue=SLIDE_TISSUE,
        thumbnail=SLIDE_THUMBNAIL,
        parts=slide_parts,
    output:
        geojson=SLIDE_GEOJSON,
        nuclei=SLIDE_NUCLEI,
        labels=SLIDE_LABELS,
        table=report(
            SLIDE_SUMMARY,
            caption="../report/slide_summary.rst",
            category="Slides",
            subcategory="{name}",
            labels={"slide": "{slide}", "output": "summary"},
        ),
        figure=report(
            SLIDE_FIGURE,
            caption="../report/slide_overview.rst",
            category="Slides",
            subcategory="{name}",
            labels={"slide": "{slide}", "output": "overview"},
        ),
        extra=[SLIDE_SUMMARY.replace(".csv", ext) for ext in (".md", ".tex")] + [SLIDE_FIGURE.replace(".png", ".pdf")],
    log:
        log_path("slide_gather_{slide}", SLIDE_DIR),
    benchmark:
        bench_path("slide_gather_{slide}", SLIDE_DIR)
    conda:
        "../envs/slides.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        chunks=lambda wc: SLIDE_CHUNKS.format(name=wc.name, slide=wc.slide),
        name="{name}",
    script:
        "../scripts/slide_gather.py"
