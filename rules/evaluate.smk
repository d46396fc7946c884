# Stage 5: inference on the test split (and train/val for the train/val tables).


rule evaluate_segmentation:
    input:
        model=f"{MODEL_DIR}/model.pt",
        store=STORE,
        split=experiment_split,
    output:
        per_image=f"{EVAL_DIR}/{{subset}}_per_image.csv",
        predictions=f"{EVAL_DIR}/{{subset}}_predictions.h5",
        timing=f"{EVAL_DIR}/{{subset}}_timing.json",
    log:
        log_path("evaluate_{arch}_{encoder}_{reg}_{subset}", SEG_DIR),
    benchmark:
        bench_path("evaluate_{arch}_{encoder}_{reg}_{subset}", SEG_DIR)
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=1,
    params:
        spec=model_spec,
        postprocess=lambda wc: experiment(wc)["postprocess"],
    script:
        "../scripts/evaluate_segmentation.py"
