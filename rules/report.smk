# Stage 6: the segmentation studies' tables (CSV + Markdown + LaTeX) and figures (PNG + PDF).


rule segmentation_tables:
    input:
        infos=lambda wc: expand_cells(f"{MODEL_DIR}/train_info.json", wc),
        per_image=lambda wc: evaluation_files(wc, "per_image.csv"),
        timing=lambda wc: evaluation_files(wc, "timing.json"),
    output:
        sizes=seg_table("model_sizes", "model_sizes"),
        metrics=seg_table("metrics", "metrics"),
        timing=seg_table("timing", "timing"),
        extra=multiext(f"{SEG_DIR}/tables/model_sizes", ".md", ".tex")
        + multiext(f"{SEG_DIR}/tables/metrics", ".md", ".tex")
        + multiext(f"{SEG_DIR}/tables/timing", ".md", ".tex"),
    params:
        cells=lambda wc: [c.wildcards for c in cells_of(wc)],
        subsets=lambda wc: experiment(wc)["evaluate_splits"],
    log:
        f"{SEG_DIR}/logs/segmentation_tables.log",
    benchmark:
        f"{SEG_DIR}/benchmarks/segmentation_tables.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/segmentation_tables.py"


rule segmentation_figures:
    input:
        histories=lambda wc: expand_cells(f"{MODEL_DIR}/history.csv", wc),
        per_image=lambda wc: evaluation_files(wc, "per_image.csv"),
        predictions=lambda wc: evaluation_files(wc, "predictions.h5"),
        store="results/{dataset}/store.h5",
    output:
        curves=seg_figure("metric_curves"),
        bars=seg_figure("metric_bars"),
        examples=seg_figure("prediction_examples"),
        contours=seg_figure("contours"),
        pdfs=multiext(f"{SEG_DIR}/figures/metric_curves", ".pdf")
        + multiext(f"{SEG_DIR}/figures/metric_bars", ".pdf")
        + multiext(f"{SEG_DIR}/figures/prediction_examples", ".pdf")
        + multiext(f"{SEG_DIR}/figures/contours", ".pdf"),
    params:
        cells=lambda wc: [c.wildcards for c in cells_of(wc)],
        subsets=lambda wc: experiment(wc)["evaluate_splits"],
        examples=lambda wc: experiment(wc)["figure_examples"],
        threshold=lambda wc: experiment(wc)["training"]["threshold"],
    log:
        f"{SEG_DIR}/logs/segmentation_figures.log",
    benchmark:
        f"{SEG_DIR}/benchmarks/segmentation_figures.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/segmentation_figures.py"
