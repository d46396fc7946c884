# Your own images: predictions of a trained model (inference.<name>) and cross-dataset
# evaluation of an experiment's models (segmentation.<experiment>.evaluate_on).
# Input functions: nucleiflow.workflow.inputs (bound in rules/predict_common.smk).


rule demo_cells:
    output:
        directory(DEMO_CELLS),
    log:
        log_path("demo_cells", DEMO_DIR),
    benchmark:
        bench_path("demo_cells", DEMO_DIR)
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        options={"n_images": 4, "n_masked": 2, "seed": (DEMO or {}).get("seed", 7) + 1000},
    script:
        "../scripts/demo_cells.py"


rule predict:
    input:
        model=inference_model,
        images=inference_images,
        tuned=inference_tuned_params,
    output:
        predictions=directory(INFER_PREDICTIONS),
        images=INFER_IMAGES,
        nuclei=INFER_NUCLEI,
    log:
        log_path("predict", INFER_DIR),
    benchmark:
        bench_path("predict", INFER_DIR)
    conda:
        "../envs/train.yaml"
    threads: device_threads(gpu=2, cpu=1)
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=1,
    params:
        spec=inference_spec,
        postprocess=inference_postprocess,
        type_names=inference_type_names,
    script:
        "../scripts/predict_images.py"


rule inference_summary:
    input:
        images=INFER_IMAGES,
        nuclei=INFER_NUCLEI,
    output:
        table=report(
            INFER_TABLE,
            caption="../report/inference_summary.rst",
            category="Your images",
            subcategory="{name}",
            labels={"inference": "{name}", "table": "summary"},
        ),
        figure=report(
            INFER_FIGURE,
            caption="../report/inference_figure.rst",
            category="Your images",
            subcategory="{name}",
            labels={"inference": "{name}", "figure": "summary"},
        ),
        extra=[*table_copies(INFER_TABLE), figure_pdf(INFER_FIGURE)],
    log:
        log_path("inference_summary", INFER_DIR),
    benchmark:
        bench_path("inference_summary", INFER_DIR)
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        model=lambda wc: INFERENCE[wc.name]["model"],
    script:
        "../scripts/inference_summary.py"


rule evaluate_cross:
    input:
        model=f"{MODEL_DIR}/model.pt",
        store=STORE.format(dataset="{target}"),
        manifest=cross_manifest,
        tuned=tuned_params,
    output:
        CROSS_EVAL,
    log:
        log_path("evaluate_{arch}_{encoder}_{reg}_on_{target}_{manifest}_{target_subset}", SEG_DIR),
    benchmark:
        bench_path("evaluate_{arch}_{encoder}_{reg}_on_{target}_{manifest}_{target_subset}", SEG_DIR)
    conda:
        "../envs/train.yaml"
    threads: device_threads(gpu=2, cpu=1)
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=1,
    params:
        spec=model_spec,
        postprocess=lambda wc: experiment(wc)["postprocess"],
    script:
        "../scripts/evaluate_cross.py"


rule cross_dataset:
    input:
        per_image=lambda wc: [run["path"] for run in cross_runs(wc)],
    output:
        table=report(
            CROSS_TABLE,
            caption="../report/cross_dataset_table.rst",
            category="Segmentation",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "table": "cross_dataset"},
        ),
        figure=report(
            CROSS_FIGURE,
            caption="../report/cross_dataset_figure.rst",
            category="Segmentation",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "figure": "cross_dataset"},
        ),
        extra=[*table_copies(CROSS_TABLE), figure_pdf(CROSS_FIGURE)],
    log:
        log_path("cross_dataset", SEG_DIR),
    benchmark:
        bench_path("cross_dataset", SEG_DIR)
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        runs=lambda wc: [{k: v for k, v in run.items() if k != "path"} for run in cross_runs(wc)],
    script:
        "../scripts/cross_dataset.py"
