# Stage 5: inference on the test split (and train/val for the train/val tables). Experiments whose
# post-processing is tuned (`postprocess.tune`; by default the contour and hv targets) first choose
# their watershed settings on the validation split (rule tune_postprocess); every later use of the
# model (evaluation, robustness sweep, cross-dataset evaluation, your own images) reads them
# (input function `tuned_params`: nucleiflow.workflow.inputs, called when the DAG is built).
from nucleiflow.paths import POSTPROCESS_PARAMS


rule tune_postprocess:
    input:
        model=f"{MODEL_DIR}/model.pt",
        store=STORE,
        split=experiment_split,
    output:
        POSTPROCESS_PARAMS,
    log:
        log_path("tune_postprocess_{arch}_{encoder}_{reg}", SEG_DIR),
    benchmark:
        bench_path("tune_postprocess_{arch}_{encoder}_{reg}", SEG_DIR)
    priority: 1
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
        "../scripts/tune_postprocess.py"


rule evaluate_segmentation:
    input:
        model=f"{MODEL_DIR}/model.pt",
        store=STORE,
        split=experiment_split,
        tuned=lambda wc: tuned_params(wc),
    output:
        per_image=f"{EVAL_DIR}/{{subset}}_per_image.csv",
        predictions=f"{EVAL_DIR}/{{subset}}_predictions.h5",
        timing=f"{EVAL_DIR}/{{subset}}_timing.json",
    log:
        log_path("evaluate_{arch}_{encoder}_{reg}_{subset}", SEG_DIR),
    benchmark:
        bench_path("evaluate_{arch}_{encoder}_{reg}_{subset}", SEG_DIR)
    priority: 1
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
        "../scripts/evaluate_segmentation.py"
