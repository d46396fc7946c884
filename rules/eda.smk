# Stage 2b: exploratory data analysis of a converted store (tables + one overview figure).


rule eda:
    input:
        "results/{dataset}/store.h5",
    output:
        per_image="results/{dataset}/eda/per_image.csv",
        summary=multiext("results/{dataset}/eda/summary", ".csv", ".md", ".tex"),
        figure=report(
            "results/{dataset}/eda/eda.png",
            caption="../report/eda.rst",
            category="Data",
            subcategory="{dataset}",
        ),
        pdf="results/{dataset}/eda/eda.pdf",
    log:
        log_path("eda"),
    benchmark:
        bench_path("eda")
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/eda.py"
