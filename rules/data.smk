# Stage 1: embedded demo archives -> download (verified) -> unpack (safe) -> convert to the store.


rule demo_data:
    output:
        "resources/demo/pannuke/fold_1.zip",
        "resources/demo/pannuke/fold_2.zip",
        "resources/demo/pannuke/fold_3.zip",
        "resources/demo/dsb2018/stage1_train.zip",
        "resources/demo/nucrec/nucrec.zip",
    log:
        "resources/demo/logs/demo_data.log",
    benchmark:
        "resources/demo/benchmarks/demo_data.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        options=DEMO or {},
    script:
        "../scripts/demo_data.py"


rule download:
    input:
        download_source,
    output:
        "resources/{dataset}/download/{filename}",
    log:
        log_path("download_{filename}"),
    benchmark:
        bench_path("download_{filename}")
    retries: 2
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=512,
        runtime=240,
    params:
        url=lambda wc: file_entry(wc)["url"],
        source=lambda wc: file_entry(wc).get("source"),
        sha256=lambda wc: file_entry(wc).get("sha256"),
    script:
        "../scripts/download.py"


rule unpack:
    input:
        "resources/{dataset}/download/{archive}.zip",
    output:
        directory("resources/{dataset}/unpacked/{archive}"),
    log:
        log_path("unpack_{archive}"),
    benchmark:
        bench_path("unpack_{archive}")
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=60,
    script:
        "../scripts/unpack.py"


rule convert:
    input:
        unpacked_dirs,
    output:
        store="results/{dataset}/store.h5",
        summary="results/{dataset}/store_summary.json",
    log:
        log_path("convert"),
    benchmark:
        bench_path("convert")
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    params:
        format=lambda wc: DATASETS[wc.dataset]["format"],
    script:
        "../scripts/convert.py"
