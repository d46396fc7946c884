"""The workflow as users run it: lint, the full-scale DAG, per-rule conventions, an end-to-end run."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import h5py
import pandas as pd
import pytest
import yaml
from conftest import REPO, SNAKEMAKE, copy_checkout
from PIL import Image
from test_readme_commands import PAPER_COMMAND, TINY_COMMAND, config_files_read, run_in, stand_in_nucrec

from nucleiflow.reporting import paper_index

RULE_FILES = sorted((REPO / "rules").glob("*.smk"))
# Import name -> package name in the env files (conda-forge or pip).
IMPORT_TO_PACKAGE = {
    "numpy": "numpy",
    "pandas": "pandas",
    "h5py": "h5py",
    "PIL": "pillow",
    "scipy": "scipy",
    "tqdm": "tqdm",
    "yaml": "pyyaml",
    "torch": "torch",
    "torchvision": "torchvision",
    "timm": "timm",
    "segmentation_models_pytorch": "segmentation-models-pytorch",
    "albumentations": "albumentations",
    "cv2": "opencv-python-headless",
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "matplotlib": "matplotlib-base",
    "seaborn": "seaborn",
    "joblib": "joblib",
    "jinja2": "jinja2",
    "tabulate": "tabulate",
    "huggingface_hub": "huggingface_hub",
    "threadpoolctl": "threadpoolctl",
    "openslide": "openslide-python",
    "bioimageio": "bioimageio.spec",
    "markdown": "markdown",
}


def _snakemake(*args, cwd=REPO, timeout=300):
    return subprocess.run([SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_lint_is_clean():
    result = _snakemake("--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr


def test_full_scale_paper_config_builds_its_dag(checkout):
    stand_in_nucrec(checkout)
    result = run_in(checkout, PAPER_COMMAND, "-n")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", output, flags=re.M))
    # PanNuke's three folds, DSB2018 stage-1 train and test plus the test solution, NucRec
    assert counts["download"] == "7" and "demo_data" not in counts
    # 4 PanNuke models x 2 cells + 3 residual U-Nets + 3 in the DSB model comparison + classic U-Net, then
    # nuclei as objects: one hv model per PanNuke fold rotation and the residual U-Net's contour and hv targets;
    # beyond the papers: the DSB2018 recipe candidates (contour and hv, tuned, compared on val and on test)
    assert counts["train_segmentation"] == "22"
    assert counts["tune_postprocess"] == "7" and counts["cross_validation_table"] == "1"
    assert counts["compare_experiments"] == "4" and counts["segmentation_vs_paper"] == "5"
    assert "warwick.ac.uk" in yaml.safe_dump(yaml.safe_load((REPO / "config" / "paper.yaml").read_text()))


def _rule_blocks():
    """(file, rule name, body) of every rule, named ones and those built in a loop (`rule:` with `name:`)."""
    for path in RULE_FILES:
        text = path.read_text()
        pattern = r"^[ \t]*rule(?: (\w+))?:\n(.*?)(?=^[ \t]*rule[ :]|^\S|\Z)"
        for match in re.finditer(pattern, text, flags=re.M | re.S):
            name, body = match.group(1), match.group(2)
            if name is None:
                name = re.search(r"name:\s*\n\s*f?\"([^\"]+)\"", body).group(1)
            yield path, name, body


def test_every_rule_has_log_benchmark_conda_threads_resources():
    rules = list(_rule_blocks())
    assert len(rules) > 10
    for path, name, body in rules:
        for directive in ("log:", "benchmark:", "conda:", "threads:", "resources:", "script:"):
            assert re.search(rf"^\s+{directive}", body, flags=re.M), f"{path.name}: rule {name} lacks {directive}"
        resources = body.split("resources:")[1]
        assert "mem_mb=" in resources and "runtime=" in resources, f"rule {name} lacks mem_mb/runtime"
        if name.startswith("train_"):
            assert "gpu=1" in resources, f"training rule {name} requests no GPU"


def _module_file(module: str) -> Path | None:
    if not module.startswith("nucleiflow"):
        return None
    parts = module.split(".")
    base = REPO / "src" / Path(*parts)
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _imports(path: Path, seen: set) -> set[str]:
    """Third-party top-level modules imported by `path` and the nucleiflow modules it imports."""
    if path in seen or not path.exists():
        return set()
    seen.add(path)
    found = set()
    package = ".".join(path.relative_to(REPO / "src").with_suffix("").parts) if "src" in path.parts else ""
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import inside the package
                base = (
                    package.split(".")[: -node.level]
                    if path.name != "__init__.py"
                    else package.split(".")[: len(package.split(".")) - node.level + 1]
                )
                module = ".".join(base + ([node.module] if node.module else []))
                names = [module] + [f"{module}.{a.name}" for a in node.names]
            else:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            sub = _module_file(name)
            if sub is not None:
                found |= _imports(sub, seen)
            elif name.split(".")[0] not in sys.stdlib_module_names and name.split(".")[0] != "snakemake":
                found.add(name.split(".")[0])
    return found


def _env_packages(env_file: Path) -> set[str]:
    env = yaml.safe_load(env_file.read_text())
    packages = set()
    for dep in env["dependencies"]:
        entries = dep["pip"] if isinstance(dep, dict) else [dep]
        for entry in entries:
            packages.add(re.split(r"[=<>!\s]", entry)[0].lower())
    return packages


def test_every_rule_env_covers_its_script_imports():
    checked = 0
    for path, name, body in _rule_blocks():
        conda = re.search(r'conda:\s*\n\s*"([^"]+)"', body).group(1)
        script = re.search(r'script:\s*\n\s*"([^"]+)"', body).group(1)
        env_file = (path.parent / conda).resolve()
        script_file = (path.parent / script).resolve()
        modules = _imports(script_file, set())
        missing = {IMPORT_TO_PACKAGE.get(m, m) for m in modules} - _env_packages(env_file)
        assert not missing, f"rule {name}: {env_file.name} lacks {sorted(missing)} imported by {script_file.name}"
        checked += 1
    assert checked > 10


@pytest.mark.e2e
def test_tiny_config_runs_every_stage_end_to_end(tmp_path):
    """The README's tiny-config command, as written, from the root of a fresh checkout (where config.yaml is)."""
    root = copy_checkout(tmp_path)
    result = run_in(root, TINY_COMMAND, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert config_files_read(output, root) == ["workflow_tests/config_tiny.yaml"]
    results = root / "results"

    # Segmentation: one metrics row per trained model and evaluated split, all within [0, 1].
    # pannuke_tiny (published: pannuke) names its outputs after the paper's tables and figures; dsb_tiny keeps
    # the generic names.
    pannuke_figures = (
        "figure5_samples",
        "figure6_10_metric_curves",
        "figure11_predictions",
        "figure12_contours",
        "figure13_dice",
        "figure14_iou",
        "figure15_acc",
        "inference_time",
    )
    generic_figures = (
        "metric_curves",
        "bars_dice",
        "bars_iou",
        "bars_acc",
        "prediction_examples",
        "contours",
        "inference_time",
    )
    for experiment, dataset, models, subsets, names, figure_names in (
        ("pannuke_tiny", "pannuke", 3, 2, ("table1_model_sizes", "table2_4_metrics", "table5_timing"), pannuke_figures),
        ("dsb_tiny", "dsb2018", 1, 1, ("model_sizes", "metrics", "timing"), generic_figures),
    ):
        base = results / dataset / experiment
        sizes, metrics_name, timing = names
        metrics = pd.read_csv(base / "tables" / f"{metrics_name}.csv")
        assert len(metrics) == models * subsets
        for column in ("DCS (pooled)", "IoU (pooled)"):
            assert metrics[column].between(0, 1).all()
        assert len(pd.read_csv(base / "tables" / f"{sizes}.csv")) == models
        assert (pd.read_csv(base / "tables" / f"{timing}.csv")["Inference median (s/image)"] > 0).all()
        for suffix in (".md", ".tex"):
            assert (base / "tables" / f"{metrics_name}{suffix}").stat().st_size > 100
        for figure in figure_names:
            _assert_image(base / "figures" / f"{figure}.png")
            assert (base / "figures" / f"{figure}.pdf").stat().st_size > 1000
        objects = pd.read_csv(base / "tables" / "object_metrics.csv")
        assert list(objects.columns) == ["Model", "Split", "AJI", "PQ", "DQ", "SQ", "mAP"] and len(objects) == len(
            metrics
        )
        assert len(pd.read_csv(base / "tables" / "per_image.csv")) > 0
        for per_image in (base / "evaluation").rglob("*_per_image.csv"):
            frame = pd.read_csv(per_image)
            assert len(frame) > 0 and frame[["acc", "dice", "iou", "sensitivity"]].stack().between(0, 1).all()

    # The paper index: every table and figure of the paper, the file and its status; Table 2 (train) not in this run.
    index = (results / "pannuke" / "pannuke_tiny" / "paper_index.md").read_text()
    assert "| Table 4 |" in index and "[tables/table2_4_metrics.csv]" in index and "| Figure 12 |" in index
    assert "| Table 2 | Performance on the training set | [tables/table2_4_metrics.csv]" in index
    assert "not in this run" in index
    assert not (results / "dsb2018" / "dsb_tiny" / "paper_index.md").exists()  # no `published:` key
    versus = pd.read_csv(results / "pannuke" / "pannuke_tiny" / "tables" / "vs_paper.csv")
    assert {"timing", "regularization"} <= set(versus["table"]) and versus["paper"].notna().any()
    assert (versus["difference"].dropna() == (versus["ours"] - versus["paper"]).dropna()).all()
    comparison = pd.read_csv(results / "comparisons" / "tiny_models" / "table.csv")
    assert set(comparison["Experiment"]) == {"pannuke_tiny", "dsb_tiny"} and len(comparison) == 4
    _assert_image(results / "comparisons" / "tiny_models" / "bars.png")

    with h5py.File(results / "pannuke" / "store.h5") as store:
        assert len(store["samples"]) == 15

    # Classification: both variants of every configured classifier, CNN epochs as configured.
    base = results / "nucrec" / "classification" / "nucrec_tiny"
    for name in ("table1_classic_base", "table2_classic_augmented"):
        table = pd.read_csv(base / "tables" / f"{name}.csv")
        assert list(table["Classifier"]) == ["Decision Tree", "Random Forest", "Logistic Regression", "QDA"]
        assert table[["Accuracy", "Precision", "Recall", "F1 score"]].stack().between(0, 1).all()
        # Our four beside the paper's numbers, in our order; then the paper's other seven, with no number of ours.
        companion = pd.read_csv(base / "tables" / f"{name}_vs_paper.csv")
        assert list(companion["classifier"][:4]) == list(table["Classifier"]) and len(companion) == 11
        assert companion["accuracy_ours"][:4].notna().all() and companion["accuracy_ours"][4:].isna().all()
        assert companion["accuracy_paper"].notna().all()
    rf = pd.read_csv(base / "tables" / "table1_classic_base_vs_paper.csv").set_index("classifier").loc["Random Forest"]
    assert rf["accuracy_paper"] == 0.78
    for name in ("table3_small_cnn_base", "table4_small_cnn_augmented"):
        assert pd.read_csv(base / "tables" / f"{name}.csv")["Epoch"].tolist() == [1, 2]
    for figure in ("classifier_comparison", "figure4_cnn_runs"):
        _assert_image(base / "figures" / f"{figure}.png")
    average = pd.read_csv(base / "tables" / "figure4_average_accuracy.csv")
    assert list(average["Run"]) == ["Small CNN (base)", "Small CNN (augmented)"]
    assert average["Mean validation accuracy (paper)"].tolist() == [0.6611, 0.86]
    assert "| Figure 4 |" in (base / "paper_index.md").read_text()

    # Nothing half-written is left behind.
    leftovers = [path for folder in ("results", "resources") for path in (root / folder).rglob("*.tmp*")]
    assert not leftovers, leftovers

    # The report (a few seconds): every table and figure, each in its category and with its caption.
    result = _snakemake("--report", "results/report.zip", "--configfile", "workflow_tests/config_tiny.yaml", cwd=root)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    _assert_report_lists_every_table_and_figure(root, results / "report.zip")


def _assert_image(path: Path) -> None:
    with Image.open(path) as image:
        assert image.width > 200 and image.height > 100
        extrema = image.convert("L").getextrema()
        assert extrema[0] < extrema[1], f"{path} is blank"


def _report_category(path: str) -> str:
    """The category a result belongs in: Data, Segmentation, Classification, Comparisons (across experiments), or
    Nuclei as objects (the PanNuke benchmark's bPQ/mPQ and cross-validation)."""
    if Path(path).stem in ("pannuke_pq", "cross_validation"):
        return "Nuclei as objects"
    if path.startswith("results/comparisons/"):
        return "Comparisons"
    if "/classification/" in path:
        return "Classification"
    if any(f"/{stage}/" in path for stage in ("eda", "splits", "augment")):
        return "Data"
    return "Segmentation"


# Paper-named output -> the output key whose caption it carries (nucleiflow.reporting.paper_index).
PAPER_NAME_KEYS = {
    name: key.rstrip("0123456789").rstrip("_")
    for paper in paper_index.SEGMENTATION_PAPERS
    for names in (paper_index.table_names(paper), paper_index.figure_names(paper))
    for key, name in names.items()
    if name != key
}


def _caption_file(path: str) -> str:
    """The report/*.rst caption a result should carry."""
    name = Path(path).stem
    if name in PAPER_NAME_KEYS:  # named after a paper's table or figure: the generic output's caption
        return PAPER_NAME_KEYS[name]
    if path.startswith("results/comparisons/"):
        return "comparison"
    if "/splits/" in path:
        return "split"
    if name.endswith("_preview"):
        return "augment_preview"
    cnn_table = re.fullmatch(r"table[3-6]_\w+?_(?:base|augmented)(_vs_paper)?", name)
    if cnn_table:
        return "cnn_epoch_table" + (cnn_table.group(1) or "")
    return name


def _assert_report_lists_every_table_and_figure(root: Path, archive: Path) -> None:
    import html
    import json
    import zipfile

    with zipfile.ZipFile(archive) as zf:
        page = zf.read("report/report.html").decode()
        stored = {Path(name).name for name in zf.namelist() if name.startswith("report/data/raw/")}

    def variable(name):
        return json.loads(re.search(rf'<script id="{name}">\s*var {name} = (.*?);\s*</script>', page, re.S).group(1))

    entries, categories = variable("results"), variable("categories")
    produced = {
        str(path.relative_to(root))
        for pattern in (
            "*/tables/*.csv",
            "*/figures/*.png",
            "eda/eda.png",
            "splits/*.csv",
            "augment/*_preview.png",
            "*/paper_index.md",
        )
        for path in (root / "results").rglob(pattern)
    } | {"results/comparisons/tiny_models/table.csv", "results/comparisons/tiny_models/bars.png"}
    assert set(entries) == produced, (sorted(produced - set(entries)), sorted(set(entries) - produced))
    assert {Path(path).name for path in produced} <= stored  # the files themselves are in the archive

    assert set(categories) == {"Data", "Segmentation", "Classification", "Comparisons", "Nuclei as objects"}
    assert set(categories["Nuclei as objects"]) == {"pannuke_tiny"}  # PanNuke data: its bPQ/mPQ table
    assert set(categories["Data"]) == {"pannuke", "dsb2018"}
    assert set(categories["Segmentation"]) == {"pannuke_tiny", "dsb_tiny"}
    assert set(categories["Classification"]) == {"nucrec_tiny"}
    placed = {path: category for category, sub in categories.items() for paths in sub.values() for path in paths}
    assert placed == {path: _report_category(path) for path in produced}

    for path, entry in entries.items():
        # The caption's longest literal stretch (outside Jinja fields and rst markup) must be in the rendered caption.
        rst = (root / "report" / f"{_caption_file(path)}.rst").read_text()
        literal = max((" ".join(part.split()) for part in re.split(r"\{\{.*?\}\}|`", rst)), key=len)
        caption = " ".join(html.unescape(re.sub(r"<[^>]+>", "", entry["caption"] or "")).split())
        assert len(literal) > 20 and literal in caption, (path, literal, caption)
