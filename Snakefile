# Nuclei segmentation and classification studies, from raw public data to every table and figure.
# The stages live in rules/*.smk; the logic in the nucleiflow package (src/); see README.md.
from snakemake.utils import min_version

min_version("9.0")


# The run's configuration is exactly one file: the one named with --configfile, or
# the demo (config.yaml) when none is named. Snakemake merges a configfile directive
# with --configfile key by key, so the demo is only read when nothing else is given;
# cluster jobs receive the run's --configfiles and therefore read the same file.
if not workflow.overwrite_configfiles:

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
include: "rules/instances.smk"
include: "rules/explain.smk"
include: "rules/robustness.smk"
include: "rules/predict_common.smk"
include: "rules/predict.smk"
include: "rules/slides_common.smk"
include: "rules/slides.smk"
include: "rules/export.smk"
include: "rules/report.smk"
include: "rules/classification.smk"


rule all:
    default_target: True
    input:
        all_targets(),
