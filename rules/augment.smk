# Stage 3: the augmentation pipeline, serialised once per dataset, with a preview figure.


rule augment_pipeline:
    input:
        STORE,
    output:
        pipeline=PIPELINE,
        preview=report(
            PIPELINE_PREVIEW,
            caption="../report/augment_preview.rst",
            category="Data",
            subcategory="{dataset}",
        ),
    log:
        log_path("augment_{pipeline}"),
    benchmark:
        bench_path("augment_{pipeline}")
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        spec=lambda wc: config["augmentation"][wc.pipeline],
        seed=config["seed"],
    script:
        "../scripts/augment_pipeline.py"
