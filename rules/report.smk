# Stage 6: the segmentation studies' tables (CSV + Markdown + LaTeX) and figures (PNG + PDF).


rule segmentation_tables:
    input:
        infos=lambda wc: expand_cells(f"{MODEL_DIR}/train_info.json", wc),
        per_image=lambda wc: evaluation_files(wc, "per_image.csv"),
        timing=lambda wc: evaluation_files(wc, "timing.json"),
    output:
        sizes=seg_table("model_sizes", "model_sizes"),
        metrics=seg_table("metrics", "metrics"),
        objects=seg_table("object_metrics", "object_metrics"),
        per_image=seg_table("per_image", "per_image"),
        timing=seg_table("timing", "timing"),
        extra=[f"{SEG_DIR}/tables/{name}{ext}" for name in SEG_TABLES for ext in (".md", ".tex")],
    log:
        log_path("segmentation_tables", SEG_DIR),
    benchmark:
        bench_path("segmentation_tables", SEG_DIR)
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        cells=lambda wc: [c.wildcards for c in cells_of(wc)],
        subsets=lambda wc: experiment(wc)["evaluate_splits"],
        per_image_rows=lambda wc: experiment(wc)["per_image_rows"],
    script:
        "../scripts/segmentation_tables.py"


rule segmentation_figures:
    input:
        histories=lambda wc: expand_cells(f"{MODEL_DIR}/history.csv", wc),
        per_image=lambda wc: evaluation_files(wc, "per_image.csv"),
        predictions=lambda wc: evaluation_files(wc, "predictions.h5"),
        store=STORE,
    output:
        curves=seg_figure("metric_curves"),
        bars_dice=seg_figure("bars_dice"),
        bars_iou=seg_figure("bars_iou"),
        bars_acc=seg_figure("bars_acc"),
        examples=seg_figure("prediction_examples"),
        contours=seg_figure("contours"),
        inference=seg_figure("inference_time"),
        pdfs=[f"{SEG_DIR}/figures/{name}.pdf" for name in SEG_FIGURES],
    log:
        log_path("segmentation_figures", SEG_DIR),
    benchmark:
        bench_path("segmentation_figures", SEG_DIR)
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        cells=lambda wc: [c.wildcards for c in cells_of(wc)],
        subsets=lambda wc: experiment(wc)["evaluate_splits"],
        examples=lambda wc: experiment(wc)["figure_examples"],
        threshold=lambda wc: experiment(wc)["training"]["threshold"],
    script:
        "../scripts/segmentation_figures.py"


rule segmentation_vs_paper:
    input:
        infos=lambda wc: expand_cells(f"{MODEL_DIR}/train_info.json", wc),
        per_image=lambda wc: evaluation_files(wc, "per_image.csv"),
        timing=lambda wc: evaluation_files(wc, "timing.json"),
    output:
        table=seg_table("vs_paper", "vs_paper"),
        extra=multiext(f"{SEG_DIR}/tables/vs_paper", ".md", ".tex"),
    log:
        log_path("segmentation_vs_paper", SEG_DIR),
    benchmark:
        bench_path("segmentation_vs_paper", SEG_DIR)
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        cells=lambda wc: [c.wildcards for c in cells_of(wc)],
        subsets=lambda wc: experiment(wc)["evaluate_splits"],
        study=lambda wc: experiment(wc)["published"],
    script:
        "../scripts/segmentation_vs_paper.py"


rule compare_experiments:
    input:
        comparison_inputs,
    output:
        table=report(
            f"{COMPARISON_DIR}/table.csv",
            caption="../report/comparison.rst",
            category="Comparisons",
            labels={"comparison": "{comparison}", "item": "table"},
        ),
        extra=multiext(f"{COMPARISON_DIR}/table", ".md", ".tex"),
        figure=report(
            f"{COMPARISON_DIR}/bars.png",
            caption="../report/comparison.rst",
            category="Comparisons",
            labels={"comparison": "{comparison}", "item": "figure"},
        ),
        pdf=f"{COMPARISON_DIR}/bars.pdf",
    log:
        log_path("{comparison}", COMPARISONS_DIR),
    benchmark:
        bench_path("{comparison}", COMPARISONS_DIR)
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        cells=comparison_cells,
        metrics=lambda wc: config["comparisons"][wc.comparison]["metrics"],
    script:
        "../scripts/compare_experiments.py"
