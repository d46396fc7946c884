# The classification study: class folders (NucRec, or nucleus crops cut from a PanNuke store) -> split
# -> offline augmentation -> classic ML grid and CNNs -> Tables I-VI beside the paper, Figure 4.
from nucleiflow.workflow.classification import (
    CLASSIC_TABLES,
    CLASSIFIER_FIGURE,
    COUNTS_TABLE,
    FIGURE4,
    FIGURE4_AVERAGE,
    PAPER_INDEX,
    cnn_history_file,
    experiment_class_names,
    published_study,
)

CNN_TABLE = f"{CLS_DIR}/tables/table{{number}}_{{model}}_{{variant}}"
CLASSIC_TABLE_FILES = [
    f"{CLS_DIR}/tables/{name}{ext}"
    for name in [*CLASSIC_TABLES.values(), *(f"{t}_vs_paper" for t in CLASSIC_TABLES.values()), COUNTS_TABLE]
    for ext in (".md", ".tex")
]


rule pannuke_crops:
    input:
        store=STORE,
    output:
        directory(f"{CLS_DIR}/crops"),
    log:
        log_path("pannuke_crops", CLS_DIR),
    benchmark:
        bench_path("pannuke_crops", CLS_DIR)
    conda:
        "../envs/classify.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        crops=lambda wc: classification(wc)["crops"],
        seed=config["seed"],
    script:
        "../scripts/pannuke_crops.py"


rule classification_split:
    input:
        root=class_root,
    output:
        f"{CLS_DIR}/split.csv",
    log:
        log_path("split", CLS_DIR),
    benchmark:
        bench_path("split", CLS_DIR)
    conda:
        "../envs/classify.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        test_fraction=lambda wc: classification(wc)["test_fraction"],
        class_names=lambda wc: list(experiment_class_names(classification(wc))),
        seed=config["seed"],
    script:
        "../scripts/classification_split.py"


rule classification_augment:
    input:
        root=class_root,
        split=f"{CLS_DIR}/split.csv",
    output:
        manifest=f"{CLS_DIR}/augmented/manifest.csv",
        images=directory(f"{CLS_DIR}/augmented/images"),
    log:
        log_path("augment", CLS_DIR),
    benchmark:
        bench_path("augment", CLS_DIR)
    conda:
        "../envs/classify.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        size=lambda wc: classification(wc)["augmented_size"],
        # stored at the larger of the feature and CNN sizes; each consumer resizes down
        image_size=lambda wc: max(classification(wc)["image_size"], classification(wc)["cnn"]["image_size"]),
        class_names=lambda wc: list(experiment_class_names(classification(wc))),
        seed=config["seed"],
    script:
        "../scripts/classification_augment.py"


# The eleven classifiers run in parallel over the rule's threads (one joblib worker each).
rule classic_ml:
    input:
        root=class_root,
        split=f"{CLS_DIR}/split.csv",
        augmented=augmented_manifest,
    output:
        f"{CLS_DIR}/classic_ml/{{variant}}.csv",
    log:
        log_path("classic_ml_{variant}", CLS_DIR),
    benchmark:
        bench_path("classic_ml_{variant}", CLS_DIR)
    conda:
        "../envs/classify.yaml"
    threads: 8
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        classifiers=lambda wc: classification(wc).get("classifiers"),
        image_size=lambda wc: classification(wc)["image_size"],
        class_names=lambda wc: list(experiment_class_names(classification(wc))),
        seed=config["seed"],
    script:
        "../scripts/classic_ml.py"


rule train_cnn:
    input:
        root=class_root,
        split=f"{CLS_DIR}/split.csv",
        augmented=augmented_manifest,
        # pretrained models: the marker of `snakemake cache_weights` (the weights are in the local cache)
        weights=lambda wc: cnn_weights_inputs(config, wc.experiment, wc.model),
    output:
        CNN_HISTORY,
    log:
        log_path("cnn_{model}_{variant}", CLS_DIR),
    benchmark:
        bench_path("cnn_{model}_{variant}", CLS_DIR)
    priority: 2
    conda:
        "../envs/classify.yaml"
    threads: device_threads(gpu=8, cpu=1)
    resources:
        mem_mb=8000,
        runtime=12 * 60,
        gpu=1,
    params:
        cnn=lambda wc: classification(wc)["cnn"],
        class_names=lambda wc: list(experiment_class_names(classification(wc))),
        seed=config["seed"],
    script:
        "../scripts/train_cnn.py"


# Tables I (base) and II (augmented), each beside the paper, and the images per class.
rule classification_tables:
    input:
        base=f"{CLS_DIR}/classic_ml/base.csv",
        augmented=f"{CLS_DIR}/classic_ml/augmented.csv",
        split=f"{CLS_DIR}/split.csv",
        manifest=f"{CLS_DIR}/augmented/manifest.csv",
    output:
        base=cls_report(f"{CLS_DIR}/tables/{CLASSIC_TABLES['base']}.csv", CLASSIC_TABLES["base"], "table"),
        augmented=cls_report(
            f"{CLS_DIR}/tables/{CLASSIC_TABLES['augmented']}.csv", CLASSIC_TABLES["augmented"], "table"
        ),
        base_vs_paper=cls_report(
            f"{CLS_DIR}/tables/{CLASSIC_TABLES['base']}_vs_paper.csv",
            f"{CLASSIC_TABLES['base']}_vs_paper",
            "table",
        ),
        augmented_vs_paper=cls_report(
            f"{CLS_DIR}/tables/{CLASSIC_TABLES['augmented']}_vs_paper.csv",
            f"{CLASSIC_TABLES['augmented']}_vs_paper",
            "table",
        ),
        counts=cls_report(f"{CLS_DIR}/tables/{COUNTS_TABLE}.csv", COUNTS_TABLE, "table"),
        extra=CLASSIC_TABLE_FILES,
    log:
        log_path("tables", CLS_DIR),
    benchmark:
        bench_path("tables", CLS_DIR)
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        class_names=lambda wc: list(experiment_class_names(classification(wc))),
        study=lambda wc: published_study(classification(wc)),
    script:
        "../scripts/classification_tables.py"


# Tables III-VI: one per configured CNN run, numbered as in the paper (table3_small_cnn_base ... table6_...).
rule cnn_epoch_table:
    input:
        # the table number must be the run's (table3_small_cnn_base, ...): checked while the DAG is built
        history=lambda wc: "{}/{}".format(CLS_DIR.format(**wc), cnn_history_file(wc.number, wc.model, wc.variant)),
    output:
        table=cls_report(f"{CNN_TABLE}.csv", "cnn_epoch_table", "table"),
        vs_paper=cls_report(f"{CNN_TABLE}_vs_paper.csv", "cnn_epoch_table_vs_paper", "table"),
        extra=multiext(CNN_TABLE, ".md", ".tex") + multiext(f"{CNN_TABLE}_vs_paper", ".md", ".tex"),
    log:
        log_path("table{number}_{model}_{variant}", CLS_DIR),
    benchmark:
        bench_path("table{number}_{model}_{variant}", CLS_DIR)
    wildcard_constraints:
        number="[3-6]",
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        report_epochs=lambda wc: classification(wc)["cnn"]["report_epochs"],
        study=lambda wc: published_study(classification(wc)),
    script:
        "../scripts/classification_tables.py"


# The classifier comparison, Figure 4 (training/validation accuracy, precision, recall and AUC of every CNN run),
# its average accuracies beside the paper's, and the study's paper index.
rule classification_figures:
    input:
        base=f"{CLS_DIR}/classic_ml/base.csv",
        augmented=f"{CLS_DIR}/classic_ml/augmented.csv",
        histories=cnn_histories,
    output:
        bars=cls_report(f"{CLS_DIR}/figures/{CLASSIFIER_FIGURE}.png", CLASSIFIER_FIGURE, "figure"),
        figure4=cls_report(f"{CLS_DIR}/figures/{FIGURE4}.png", FIGURE4, "figure"),
        pdfs=[f"{CLS_DIR}/figures/{name}.pdf" for name in (CLASSIFIER_FIGURE, FIGURE4)],
        average=cls_report(f"{CLS_DIR}/tables/{FIGURE4_AVERAGE}.csv", FIGURE4_AVERAGE, "table"),
        average_extra=multiext(f"{CLS_DIR}/tables/{FIGURE4_AVERAGE}", ".md", ".tex"),
        index=cls_report(f"{CLS_DIR}/{PAPER_INDEX}", "paper_index", "table"),
    log:
        log_path("figures", CLS_DIR),
    benchmark:
        bench_path("figures", CLS_DIR)
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        study=lambda wc: published_study(classification(wc)),
    script:
        "../scripts/classification_figures.py"
