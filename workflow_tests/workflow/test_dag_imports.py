"""Building the DAG imports nothing heavy: the package modules the Snakefile and rules/*.smk import load
without torch, torchvision, scikit-image, OpenCV, scipy, h5py or pandas, in a fresh interpreter."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO

HEAVY = ("torch", "torchvision", "skimage", "cv2", "scipy", "h5py", "pandas")
IMPORT = re.compile(r"^\s*(?:from\s+(nucleiflow(?:\.\w+)*)\s+import|import\s+(nucleiflow(?:\.\w+)*))", re.MULTILINE)


def workflow_imports() -> list[str]:
    """Every nucleiflow module named in an import statement of the Snakefile or a rules file, sorted."""
    modules = set()
    for path in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        for match in IMPORT.finditer(path.read_text()):
            modules.add(match.group(1) or match.group(2))
    return sorted(modules)


def loaded_after_importing(modules: list[str]) -> list[str]:
    """The HEAVY top-level packages a fresh interpreter holds after importing `modules` (with src/ first)."""
    code = (
        "import importlib, sys\n"
        f"sys.path.insert(0, {str(REPO / 'src')!r})\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(' '.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return result.stdout.split()


def test_the_rules_import_the_workflow_package():
    modules = workflow_imports()
    assert "nucleiflow.workflow.inputs" in modules
    assert "nucleiflow.workflow.targets" in modules
    assert "nucleiflow.workflow.checks" in modules


def test_building_the_dag_loads_no_heavy_package():
    assert loaded_after_importing(workflow_imports()) == []


def test_no_module_of_the_workflow_package_loads_a_heavy_package():
    package = REPO / "src" / "nucleiflow" / "workflow"
    modules = [f"nucleiflow.workflow.{path.stem}" for path in sorted(package.glob("*.py")) if path.stem != "__init__"]
    assert len(modules) >= 7
    assert loaded_after_importing(modules) == []


def test_the_check_sees_a_heavy_import():
    """The guard itself: a module that loads pandas is reported."""
    assert loaded_after_importing(["nucleiflow.io", "nucleiflow.store"]) == ["h5py", "pandas"]
