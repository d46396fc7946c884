# Input functions and targets of rules/predict.smk (your own images: inference.<name>;
# cross-dataset evaluation: segmentation.<experiment>.evaluate_on), and the tuned post-processing
# settings every use of a model reads (rules/evaluate.smk, rules/robustness.smk, rules/predict.smk).
from nucleiflow.catalog import model_label
from nucleiflow.config import (
    ALL_IMAGES,
    evaluate_on_targets,
    inference_cell,
    inference_package,
    inference_source,
    tunes_postprocess,
)
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
    POSTPROCESS_PARAMS,
    figure_pdf,
    table_copies,
)

INFERENCE = config.get("inference", {})


wildcard_constraints:
    name=r"[A-Za-z0-9_]+",
    target=r"[a-z0-9_]+",
    manifest=r"[A-Za-z0-9_]+",
    target_subset=r"train|val|test|all",


CELL_KEYS = ("dataset", "experiment", "arch", "encoder", "reg")


def experiment_tunes(name):
    """Whether experiment `name` tunes its post-processing on the validation split."""
    exp = SEGMENTATION[name]
    return tunes_postprocess(exp["training"].get("target", "binary"), exp.get("postprocess", {}))


def tuned_params_of(cell):
    """The tuned settings file of a model cell (a dict of CELL_KEYS); nothing when its experiment does not tune."""
    if not experiment_tunes(cell["experiment"]):
        return []
    return [POSTPROCESS_PARAMS.format(**{key: cell[key] for key in CELL_KEYS})]


def tuned_params(wildcards):
    return tuned_params_of({key: getattr(wildcards, key) for key in CELL_KEYS})


def inference_model(wildcards):
    """The named model's weights: an exported package (zip or folder) as named, or the cell's model.pt."""
    package = inference_package(config, wildcards.name)
    if package is not None:
        return package
    return f"{MODEL_DIR}/model.pt".format(**inference_cell(config, wildcards.name).wildcards)


def inference_images(wildcards):
    """The store of the named dataset, or the folder itself."""
    dataset = inference_source(config, wildcards.name)
    return STORE.format(dataset=dataset) if dataset else INFERENCE[wildcards.name]["images"]


def inference_spec(wildcards):
    """The cell's spec; none for a package, which carries its own."""
    if inference_package(config, wildcards.name) is not None:
        return None
    return cell_spec(config, **inference_cell(config, wildcards.name).wildcards).to_dict()


def inference_tuned_params(wildcards):
    """The named model's tuned post-processing settings, if its experiment tunes (a package carries its own)."""
    if inference_package(config, wildcards.name) is not None:
        return []
    return tuned_params_of(inference_cell(config, wildcards.name).wildcards)


def inference_postprocess(wildcards):
    if inference_package(config, wildcards.name) is not None:
        return None
    return SEGMENTATION[inference_cell(config, wildcards.name).experiment]["postprocess"]


def cross_manifest(wildcards):
    if wildcards.target_subset == ALL_IMAGES:
        return []
    return [SPLIT.format(dataset=wildcards.target, split=wildcards.manifest)]


def cross_runs(wildcards):
    """The experiment's own test scores (if evaluated), then each model on each evaluate_on target."""
    exp = experiment(wildcards)
    home = f"{exp['dataset']} ({exp['split']})"
    runs = []
    for cell in cells_of(wildcards):
        label = model_label(cell.arch, cell.encoder, cell.reg)
        if "test" in exp["evaluate_splits"]:
            path = f"{EVAL_DIR}/test_per_image.csv".format(**cell.wildcards)
            runs.append({"model": label, "trained_on": home, "tested_on": f"{home}/test", "path": path})
        for t in evaluate_on_targets(config, wildcards.experiment):
            path = CROSS_EVAL.format(
                **cell.wildcards, target=t["dataset"], manifest=t["manifest"], target_subset=t["subset"]
            )
            where = t["subset"] if t["subset"] == ALL_IMAGES else f"{t['manifest']}/{t['subset']}"
            runs.append({"model": label, "trained_on": home, "tested_on": f"{t['dataset']} ({where})", "path": path})
    return runs


def predict_targets():
    """The final targets of this file: each inference's summary, each experiment's cross-dataset table."""
    targets = []
    for name in INFERENCE:
        targets += [INFER_TABLE.format(name=name), INFER_FIGURE.format(name=name)]
    for name, exp in SEGMENTATION.items():
        if exp.get("evaluate_on"):
            base = {"dataset": exp["dataset"], "experiment": name}
            targets += [CROSS_TABLE.format(**base), CROSS_FIGURE.format(**base)]
    return targets
