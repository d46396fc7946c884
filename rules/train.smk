# Stage 4: one training job per experiment x model x regularization cell.
# Checkpoints live in checkpoints/ (not declared as outputs, so Snakemake keeps
# them when a killed job is re-run and training resumes from last.pt).


rule train_segmentation:
    input:
        store=STORE,
        split=experiment_split,
        pipeline=experiment_pipeline,
        weights=lambda wc: segmentation_weights_inputs(config, wc.experiment, wc.arch, wc.encoder),
    output:
        model=f"{MODEL_DIR}/model.pt",
        history=f"{MODEL_DIR}/history.csv",
        info=f"{MODEL_DIR}/train_info.json",
    log:
        log_path("train_{arch}_{encoder}_{reg}", SEG_DIR),
    benchmark:
        bench_path("train_{arch}_{encoder}_{reg}", SEG_DIR)
    # Trainings head the longest chains (evaluation, tuning, explanations, slides): started first, their
    # downstream jobs fill the other core beside the later trainings instead of queueing at the end.
    priority: 2
    conda:
        "../envs/train.yaml"
    threads: device_threads(gpu=8, cpu=1)
    resources:
        mem_mb=16000,
        runtime=24 * 60,
        gpu=1,
    params:
        spec=model_spec,
    script:
        "../scripts/train_segmentation.py"
