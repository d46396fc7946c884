# Stage 2b: exploratory data analysis of a converted store (tables + one overview figure).


rule eda:
    input:
        STORE,
    output:
        per_image=f"{EDA_DIR}/per_image.csv",
        summary=multiext(f"{EDA_DIR}/summary", ".csv", ".md", ".tex"),
        figure=report(
            f"{EDA_DIR}/eda.png",
            caption="../report/eda.rst",
            category="Data",
            subcategory="{dataset}",
        ),
        pdf=f"{EDA_DIR}/eda.pdf",
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
