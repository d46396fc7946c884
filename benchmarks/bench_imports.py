"""Benchmark: start-up cost of each job, as the import time of its script (`python -X importtime`).

Every Snakemake job is a fresh Python process that runs one script of `scripts/`;
before it does any work it imports what the script imports at module level. For
each script this runs those import statements (nothing else) in a fresh
interpreter with `-X importtime`, `--repeats` times, and prints, for the run
with the least CPU time, that process's CPU time (steady on a busy machine),
the CPU time its interpreter's shutdown then takes (garbage collections and
module teardown), the same with the objects frozen first (`gc.freeze()`, what
`nucleiflow.log` does as a job exits), the total import wall time, the share of
it spent in the heavy packages (torch, torchvision, segmentation_models_pytorch,
timm, matplotlib, seaborn, scikit-image, scikit-learn, albumentations, cv2), and
which of those it loaded. The line
`(snakemake job preamble)` is what every script job pays before its own imports
(Snakemake's script preamble unpickles the `snakemake` object).

    .venv/bin/python benchmarks/bench_imports.py                  # every script, 3 repeats
    .venv/bin/python benchmarks/bench_imports.py --repeats 1 eda.py segmentation_tables.py
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = (
    "torch",
    "torchvision",
    "segmentation_models_pytorch",
    "timm",
    "matplotlib",
    "seaborn",
    "skimage",
    "sklearn",
    "albumentations",
    "cv2",
)
PREAMBLE = "(snakemake job preamble)"
LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)$")


def module_imports(script: Path) -> str:
    """The script's module-level import statements, as source."""
    tree = ast.parse(script.read_text())
    statements = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    return "\n".join(ast.unparse(node) for node in statements)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def import_profile(source: str, freeze: bool = False) -> tuple[float, float, float, dict[str, float]]:
    """(CPU seconds of the process up to its exit, CPU seconds of its shutdown, import seconds, cumulative
    import seconds per heavy package) of running `source` in a fresh interpreter (`freeze`: `gc.freeze()`
    before it exits)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    report_cpu = "import os, sys; t = os.times(); print(f'CPU {t.user + t.system}', file=sys.stderr)"
    if freeze:
        report_cpu += "\nimport gc; gc.freeze()"
    before = _children_cpu()
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"{source}\n{report_cpu}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    whole = _children_cpu() - before
    if result.returncode != 0:
        raise SystemExit(f"importing failed:\n{source}\n{result.stderr[-2000:]}")
    total, cpu, heavy = 0, 0.0, {}
    for line in result.stderr.splitlines():
        if line.startswith("CPU "):
            cpu = float(line.split()[1])
        match = LINE.match(line)
        if not match:
            continue
        own, cumulative, name = int(match[1]), int(match[2]), match[4]
        total += own
        if name in HEAVY:  # the package itself: its cumulative time includes its submodules
            heavy[name] = cumulative / 1e6
    return cpu, max(0.0, whole - cpu), total / 1e6, heavy


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scripts", nargs="*", help="script names in scripts/ (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="fresh interpreters per script; the fastest is kept")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    scripts = [REPO / "scripts" / name for name in args.scripts] or sorted((REPO / "scripts").glob("*.py"))
    sources = {PREAMBLE: "from snakemake.script import Snakemake"}
    sources.update({path.name: module_imports(path) for path in scripts})
    print("| script | CPU s | exit CPU s | exit CPU s, frozen | import wall s | heavy packages loaded (cumulative s) |")
    print("|---|---|---|---|---|---|")
    for name, source in sources.items():
        runs = [import_profile(source) for _ in range(args.repeats)]
        frozen = min(import_profile(source, freeze=True)[1] for _ in range(args.repeats))
        cpu, _, total, heavy = min(runs, key=lambda run: run[0])
        exit_cpu = min(run[1] for run in runs)
        loaded = ", ".join(f"{package} {seconds:.2f}" for package, seconds in sorted(heavy.items())) or "-"
        print(f"| {name} | {cpu:.2f} | {exit_cpu:.2f} | {frozen:.2f} | {total:.2f} | {loaded} |", flush=True)


if __name__ == "__main__":
    main()
