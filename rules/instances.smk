# Stage 6b: nuclei as objects. Per PanNuke-format experiment the benchmark's bPQ/mPQ by tissue (Gamper et
# al. 2020); per cross-validation experiment (segmentation.<name>.folds) every fold's test scores, their
# mean ± std across folds and the published results of other methods (nucleiflow.reporting.reference_results).
from functools import partial

from nucleiflow.paths import CV_FIGURE, CV_FOLD_SCORES, CV_TABLE, PANNUKE_PQ_TABLE, figure_pdf, table_copies
from nucleiflow.segmentation import instance_report as instances

# all_targets() (rules/common.smk) calls it without arguments
instance_targets = partial(instances.instance_targets, config, CROSS_VALIDATION)
PANNUKE_PQ_EXPERIMENTS = instances.pannuke_pq_experiments(config)


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
            f"{EVAL_DIR}/test_per_image.csv".format(**cell)
            for cell in instances.cross_validation_cells(config, CROSS_VALIDATION, wc.experiment)
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
        cells=lambda wc: instances.cross_validation_cells(config, CROSS_VALIDATION, wc.experiment),
        published=lambda wc: instances.cross_validation_published(config, CROSS_VALIDATION, wc.experiment),
    script:
        "../scripts/cross_validation_table.py"
