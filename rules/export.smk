# Sharing what the workflow trains: each selected model cell as a BioImage Model Zoo package (format 0.5),
# folder and zip, with its model card (segmentation.<experiment>.export). Any trained cell can be exported
# by naming its zip: snakemake results/<dataset>/<experiment>/export/<arch>/<encoder>/<reg>/bioimageio.zip
from nucleiflow.workflow.export import card_evaluation, check_export, export_inputs, export_settings
from nucleiflow.paths import EXPORT_CARD, EXPORT_PACKAGE, EXPORT_ZIP

try:
    check_export(config)
except ConfigError as err:
    raise WorkflowError(str(err)) from None


rule export_model:
    input:
        unpack(lambda wc: export_inputs(config, wc)),
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
        evaluation=lambda wc: card_evaluation(config, wc),
        settings=lambda wc: export_settings(config, wc.experiment),
    script:
        "../scripts/export_model.py"
