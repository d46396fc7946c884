# Stage 5b: the robustness sweep (segmentation.<experiment>.robustness): every trained model on the
# test split under noise, blur, JPEG, brightness/contrast and stain change, then per experiment the
# degradation figure and the area-under-curve table that ranks the models by robustness.
from nucleiflow.paths import ROBUSTNESS_FIGURE, ROBUSTNESS_SWEEP, ROBUSTNESS_TABLE, figure_pdf, table_copies


rule robustness_sweep:
    input:
        model=f"{MODEL_DIR}/model.pt",
        store=STORE,
        split=experiment_split,
        clean=f"{EVAL_DIR}/test_per_image.csv",
        tuned=lambda wc: tuned_params(wc),  # nucleiflow.workflow.inputs
    output:
        ROBUSTNESS_SWEEP,
    log:
        log_path("robustness_{arch}_{encoder}_{reg}", SEG_DIR),
    benchmark:
        bench_path("robustness_{arch}_{encoder}_{reg}", SEG_DIR)
    conda:
        "../envs/train.yaml"
    threads: device_threads(gpu=2, cpu=1)
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    params:
        spec=model_spec,
        robustness=lambda wc: experiment(wc)["robustness"],
        postprocess=lambda wc: experiment(wc)["postprocess"],
    script:
        "../scripts/robustness_sweep.py"


rule robustness_report:
    input:
        lambda wc: expand_cells(ROBUSTNESS_SWEEP, wc),
    output:
        figure=report(
            ROBUSTNESS_FIGURE,
            caption="../report/robustness_figure.rst",
            category="Robustness",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "item": "degradation figure"},
        ),
        table=report(
            ROBUSTNESS_TABLE,
            caption="../report/robustness_table.rst",
            category="Robustness",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "item": "AUC table"},
        ),
        extra=[figure_pdf(ROBUSTNESS_FIGURE), *table_copies(ROBUSTNESS_TABLE)],
    log:
        log_path("robustness_report", SEG_DIR),
    benchmark:
        bench_path("robustness_report", SEG_DIR)
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        cells=lambda wc: [c.wildcards for c in cells_of(wc)],
        metrics=lambda wc: experiment(wc)["robustness"].get("metrics", ["dice", "aji"]),
    script:
        "../scripts/robustness_report.py"
