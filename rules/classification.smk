# The nucleus vs micronucleus study: split -> offline augmentation -> classic ML grid and CNNs -> tables, figures.


rule classification_split:
    input:
        class_root,
    output:
        f"{CLS_DIR}/split.csv",
    params:
        test_fraction=lambda wc: classification(wc)["test_fraction"],
        seed=config["seed"],
    log:
        f"{CLS_DIR}/logs/split.log",
    benchmark:
        f"{CLS_DIR}/benchmarks/split.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/classify.yaml"
    script:
        "../scripts/classification_split.py"


rule classification_augment:
    input:
        root=class_root,
        split=f"{CLS_DIR}/split.csv",
    output:
        manifest=f"{CLS_DIR}/augmented/manifest.csv",
        images=directory(f"{CLS_DIR}/augmented/images"),
    params:
        size=lambda wc: classification(wc)["augmented_size"],
        # stored at the larger of the feature and CNN sizes; each consumer resizes down
        image_size=lambda wc: max(classification(wc)["image_size"], classification(wc)["cnn"]["image_size"]),
        seed=config["seed"],
    log:
        f"{CLS_DIR}/logs/augment.log",
    benchmark:
        f"{CLS_DIR}/benchmarks/augment.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/classify.yaml"
    script:
        "../scripts/classification_augment.py"


rule classic_ml:
    input:
        root=class_root,
        split=f"{CLS_DIR}/split.csv",
        augmented=augmented_manifest,
    output:
        f"{CLS_DIR}/classic_ml/{{variant}}.csv",
    params:
        classifiers=lambda wc: classification(wc).get("classifiers"),
        image_size=lambda wc: classification(wc)["image_size"],
        seed=config["seed"],
    log:
        f"{CLS_DIR}/logs/classic_ml_{{variant}}.log",
    benchmark:
        f"{CLS_DIR}/benchmarks/classic_ml_{{variant}}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/classify.yaml"
    script:
        "../scripts/classic_ml.py"


rule train_cnn:
    input:
        root=class_root,
        split=f"{CLS_DIR}/split.csv",
        augmented=augmented_manifest,
    output:
        f"{CLS_DIR}/cnn/{{model}}_{{variant}}_history.csv",
    params:
        cnn=lambda wc: classification(wc)["cnn"],
        seed=config["seed"],
    log:
        f"{CLS_DIR}/logs/cnn_{{model}}_{{variant}}.log",
    benchmark:
        f"{CLS_DIR}/benchmarks/cnn_{{model}}_{{variant}}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=12 * 60,
        gpu=1,
    conda:
        "../envs/classify.yaml"
    script:
        "../scripts/train_cnn.py"


rule classification_tables:
    input:
        classic=expand(f"{CLS_DIR}/classic_ml/{{variant}}.csv", variant=("base", "augmented"), allow_missing=True),
        histories=cnn_histories,
    output:
        classic=cls_report(f"{CLS_DIR}/tables/classic_ml.csv", "classic_ml", "table"),
        cnn=cls_report(f"{CLS_DIR}/tables/cnn_epochs.csv", "cnn_epochs", "table"),
        extra=multiext(f"{CLS_DIR}/tables/classic_ml", ".md", ".tex")
        + multiext(f"{CLS_DIR}/tables/cnn_epochs", ".md", ".tex"),
    params:
        report_epochs=lambda wc: classification(wc)["cnn"]["report_epochs"],
    log:
        f"{CLS_DIR}/logs/tables.log",
    benchmark:
        f"{CLS_DIR}/benchmarks/tables.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/classification_tables.py"


rule classification_figures:
    input:
        classic=expand(f"{CLS_DIR}/classic_ml/{{variant}}.csv", variant=("base", "augmented"), allow_missing=True),
        histories=cnn_histories,
    output:
        bars=cls_report(f"{CLS_DIR}/figures/classifier_comparison.png", "classifier_comparison", "figure"),
        curves=cls_report(f"{CLS_DIR}/figures/cnn_curves.png", "cnn_curves", "figure"),
        pdfs=multiext(f"{CLS_DIR}/figures/classifier_comparison", ".pdf")
        + multiext(f"{CLS_DIR}/figures/cnn_curves", ".pdf"),
    log:
        f"{CLS_DIR}/logs/figures.log",
    benchmark:
        f"{CLS_DIR}/benchmarks/figures.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/classification_figures.py"
