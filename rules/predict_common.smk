# Input functions of rules/predict.smk (your own images: inference.<name>; cross-dataset evaluation:
# segmentation.<experiment>.evaluate_on), and the tuned post-processing settings every use of a model
# reads (rules/evaluate.smk, rules/robustness.smk, rules/predict.smk); nucleiflow.workflow.inputs holds them.
from nucleiflow.paths import (
    CROSS_EVAL,
    CROSS_FIGURE,
    CROSS_TABLE,
    DEMO_CELLS,
    INFER_DIR,
    INFER_FIGURE,
    INFER_IMAGES,
    INFER_NUCLEI,
    INFER_PREDICTIONS,
    INFER_TABLE,
    figure_pdf,
    table_copies,
)

INFERENCE = config.get("inference", {})


wildcard_constraints:
    name=r"[A-Za-z0-9_]+",
    target=r"[a-z0-9_]+",
    manifest=r"[A-Za-z0-9_]+",
    target_subset=r"train|val|test|all",


tuned_params_of = INPUTS.tuned_params_of
tuned_params = INPUTS.tuned_params
inference_model = INPUTS.inference_model
inference_images = INPUTS.inference_images
inference_spec = INPUTS.inference_spec
inference_tuned_params = INPUTS.inference_tuned_params
inference_postprocess = INPUTS.inference_postprocess
inference_type_names = INPUTS.inference_type_names
cross_manifest = INPUTS.cross_manifest
cross_runs = INPUTS.cross_runs
