"""Start-up cost of the jobs: a job that writes tables or figures does not import torch or the model zoo, and a job
that writes only tables does not import matplotlib (benchmarks/bench_imports.py measures every script)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest
from conftest import REPO

NETWORK_PACKAGES = ("torch", "torchvision", "segmentation_models_pytorch", "timm")
PLOTTING_PACKAGES = ("matplotlib", "seaborn")
TABLE_SCRIPTS = (
    "segmentation_tables.py",
    "segmentation_vs_paper.py",
    "classification_tables.py",
    "pannuke_pq_table.py",
    "cross_validation_table.py",
)
FIGURE_SCRIPTS = (
    "segmentation_figures.py",
    "classification_figures.py",
    "compare_experiments.py",
    "cross_dataset.py",
    "inference_summary.py",
    "robustness_report.py",
    "eda.py",
)


def loaded_by(script: str, packages: tuple[str, ...]) -> list[str]:
    """Which of `packages` a fresh interpreter has loaded after the script's module-level imports."""
    tree = ast.parse((REPO / "scripts" / script).read_text())
    imports = [ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    probe = f"import sys; print(' '.join(p for p in {packages!r} if p in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", "\n".join([*imports, probe])],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.split()


def test_the_probe_sees_what_a_script_imports():
    for script in TABLE_SCRIPTS + FIGURE_SCRIPTS:
        assert (REPO / "scripts" / script).is_file(), script
    assert loaded_by("train_segmentation.py", NETWORK_PACKAGES) == list(NETWORK_PACKAGES)


@pytest.mark.parametrize("script", TABLE_SCRIPTS + FIGURE_SCRIPTS)
def test_table_and_figure_jobs_do_not_import_torch_or_the_model_zoo(script):
    """Tables also skip matplotlib and seaborn (one fresh interpreter per script: each costs about a second)."""
    loaded = loaded_by(script, NETWORK_PACKAGES + PLOTTING_PACKAGES)
    assert not set(loaded) & set(NETWORK_PACKAGES), (script, loaded)
    if script in TABLE_SCRIPTS:
        assert not set(loaded) & set(PLOTTING_PACKAGES), (script, loaded)
