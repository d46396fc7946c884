# Sharing what the workflow trains: each selected model cell as a BioImage Model Zoo package (format 0.5),
# folder and zip, with its model card (segmentation.<experiment>.export). Any trained cell can be exported
# by naming its zip: snakemake results/<dataset>/<experiment>/export/<arch>/<encoder>/<reg>/bioimageio.zip
from nucleiflow.export.cells import check_export, export_settings, export_targets
from nucleiflow.paths import EXPORT_CARD, EXPORT_DIR, EXPORT_PACKAGE, EXPORT_ZIP

try:
    check_export(config)
except ConfigError as err:
    raise WorkflowError(str(err)) from None

TEST_PER_IMAGE = f"{EVAL_DIR}/test_per_image.csv"


def export_evaluation(wildcards):
    """The cell's test-split scores and its scores on other datasets, where the experiment computes them."""
    exp = experiment(wildcards)
    files = {}
    if "test" in exp["evaluate_splits"]:
        files["test"] = TEST_PER_IMAGE.format(**wildcards)
    for t in evaluate_on_targets(config, wildcards.experiment):
        files[f"cross_{t['dataset']}_{t['manifest']}_{t['subset']}"] = CROSS_EVAL.format(
            **wildcards, target=t["dataset"], manifest=t["manifest"], target_subset=t["subset"]
        )
    return files


def export_card_inputs(wildcards):
    """What the card quotes: the per-image tables, each with the command that makes it."""
    files = export_evaluation(wildcards)
    test = files.pop("test", None)
    cross = {}
    for key, path in files.items():
        _, dataset, manifest, subset = key.split("_", 3)
        cross[f"{dataset} ({subset if subset == 'all' else manifest + '/' + subset})"] = path
    return {"path": test, "command": f"snakemake {test}" if test else "", "cross": cross}


rule export_model:
    input:
        unpack(export_evaluation),
        model=f"{MODEL_DIR}/model.pt",
        info=f"{MODEL_DIR}/train_info.json",
        history=f"{MODEL_DIR}/history.csv",
        store=STORE,
        split=experiment_split,
        tuned=tuned_params,
    output:
        package=directory(EXPORT_PACKAGE),
        zip=EXPORT_ZIP,
        card=report(
            EXPORT_CARD,
            caption="../report/export_model_card.rst",
            category="Models",
            subcategory="{experiment}",
            labels={"model": "{arch}/{encoder}/{reg}", "file": "model card"},
        ),
    log:
        log_path("export_{arch}_{encoder}_{reg}", SEG_DIR),
    benchmark:
        bench_path("export_{arch}_{encoder}_{reg}", SEG_DIR)
    conda:
        "../envs/export.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        spec=model_spec,
        postprocess=lambda wc: experiment(wc)["postprocess"],
        evaluation=export_card_inputs,
        settings=lambda wc: export_settings(config, wc.experiment),
    script:
        "../scripts/export_model.py"
