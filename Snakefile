# Nuclei segmentation and classification studies, from raw public data to every table and figure.
# The stages live in rules/*.smk; the logic in the nucleiflow package (src/); see README.md.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/weights.smk"
include: "rules/data.smk"
include: "rules/split.smk"
include: "rules/eda.smk"
include: "rules/augment.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"
include: "rules/classification.smk"


rule all:
    input:
        all_targets(),
    default_target: True
