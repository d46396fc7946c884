# Whole-slide images (slides.<name>): plan (resolution, tissue, chunks) -> segment (one job, or `jobs`
# scattered over the chunks; GPU) -> gather (QuPath GeoJSON, per-nucleus table, label pyramid, summary,
# overview). The logic is nucleiflow.slides; paths in nucleiflow.paths; input functions in slides_common.smk.


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
    priority: 1
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
    priority: 1
    conda:
        "../envs/slides.yaml"
    # CPU: two post-processing worker processes beside the network's one thread (the next chunk's network
    # overlaps the watershed of the chunks before it; scripts/slide_segment.py); GPU: one drives it, one loads.
    threads: device_threads(gpu=2, cpu=2)
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=1,
    params:
        spec=slide_spec,
        postprocess=slide_postprocess,
        type_names=slide_type_names,
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
        extra=[*table_copies(SLIDE_SUMMARY), figure_pdf(SLIDE_FIGURE)],
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
