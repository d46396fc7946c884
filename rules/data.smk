# Stage 1: embedded demo archives -> download (verified) -> unpack (safe) -> convert to the store.


rule demo_data:
    output:
        f"{DEMO_DIR}/pannuke/fold_1.zip",
        f"{DEMO_DIR}/pannuke/fold_2.zip",
        f"{DEMO_DIR}/pannuke/fold_3.zip",
        f"{DEMO_DIR}/dsb2018/stage1_train.zip",
        f"{DEMO_DIR}/nucrec/nucrec.zip",
    log:
        log_path("demo_data", DEMO_DIR),
    benchmark:
        bench_path("demo_data", DEMO_DIR)
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


# A held file's mtime is ignored (ancient), here and where its link is read (download_archive, unpacked_dirs):
# a release copied again beside the project, same bytes, would otherwise re-run conversion and every training
# downstream (its sha256, when pinned, is checked at each link). Its readers go by the checksum file instead,
# written when download runs: a new `source:` or sha256 re-runs download, and with it them. A file:// URL keeps
# its mtime: the demo's archives are made by a rule, and a new one re-runs all.
rule download:
    input:
        ancient(held_source),
        local_url,
    output:
        file=DOWNLOAD,
        checksum=DOWNLOAD_CHECKSUM,
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
        archive=download_archive,
        verified=held_checksums,
    output:
        directory(UNPACKED),
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
        releases=unpacked_dirs,
        verified=held_checksums,
    output:
        store=STORE,
        summary=STORE_SUMMARY,
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
        options=lambda wc: converter_options(DATASETS[wc.dataset]),
    script:
        "../scripts/convert.py"
