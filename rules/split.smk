# Stage 2: seeded split manifests (image_id, split) per dataset.


rule split:
    input:
        STORE,
    output:
        report(
            SPLIT,
            caption="../report/split.rst",
            category="Data",
            subcategory="{dataset}",
        ),
    log:
        log_path("split_{split}"),
    benchmark:
        bench_path("split_{split}")
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        spec=split_spec,
        seed=config["seed"],
    script:
        "../scripts/split.py"
