# Stage 6: the segmentation studies' tables (CSV + Markdown + LaTeX) and figures (PNG + PDF).


# One tables rule and one figures rule per paper: outputs are named after the paper's tables and
# figures (nucleiflow.reporting.paper_index); experiments without `published:` keep generic names.
for _paper in PAPER_KEYS:
    _tables = table_names(_paper)
    _figures = figure_names(_paper)

    rule:
        name:
            f"segmentation_tables_{_paper}"
        input:
            infos=run_files("info"),
            per_image=run_files("per_image"),
            timing=run_files("timing"),
        output:
            **{key: seg_table(name, key) for key, name in _tables.items()},
            extra=[f"{SEG_DIR}/tables/{name}{ext}" for name in _tables.values() for ext in (".md", ".tex")],
        log:
            log_path("segmentation_tables", SEG_DIR),
        benchmark:
            bench_path("segmentation_tables", SEG_DIR)
        wildcard_constraints:
            experiment=experiments_of_paper(_paper),
        conda:
            "../envs/report.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            runs=evaluation_runs,
            subsets=lambda wc: experiment(wc)["evaluate_splits"],
            per_image_rows=lambda wc: experiment(wc)["per_image_rows"],
            study=lambda wc: experiment(wc)["published"],
        script:
            "../scripts/segmentation_tables.py"

    rule:
        name:
            f"segmentation_figures_{_paper}"
        input:
            histories=run_files("history"),
            per_image=run_files("per_image"),
            predictions=run_files("predictions"),
            # The residual U-Net study's Figure 4 shows predictions on training images.
            train_predictions=lambda wc, _keys=tuple(_figures): (
                expand_cells(f"{EVAL_DIR}/train_predictions.h5", wc) if "train_predictions" in _keys else []
            ),
            store=STORE,
        output:
            **{key: seg_figure(name, key.rstrip("0123456789").rstrip("_")) for key, name in _figures.items()},
            pdfs=[f"{SEG_DIR}/figures/{name}.pdf" for name in _figures.values()],
        log:
            log_path("segmentation_figures", SEG_DIR),
        benchmark:
            bench_path("segmentation_figures", SEG_DIR)
        wildcard_constraints:
            experiment=experiments_of_paper(_paper),
        conda:
            "../envs/report.yaml"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=20,
        params:
            runs=evaluation_runs,
            examples=lambda wc: experiment(wc)["figure_examples"],
            threshold=lambda wc: experiment(wc)["training"]["threshold"],
            study=lambda wc: experiment(wc)["published"],
        script:
            "../scripts/segmentation_figures.py"


rule segmentation_vs_paper:
    input:
        infos=run_files("info"),
        per_image=run_files("per_image"),
        timing=run_files("timing"),
    output:
        table=seg_table("vs_paper", "vs_paper"),
        extra=multiext(f"{SEG_DIR}/tables/vs_paper", ".md", ".tex"),
        index=report(
            f"{SEG_DIR}/paper_index.md",
            caption="../report/paper_index.rst",
            category="Segmentation",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "table": "paper_index"},
        ),
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
        runs=evaluation_runs,
        subsets=lambda wc: experiment(wc)["evaluate_splits"],
        study=lambda wc: experiment(wc)["published"],
        comparisons=experiment_comparisons,
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
