"""Every `results/` and `resources/` path template of the workflow, in one place.

The rules (through rules/common.smk) and the package build their paths from
these, so a path is spelled once. Templates hold Snakemake wildcards in braces
(`{dataset}`, `{experiment}`, ...): a rule uses them as they are, code fills
them with `str.format`. Relative templates (`TABLE`, `FIGURE`,
`CNN_HISTORY_NAME`) name a file inside an experiment folder. Torch-free, and
imports nothing beyond the standard library and `io`: the workflow imports it while it builds the DAG.
"""

from nucleiflow.io import TABLE_SUFFIXES

RESULTS = "results"
RESOURCES = "resources"

# --- resources/: what is fetched, unpacked or cached -------------------------------
DOWNLOAD_DIR = f"{RESOURCES}/{{dataset}}/download"
DOWNLOAD = f"{DOWNLOAD_DIR}/{{filename}}"
# The verified SHA-256 of a downloaded or linked file (`sha256sum -c` format), written when download runs: the
# dated record of a held file, whose link Snakemake dates by its target (see workflow.inputs.Inputs.downloaded).
DOWNLOAD_CHECKSUM = f"{DOWNLOAD_DIR}/checksums/{{filename}}.sha256"
UNPACKED = f"{RESOURCES}/{{dataset}}/unpacked/{{archive}}"
DEMO_DIR = f"{RESOURCES}/demo"
WEIGHTS_DIR = f"{RESOURCES}/weights"
WEIGHTS_MARKER = f"{WEIGHTS_DIR}/{{arch}}/{{encoder}}.json"

# --- results/<dataset>/: one dataset --------------------------------------------------
DATASET_DIR = f"{RESULTS}/{{dataset}}"
STORE = f"{DATASET_DIR}/store.h5"
STORE_SUMMARY = f"{DATASET_DIR}/store_summary.json"
SPLIT = f"{DATASET_DIR}/splits/{{split}}.csv"
EDA_DIR = f"{DATASET_DIR}/eda"
PIPELINE = f"{DATASET_DIR}/augment/{{pipeline}}.json"
PIPELINE_PREVIEW = f"{DATASET_DIR}/augment/{{pipeline}}_preview.png"

# --- one segmentation experiment and its model cells ------------------------------------
SEG_DIR = f"{DATASET_DIR}/{{experiment}}"
MODEL_DIR = f"{SEG_DIR}/models/{{arch}}/{{encoder}}/{{reg}}"
# The post-processing settings tuned on the validation split (experiments whose `postprocess` tunes).
POSTPROCESS_PARAMS = f"{MODEL_DIR}/postprocess.json"
EVAL_DIR = f"{SEG_DIR}/evaluation/{{arch}}/{{encoder}}/{{reg}}"
EXPLAIN_DIR = f"{SEG_DIR}/explanations/{{arch}}/{{encoder}}/{{reg}}"
EXPLAIN_FIGURES = ("figure2_filters", "figure6_gradcam", "figure7_lrp")  # PNG + PDF in EXPLAIN_DIR
EXPLAIN_TABLE = "lrp_statistics"  # CSV + MD + TeX in EXPLAIN_DIR
# The robustness sweep (segmentation.<experiment>.robustness): per cell on the test split, then per experiment.
ROBUSTNESS_SWEEP = f"{EVAL_DIR}/test_robustness.csv"
ROBUSTNESS_TABLE = f"{SEG_DIR}/tables/robustness_auc.csv"
ROBUSTNESS_FIGURE = f"{SEG_DIR}/figures/robustness.png"

# A model cell as a BioImage Model Zoo package (segmentation.<experiment>.export): folder, zip, model card.
EXPORT_DIR = f"{SEG_DIR}/export/{{arch}}/{{encoder}}/{{reg}}"
EXPORT_PACKAGE = f"{EXPORT_DIR}/package"  # bioimageio.yaml (rdf.yaml) and every file it names
EXPORT_ZIP = f"{EXPORT_DIR}/bioimageio.zip"
EXPORT_CARD = f"{EXPORT_DIR}/model_card.html"  # the package's README.md for the report

# --- evaluation of an experiment's models on other datasets (segmentation.<experiment>.evaluate_on) ---
CROSS_EVAL = f"{EVAL_DIR}/cross/{{target}}/{{manifest}}_{{target_subset}}_per_image.csv"
CROSS_TABLE = f"{SEG_DIR}/tables/cross_dataset.csv"
CROSS_FIGURE = f"{SEG_DIR}/figures/cross_dataset.png"

# --- predictions on your own images (inference.<name>) --------------------------------
INFER_DIR = f"{RESULTS}/inference/{{name}}"
INFER_PREDICTIONS = (
    f"{INFER_DIR}/predictions"  # labels/<id>.tif, probabilities/<id>.tif, overlays/<id>.png, nuclei/<id>.csv
)
INFER_IMAGES = f"{INFER_DIR}/images.csv"
INFER_NUCLEI = f"{INFER_DIR}/nuclei.csv"
INFER_TABLE = f"{INFER_DIR}/tables/summary.csv"
INFER_FIGURE = f"{INFER_DIR}/figures/summary.png"
DEMO_CELLS = f"{DEMO_DIR}/cells"  # the demo's folder of images no model saw

# --- whole-slide images (slides.<name>): one folder per slide ------------------------------
SLIDES_DIR = f"{RESULTS}/slides/{{name}}"
SLIDE_DIR = f"{SLIDES_DIR}/{{slide}}"
SLIDE_PLAN = f"{SLIDE_DIR}/plan.json"  # resolution, source level, the chunks over tissue
SLIDE_TISSUE = f"{SLIDE_DIR}/tissue_mask.png"  # the tissue mask (0/255) at the plan's mask_mpp
SLIDE_THUMBNAIL = f"{SLIDE_DIR}/thumbnail.png"  # the low-resolution level the mask was detected on
SLIDE_CHUNKS = f"{SLIDE_DIR}/chunks"  # finished chunks (not a rule output: a killed job resumes from them)
SLIDE_PART = f"{SLIDE_DIR}/parts/part_{{part}}.json"  # one segment job's chunks
SLIDE_GEOJSON = f"{SLIDE_DIR}/nuclei.geojson"
SLIDE_NUCLEI = f"{SLIDE_DIR}/nuclei.parquet"
SLIDE_LABELS = f"{SLIDE_DIR}/labels.ome.tif"
SLIDE_SUMMARY = f"{SLIDE_DIR}/tables/summary.csv"
SLIDE_FIGURE = f"{SLIDE_DIR}/figures/overview.png"
DEMO_SLIDES = f"{DEMO_DIR}/slides"  # the demo's synthetic slide
DEMO_SLIDE_NAME = "demo_slide.ome.tif"  # the synthetic slide the demo segments (nucleiflow.synthetic.demo)

# --- one classification experiment ---------------------------------------------------
CLS_DIR = f"{DATASET_DIR}/classification/{{experiment}}"
CNN_HISTORY_NAME = "cnn/{model}_{variant}_history.csv"  # relative to CLS_DIR
CNN_HISTORY = f"{CLS_DIR}/{CNN_HISTORY_NAME}"

# --- comparisons across experiments ---------------------------------------------------
COMPARISONS_DIR = f"{RESULTS}/comparisons"
COMPARISON_DIR = f"{COMPARISONS_DIR}/{{comparison}}"

# --- nuclei as objects: the PanNuke benchmark per experiment, cross-validation across folds --------------
PANNUKE_PQ_TABLE = f"{SEG_DIR}/tables/pannuke_pq.csv"  # bPQ/mPQ per model and tissue (PanNuke-format data)
TYPED_PQ_TABLE = f"{SEG_DIR}/tables/typed_pq.csv"  # PQ, AJI, DQ, SQ, per-class PQ by type name, mPQ (named types)
# A cross-validation experiment (segmentation.<name>.folds) reports under SEG_DIR with experiment = <name>.
CV_TABLE = f"{SEG_DIR}/tables/cross_validation.csv"  # mean ± std across folds, beside published results
CV_FOLD_SCORES = f"{SEG_DIR}/tables/cross_validation_folds.csv"  # the same, one numeric row per model and fold
CV_FIGURE = f"{SEG_DIR}/figures/cross_validation.png"

# Inside an experiment folder (SEG_DIR or CLS_DIR): its tables and figures.
TABLE = "tables/{name}.csv"
FIGURE = "figures/{name}.png"
# The files of one figure (`reporting.figures.save_figure`); a table's are `io.TABLE_SUFFIXES`.
FIGURE_SUFFIXES = (".png", ".pdf")


def log_path(name: str, base: str = DATASET_DIR) -> str:
    """The log of job `name` (may hold wildcards) under `base`: `<base>/logs/<name>.log`."""
    return f"{base}/logs/{name}.log"


def bench_path(name: str, base: str = DATASET_DIR) -> str:
    """The Snakemake benchmark of job `name` under `base`: `<base>/benchmarks/<name>.tsv`."""
    return f"{base}/benchmarks/{name}.tsv"


def _swap_suffix(path: str, suffix: str, replacement: str) -> str:
    if not path.endswith(suffix):
        raise ValueError(f"{path}: expected a path ending in {suffix}")
    return path[: -len(suffix)] + replacement


def table_copies(table: str) -> list[str]:
    """The Markdown and LaTeX files written beside the CSV `table` (a path or a template), in that order."""
    return [_swap_suffix(table, TABLE_SUFFIXES[0], suffix) for suffix in TABLE_SUFFIXES[1:]]


def figure_pdf(figure: str) -> str:
    """The PDF written beside the PNG `figure` (a path or a template)."""
    return _swap_suffix(figure, FIGURE_SUFFIXES[0], FIGURE_SUFFIXES[1])
