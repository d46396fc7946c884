# Stage 2: seeded split manifests (image_id, split) per dataset.


rule split:
    input:
        "results/{dataset}/store.h5",
    output:
        report(
            "results/{dataset}/splits/{split}.csv",
            caption="../report/split.rst",
            category="Data",
            subcategory="{dataset}",
        ),
    params:
        spec=split_spec,
        seed=config["seed"],
    log:
        log_path("split_{split}"),
    benchmark:
        bench_path("split_{split}")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/split.py"
