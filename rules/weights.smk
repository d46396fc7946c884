# Pretrained weights for offline compute nodes. On a login node (internet):
#   snakemake cache_weights --cores 1 [--configfile config/paper.yaml]
# downloads every encoder the config trains from pretrained weights (segmentation
# `training.encoder_weights: imagenet`, classification `cnn.pretrained: true`) into the
# Hugging Face cache ($HF_HOME/hub) and writes one marker per (arch, encoder).
# Both rules are local rules: under the SLURM executor they run where snakemake
# runs (the login node), never on an offline compute node.
# One job per marker, so adding an encoder to the config never rewrites the other
# markers (their newer mtime would make finished training jobs re-run).
from nucleiflow.pretrained import weights_for, weights_targets

WEIGHTS_DIR = "resources/weights"


rule cache_weights:
    input:
        markers=weights_targets(config),
    output:
        index=f"{WEIGHTS_DIR}/index.json",
    log:
        f"{WEIGHTS_DIR}/logs/cache_weights.log",
    benchmark:
        f"{WEIGHTS_DIR}/benchmarks/cache_weights.tsv"
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
        marker=f"{WEIGHTS_DIR}/{{arch}}/{{encoder}}.json",
    log:
        f"{WEIGHTS_DIR}/logs/{{arch}}_{{encoder}}.log",
    benchmark:
        f"{WEIGHTS_DIR}/benchmarks/{{arch}}_{{encoder}}.tsv"
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
