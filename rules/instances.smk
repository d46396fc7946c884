# Stage 6b: nuclei as objects. Per PanNuke-format experiment the benchmark's bPQ/mPQ by tissue (Gamper et
# al. 2020); per cross-validation experiment (segmentation.<name>.folds) every fold's test scores, their
# mean ± std across folds and the published results of other methods (nucleiflow.reporting.reference_results).
from nucleiflow.paths import (
    CV_FIGURE,
    CV_FOLD_SCORES,
    CV_TABLE,
    PANNUKE_PQ_TABLE,
    TYPED_PQ_TABLE,
    figure_pdf,
    table_copies,
)
from nucleiflow.workflow.cells import (
    cross_validation_cells,
    cross_validation_published,
    pannuke_pq_experiments,
)
from nucleiflow.workflow.targets import typed_pq_experiments

PANNUKE_PQ_EXPERIMENTS = pannuke_pq_experiments(config)
TYPED_PQ_EXPERIMENTS = typed_pq_experiments(config)


rule pannuke_pq_table:
    input:
        per_image=lambda wc: expand_cells(f"{EVAL_DIR}/test_per_image.csv", wc),
    output:
        table=report(
            PANNUKE_PQ_TABLE,
            caption="../report/pannuke_pq.rst",
            category="Nuclei as objects",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "item": "bPQ/mPQ by tissue"},
        ),
        extra=table_copies(PANNUKE_PQ_TABLE),
    log:
        log_path("pannuke_pq_table", SEG_DIR),
    benchmark:
        bench_path("pannuke_pq_table", SEG_DIR)
    wildcard_constraints:
        experiment="|".join(re.escape(n) for n in PANNUKE_PQ_EXPERIMENTS) or "(?!)",
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        cells=lambda wc: [c.wildcards for c in cells_of(wc)],
    script:
        "../scripts/pannuke_pq_table.py"


rule cross_validation_table:
    input:
        per_image=lambda wc: [
            f"{EVAL_DIR}/test_per_image.csv".format(**cell) for cell in cross_validation_cells(config, wc.experiment)
        ],
    output:
        table=report(
            CV_TABLE,
            caption="../report/cross_validation_table.rst",
            category="Nuclei as objects",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "item": "cross-validation table"},
        ),
        figure=report(
            CV_FIGURE,
            caption="../report/cross_validation_figure.rst",
            category="Nuclei as objects",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "item": "cross-validation figure"},
        ),
        folds=CV_FOLD_SCORES,
        extra=[*table_copies(CV_TABLE), figure_pdf(CV_FIGURE)],
    log:
        log_path("cross_validation", SEG_DIR),
    benchmark:
        bench_path("cross_validation", SEG_DIR)
    wildcard_constraints:
        experiment="|".join(re.escape(n) for n in CROSS_VALIDATION) or "(?!)",
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        cells=lambda wc: cross_validation_cells(config, wc.experiment),
        published=lambda wc: cross_validation_published(config, wc.experiment),
    script:
        "../scripts/cross_validation_table.py"


# Data whose nucleus types the config names (CoNSeP's .mat, QuPath exports): PQ per type by name, and mPQ.
rule typed_pq_table:
    input:
        per_image=lambda wc: expand_cells(f"{EVAL_DIR}/test_per_image.csv", wc),
        store=STORE,
    output:
        table=report(
            TYPED_PQ_TABLE,
            caption="../report/typed_pq.rst",
            category="Nuclei as objects",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "item": "PQ per nucleus type"},
        ),
        extra=table_copies(TYPED_PQ_TABLE),
    log:
        log_path("typed_pq_table", SEG_DIR),
    benchmark:
        bench_path("typed_pq_table", SEG_DIR)
    wildcard_constraints:
        experiment="|".join(re.escape(n) for n in TYPED_PQ_EXPERIMENTS) or "(?!)",
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        cells=lambda wc: [c.wildcards for c in cells_of(wc)],
    script:
        "../scripts/typed_pq_table.py"
