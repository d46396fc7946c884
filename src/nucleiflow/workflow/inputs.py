"""The rules' input and params functions, bound to one config: `Inputs(config).<function>(wildcards)`.

Snakemake calls an input or params function with the job's wildcards only, so every function here is a
method of `Inputs`, which holds the (schema-validated, fold-expanded) config; rules/common.smk binds one
`Inputs` and names its methods for the rules. Params are plain dicts and lists (Snakemake compares their
repr to decide re-runs).
"""

from __future__ import annotations

import re
from pathlib import Path

from nucleiflow.catalog import model_label
from nucleiflow.config import ALL_IMAGES, ModelCell
from nucleiflow.download import resolve_local
from nucleiflow.paths import (
    CLS_DIR,
    CNN_HISTORY,
    CROSS_EVAL,
    DOWNLOAD,
    DOWNLOAD_CHECKSUM,
    EVAL_DIR,
    MODEL_DIR,
    PIPELINE,
    POSTPROCESS_PARAMS,
    SPLIT,
    STORE,
    UNPACKED,
)
from nucleiflow.reporting.paper_index import paper_key
from nucleiflow.workflow.cells import (
    cell_augmentation,
    cell_type_names,
    evaluate_on_targets,
    experiment_tunes,
    inference_cell,
    inference_package,
    inference_source,
    model_spec,
    segmentation_cells,
)
from nucleiflow.workflow.checks import is_folder_entry

CELL_KEYS = ("dataset", "experiment", "arch", "encoder", "reg")


def cell_of(wildcards) -> dict:
    """The model cell (CELL_KEYS) of a job's wildcards."""
    return {key: getattr(wildcards, key) for key in CELL_KEYS}


# The evaluate stage's files of one model and split, by the kind the report package reads them as.
EVALUATION_FILES = {"per_image": "per_image.csv", "timing": "timing.json", "predictions": "predictions.h5"}


class Inputs:
    """Input and params functions of the rules, each taking a job's wildcards."""

    def __init__(self, config: dict, ancient=lambda path: path):
        """`ancient` flags an input whose date Snakemake must ignore (rules/common.smk passes snakemake's)."""
        self.config = config
        self.ancient = ancient

    # --- data ----------------------------------------------------------------------------------
    def file_entry(self, wildcards) -> dict:
        return self.config["datasets"][wildcards.dataset]["files"][wildcards.filename]

    def held_source(self, wildcards) -> list[str]:
        """A file the user holds (`source:`): an input, so a missing one is named before any job runs."""
        source = self.file_entry(wildcards).get("source")
        return [str(source)] if source else []

    def local_url(self, wildcards) -> list[str]:
        """A file:// URL or a path in `url:` (no `source:`) is an input, so a rule can make it (the demo's)."""
        entry = self.file_entry(wildcards)
        local = None if entry.get("source") else resolve_local(entry["url"])
        return [str(local)] if local is not None else []

    def downloaded(self, dataset: str, name: str) -> str:
        """A downloaded file as its consumer's input; a held file's is ancient, as download's own input is.

        download links a held file (`source:`), and Snakemake dates a link by its target: a release copied
        again beside the project (same bytes, newer date) would otherwise re-run unpack, conversion and every
        training downstream, although download itself does not re-run.
        """
        path = DOWNLOAD.format(dataset=dataset, filename=name)
        return self.ancient(path) if self._is_held(dataset, name) else path

    def _is_held(self, dataset: str, name: str) -> bool:
        """Whether the user holds this release file (`source:`): download links it instead of fetching it."""
        return bool(self.config["datasets"][dataset]["files"].get(name, {}).get("source"))

    def held_checksums(self, wildcards) -> list[str]:
        """The checksum files of the held files whose links a job reads (unpack: its archive; convert: a .csv).

        Their dates stand in for the links' (ancient, see `downloaded`): written when download runs, so a new
        `source:` or sha256 re-runs the readers, as a new download would by its date.
        """
        files = self.config["datasets"][wildcards.dataset]["files"]
        archive = getattr(wildcards, "archive", None)
        names = [f"{archive}.zip"] if archive else [name for name in files if name.endswith(".csv")]
        return [
            DOWNLOAD_CHECKSUM.format(dataset=wildcards.dataset, filename=name)
            for name in names
            if self._is_held(wildcards.dataset, name)
        ]

    def download_archive(self, wildcards) -> str:
        """unpack's input: the downloaded `<archive>.zip`."""
        return self.downloaded(wildcards.dataset, f"{wildcards.archive}.zip")

    def converter_input(self, dataset: str, name: str, entry: dict) -> str:
        """What the converter reads for one file: a folder in place, a .csv as downloaded, else the unpacked archive."""
        if is_folder_entry(name):  # image_folders: a local folder, never copied
            return str(resolve_local(entry["url"]))
        if name.endswith(".csv"):  # DSB2018's stage-1 solution
            return self.downloaded(dataset, name)
        return UNPACKED.format(dataset=dataset, archive=Path(name).stem)

    def unpacked_dirs(self, wildcards) -> list[str]:
        """The converter's inputs, one per file of the dataset."""
        files = self.config["datasets"][wildcards.dataset]["files"]
        return [self.converter_input(wildcards.dataset, name, entry) for name, entry in files.items()]

    def split_spec(self, wildcards) -> dict:
        return self.config["datasets"][wildcards.dataset]["splits"][wildcards.split]

    # --- segmentation experiments ------------------------------------------------------------------
    def experiment(self, wildcards) -> dict:
        return self.config["segmentation"][wildcards.experiment]

    def experiment_split(self, wildcards) -> str:
        return SPLIT.format(dataset=wildcards.dataset, split=self.experiment(wildcards)["split"])

    def experiment_pipeline(self, wildcards) -> list[str]:
        """The cell's augmentation pipeline (its regularization cell's `augmentation`, else the experiment's)."""
        name = cell_augmentation(self.config, wildcards.experiment, wildcards.reg)
        return [PIPELINE.format(dataset=wildcards.dataset, pipeline=name)] if name else []

    def model_spec(self, wildcards) -> dict:
        """Everything that defines a trained model (a plain dict, as Snakemake compares params for re-runs)."""
        return model_spec(self.config, **cell_of(wildcards)).to_dict()

    def cells_of(self, wildcards) -> list[ModelCell]:
        return segmentation_cells(self.config, wildcards.experiment)

    def expand_cells(self, pattern: str, wildcards, **extra) -> list[str]:
        return [pattern.format(**cell.wildcards, **extra) for cell in self.cells_of(wildcards)]

    def evaluation_runs(self, wildcards) -> list[dict]:
        """One record per model and evaluated split: the model, the split and its files by kind.

        The report rules pass these records as params and `run_files` of them as input, so the package
        reads every file with the model and split it belongs to (`segmentation.reports.experiment`), never by position.
        """
        runs = []
        for cell in self.cells_of(wildcards):
            model_files = {
                "info": f"{MODEL_DIR}/train_info.json".format(**cell.wildcards),
                "history": f"{MODEL_DIR}/history.csv".format(**cell.wildcards),
            }
            for subset in self.experiment(wildcards)["evaluate_splits"]:
                files = {
                    kind: f"{EVAL_DIR}/{{subset}}_{name}".format(**cell.wildcards, subset=subset)
                    for kind, name in EVALUATION_FILES.items()
                }
                runs.append(
                    {"arch": cell.arch, "encoder": cell.encoder, "reg": cell.reg, "subset": subset}
                    | model_files
                    | files
                )
        return runs

    def run_files(self, kind: str):
        """Input function: the `kind` file of every evaluation run (`evaluation_runs`), each once."""
        return lambda wildcards: list(dict.fromkeys(run[kind] for run in self.evaluation_runs(wildcards)))

    def experiments_of_paper(self, paper: str) -> str:
        """Regex of the experiments named after `paper` (one that matches nothing when there are none)."""
        segmentation = self.config.get("segmentation", {})
        names = [n for n, e in segmentation.items() if paper_key(e.get("published")) == paper]
        return "|".join(re.escape(n) for n in names) if names else "(?!)"

    # --- comparisons -----------------------------------------------------------------------------
    def comparison_inputs(self, wildcards) -> list[str]:
        """Per-image files of every model of every compared experiment, on the compared split."""
        comparison = self.config["comparisons"][wildcards.comparison]
        return [
            f"{EVAL_DIR}/{comparison['split']}_per_image.csv".format(**cell.wildcards)
            for name in comparison["experiments"]
            for cell in segmentation_cells(self.config, name)
        ]

    def comparison_cells(self, wildcards) -> list[dict]:
        comparison = self.config["comparisons"][wildcards.comparison]
        return [cell.wildcards for name in comparison["experiments"] for cell in segmentation_cells(self.config, name)]

    def experiment_comparisons(self, wildcards) -> list[str]:
        comparisons = self.config.get("comparisons", {})
        return [n for n, c in comparisons.items() if wildcards.experiment in c["experiments"]]

    # --- tuned post-processing, own images, cross-dataset evaluation ---------------------------------
    def tuned_params_of(self, cell: dict) -> list[str]:
        """The tuned settings file of a model cell (a dict of CELL_KEYS); nothing when its experiment does not tune."""
        if not experiment_tunes(self.config, cell["experiment"]):
            return []
        return [POSTPROCESS_PARAMS.format(**{key: cell[key] for key in CELL_KEYS})]

    def tuned_params(self, wildcards) -> list[str]:
        return self.tuned_params_of(cell_of(wildcards))

    def inference_model(self, wildcards) -> str:
        """The named model's weights: an exported package (zip or folder) as named, or the cell's model.pt."""
        package = inference_package(self.config, wildcards.name)
        if package is not None:
            return package
        return f"{MODEL_DIR}/model.pt".format(**inference_cell(self.config, wildcards.name).wildcards)

    def inference_images(self, wildcards) -> str:
        """The store of the named dataset, or the folder itself."""
        dataset = inference_source(self.config, wildcards.name)
        return STORE.format(dataset=dataset) if dataset else self.config["inference"][wildcards.name]["images"]

    def inference_spec(self, wildcards) -> dict | None:
        """The cell's spec; none for a package, which carries its own."""
        if inference_package(self.config, wildcards.name) is not None:
            return None
        return model_spec(self.config, **inference_cell(self.config, wildcards.name).wildcards).to_dict()

    def inference_tuned_params(self, wildcards) -> list[str]:
        """The named model's tuned post-processing settings, if its experiment tunes (a package carries its own)."""
        if inference_package(self.config, wildcards.name) is not None:
            return []
        return self.tuned_params_of(inference_cell(self.config, wildcards.name).wildcards)

    def inference_type_names(self, wildcards) -> list[str] | None:
        """The type names of the named model's training data, background first (a package carries its own)."""
        if inference_package(self.config, wildcards.name) is not None:
            return None
        return cell_type_names(self.config, inference_cell(self.config, wildcards.name))

    def inference_postprocess(self, wildcards) -> dict | None:
        if inference_package(self.config, wildcards.name) is not None:
            return None
        return self.config["segmentation"][inference_cell(self.config, wildcards.name).experiment]["postprocess"]

    def cross_manifest(self, wildcards) -> list[str]:
        if wildcards.target_subset == ALL_IMAGES:
            return []
        return [SPLIT.format(dataset=wildcards.target, split=wildcards.manifest)]

    def cross_runs(self, wildcards) -> list[dict]:
        """The experiment's own test scores (if evaluated), then each model on each evaluate_on target."""
        exp = self.experiment(wildcards)
        home = f"{exp['dataset']} ({exp['split']})"
        runs = []
        for cell in self.cells_of(wildcards):
            label = model_label(cell.arch, cell.encoder, cell.reg)
            if "test" in exp["evaluate_splits"]:
                path = f"{EVAL_DIR}/test_per_image.csv".format(**cell.wildcards)
                runs.append({"model": label, "trained_on": home, "tested_on": f"{home}/test", "path": path})
            for t in evaluate_on_targets(self.config, wildcards.experiment):
                path = CROSS_EVAL.format(
                    **cell.wildcards, target=t["dataset"], manifest=t["manifest"], target_subset=t["subset"]
                )
                where = t["subset"] if t["subset"] == ALL_IMAGES else f"{t['manifest']}/{t['subset']}"
                tested_on = f"{t['dataset']} ({where})"
                runs.append({"model": label, "trained_on": home, "tested_on": tested_on, "path": path})
        return runs

    # --- classification ----------------------------------------------------------------------------
    def classification(self, wildcards) -> dict:
        return self.config["classification"][wildcards.experiment]

    def class_root(self, wildcards) -> str:
        """The class folders: nuclei cropped from the dataset's store (`crops`), else the unpacked release."""
        if "crops" in self.classification(wildcards):
            return f"{CLS_DIR}/crops".format(**wildcards)
        (root,) = self.unpacked_dirs(wildcards)
        return root

    def augmented_manifest(self, wildcards) -> list[str]:
        """The augmented training set for the "augmented" variant, nothing for "base"."""
        if wildcards.variant == "augmented":
            return [f"{CLS_DIR}/augmented/manifest.csv".format(**wildcards)]
        return []

    def cnn_histories(self, wildcards) -> list[str]:
        cnn = self.classification(wildcards)["cnn"]
        return [
            CNN_HISTORY.format(**wildcards, model=model, variant=variant)
            for model in cnn["models"]
            for variant in ("base", "augmented")
        ]
