# Pretrained weights for offline compute nodes. On a login node (internet):
#   snakemake cache_weights --cores 1 [--configfile config/paper.yaml]
# downloads every encoder the config trains from pretrained weights (segmentation
# `training.encoder_weights: imagenet`, classification `cnn.pretrained: true`) into the
# Hugging Face cache ($HF_HOME/hub) and writes one marker per (arch, encoder).
# Both rules are local rules: under the SLURM executor they run where snakemake
# runs (the login node), never on an offline compute node.
# One job per marker, so adding an encoder to the config never rewrites the other
# markers (their newer mtime would make finished training jobs re-run).
from nucleiflow.workflow.weights import weights_for, weights_targets


rule cache_weights:
    input:
        markers=weights_targets(config),
    output:
        index=f"{WEIGHTS_DIR}/index.json",
    log:
        log_path("cache_weights", WEIGHTS_DIR),
    benchmark:
        bench_path("cache_weights", WEIGHTS_DIR)
    localrule: True
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/cache_weights.py"


rule cache_encoder_weights:
    output:
        marker=WEIGHTS_MARKER,
    log:
        log_path("{arch}_{encoder}", WEIGHTS_DIR),
    benchmark:
        bench_path("{arch}_{encoder}", WEIGHTS_DIR)
    localrule: True
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        weights=lambda wc: weights_for(config, wc.arch, wc.encoder),
    script:
        "../scripts/cache_weights.py"
