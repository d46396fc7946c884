"""The workflow profiles hold what the README says they hold."""

import re

import yaml
from conftest import REPO

README = (REPO / "README.md").read_text()
LOCAL = yaml.safe_load((REPO / "profiles" / "local" / "config.yaml").read_text())
SLURM = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
# The profile's "training and evaluation": every rule that runs a network on the GPU.
GPU_RULES = {
    "train_segmentation",
    "evaluate_segmentation",
    "train_cnn",
    "evaluate_cross",
    "predict",
    "robustness_sweep",
    "tune_postprocess",
    "slide_segment",
}


def _rules_requesting_a_gpu() -> set[str]:
    rules = set()
    for path in sorted((REPO / "rules").glob("*.smk")):
        for name, body in re.findall(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", path.read_text(), flags=re.M | re.S):
            if re.search(r"^\s+gpu=1,", body, flags=re.M):
                rules.add(name)
    return rules


def test_both_profiles_rerun_incomplete_jobs_as_the_readme_says():
    assert "(`rerun-incomplete` is on in both profiles)" in " ".join(README.split())
    assert LOCAL["rerun-incomplete"] is True and SLURM["rerun-incomplete"] is True


def test_the_slurm_profile_uses_the_slurm_executor():
    assert "The profile uses the SLURM executor plugin." in " ".join(README.split())
    assert SLURM["executor"] == "slurm"


def test_the_local_profile_holds_exactly_its_documented_keys():
    """Every key of profiles/local is pinned here, so a change to it is a change to this test (and the README)."""
    assert set(LOCAL) == {
        "printshellcmds",
        "keep-going",
        "rerun-incomplete",
        "rerun-triggers",
        "latency-wait",
        "scheduler",
        "default-resources",
    }
    assert LOCAL["scheduler"] == "greedy"  # the ILP selector's file sizing and CBC solves take the jobs' CPU
    assert "`scheduler: greedy`" in README
    assert LOCAL["keep-going"] is True  # one failing grid cell must not stop the others
    assert "retries" not in LOCAL  # a failed local job fails visibly; re-running it resumes from last.pt
    assert LOCAL["rerun-triggers"] == ["mtime", "params", "input", "code"]
    assert LOCAL["default-resources"] == {"mem_mb": 4000, "runtime": 60}
    # The GPU rules' threads follow the device (rules/*.smk, nucleiflow.threads; workflow_tests/test_threads.py):
    # a profile's set-threads would fix them for GPU and CPU runs alike.
    assert "with an NVIDIA GPU the training rules take 8 threads (7 loader workers)" in " ".join(README.split())


def test_gpu_jobs_are_limited_by_the_readme_command_not_the_profile():
    # The profile says: training and evaluation request gpu=1; run with --resources gpu=1 on one GPU.
    assert re.search(r"profiles/local --cores \d+ --resources gpu=1", README)
    assert "--resources gpu=1" in (REPO / "profiles" / "local" / "config.yaml").read_text()
    assert _rules_requesting_a_gpu() == GPU_RULES
    # Nothing in the profile grants or caps the gpu resource itself: the command line decides.
    assert "resources" not in LOCAL and "gpu" not in LOCAL["default-resources"]


def test_the_slurm_profile_asks_for_a_gpu_in_one_way_only():
    """The rules request `gpu=1` (the plugin submits --gpus=1); a `gres` beside it would ask twice, which the
    plugin's partition selection refuses ("GRES and GPU are set")."""
    assert _rules_requesting_a_gpu()
    for rule, resources in SLURM.get("set-resources", {}).items():
        assert "gres" not in resources or resources.get("gpu") == 0, f"set-resources.{rule} asks for a GPU twice"
    assert "gres" not in SLURM.get("default-resources", {})
