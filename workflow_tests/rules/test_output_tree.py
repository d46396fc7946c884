"""The demo's output tree is a contract: renaming or dropping an output is a visible, reviewed change.

After an intended change, regenerate the listing from the repository root with
    .venv/bin/snakemake --summary --cores 1 | tail -n +2 | cut -f1 | sort > workflow_tests/demo_outputs.txt
"""

from __future__ import annotations

import difflib

from conftest import REPO
from test_readme_commands import run_in

LISTING = REPO / "workflow_tests" / "demo_outputs.txt"


def test_demo_output_tree_is_the_recorded_one(checkout):
    result = run_in(checkout, ".venv/bin/snakemake --summary --cores 1")
    assert result.returncode == 0, result.stderr[-3000:]
    planned = sorted(line.split("\t")[0] for line in result.stdout.splitlines()[1:] if line.strip())
    recorded = LISTING.read_text().split()
    diff = "\n".join(difflib.unified_diff(recorded, planned, "recorded", "planned", lineterm="", n=0))
    assert planned == recorded, f"the demo's outputs changed; if intended, regenerate {LISTING.name}:\n{diff}"
