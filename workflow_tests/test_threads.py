"""The thread policy: GPU jobs take several threads on a GPU node (one drives the GPU, the rest load data) and one
on a CPU-only run, so that Snakemake runs as many of them side by side as it has cores."""

from __future__ import annotations

import os
import re

import pytest
import yaml
from conftest import REPO, dry_run
from test_profiles import GPU_RULES, SLURM

from nucleiflow.threads import device_threads, nvidia_gpu_present

# The GPU policy as it was before the CPU one was added: what each GPU job asks for on a GPU node.
GPU_THREADS = {rule: 8 if rule.startswith("train_") else 2 for rule in GPU_RULES}


def rule_threads() -> dict[str, str]:
    """Each rule's `threads:` expression as written in rules/*.smk."""
    found = {}
    for path in sorted((REPO / "rules").glob("*.smk")):
        for name, body in re.findall(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", path.read_text(), flags=re.M | re.S):
            match = re.search(r"^    threads: (.+)$", body, flags=re.M)
            if match:
                found[name] = match.group(1)
    return found


def threads_on(gpu_present: bool) -> dict[str, int]:
    """What each GPU rule's `threads:` gives on a machine with or without an NVIDIA GPU (evaluated as Snakemake
    does while it reads the rules, with the machine's answer replaced)."""
    expressions = rule_threads()
    namespace = {"device_threads": lambda **kw: device_threads(**kw, gpu_present=gpu_present)}
    return {rule: int(eval(expressions[rule], namespace, {})) for rule in GPU_RULES}


@pytest.fixture
def dev_dir(tmp_path):
    (tmp_path / "nvidiactl").touch()  # present with the driver, with or without a GPU
    (tmp_path / "nvidia-uvm").touch()
    return tmp_path


def test_an_nvidia_device_file_means_a_gpu(dev_dir):
    assert not nvidia_gpu_present({}, dev_dir)
    (dev_dir / "nvidia0").touch()
    assert nvidia_gpu_present({}, dev_dir)
    assert nvidia_gpu_present({"CUDA_VISIBLE_DEVICES": "0"}, dev_dir)


@pytest.mark.parametrize("hidden", ["", "-1", "NoDevFiles", " "])
def test_cuda_visible_devices_can_hide_the_gpus(dev_dir, hidden):
    (dev_dir / "nvidia0").touch()
    assert not nvidia_gpu_present({"CUDA_VISIBLE_DEVICES": hidden}, dev_dir)


CPU_THREADS = {**dict.fromkeys(GPU_RULES, 1), "slide_segment": 2}


def test_device_threads_follows_the_machine():
    assert device_threads(gpu=8, cpu=1, gpu_present=True) == 8
    assert device_threads(gpu=8, cpu=1, gpu_present=False) == 1
    with pytest.raises(ValueError, match="gpu=1: a GPU job needs 2 threads or more"):
        device_threads(gpu=1, cpu=1, gpu_present=True)
    with pytest.raises(ValueError, match="cpu=0"):
        device_threads(gpu=2, cpu=0, gpu_present=False)


def test_every_gpu_rule_chooses_its_threads_by_the_device():
    expressions = rule_threads()
    for rule in GPU_RULES:
        assert re.fullmatch(r"device_threads\(gpu=\d+, cpu=\d+\)", expressions[rule]), (rule, expressions[rule])
    # On a GPU node: the policy the GPU rules had before the CPU one (training 8 threads = 7 loader workers).
    assert threads_on(gpu_present=True) == GPU_THREADS
    # CPU only: one thread each (benchmarks/bench_threads.py: a second thread hardly speeds these jobs up), but
    # the slide stage's second runs its post-processing worker process beside the network.
    assert threads_on(gpu_present=False) == CPU_THREADS
    # Rules that do not run a network on the GPU keep one fixed value, e.g. the classifiers' thread pool.
    assert expressions["classic_ml"] == "8"


def test_the_slurm_profile_names_the_threads_of_every_gpu_rule():
    """The head node that builds the DAG may have no GPU: the profile, not the rules' choice, sets what a GPU job
    asks SLURM for (--cpus-per-task), and it is the GPU policy: one thread for the GPU, the rest load data."""
    assert set(GPU_RULES) <= set(SLURM["set-threads"])
    for rule in GPU_RULES:
        assert SLURM["set-threads"][rule] >= GPU_THREADS[rule], rule
    assert SLURM["set-threads"]["train_segmentation"] == SLURM["set-threads"]["train_cnn"] == 8


def _planned_threads(output: str) -> dict[str, set[int]]:
    """The threads of each planned job in a dry run's output, by rule (Snakemake prints `threads:` above 1)."""
    planned: dict[str, set[int]] = {}
    for block in re.split(r"^\[\w{3} \w{3} +\d+ [\d:]+ \d{4}\]$", output, flags=re.M):
        rule = re.search(r"^(?:local)?rule (\w+):$", block, flags=re.M)
        if rule:
            threads = re.search(r"^\s+threads: (\d+)$", block, flags=re.M)
            planned.setdefault(rule.group(1), set()).add(int(threads.group(1)) if threads else 1)
    return planned


def _dry_run(checkout, command: str) -> str:
    return dry_run(checkout, command, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})  # CPU-only, GPU here or not


def test_a_cpu_only_demo_plans_one_thread_per_gpu_job_and_slurm_plans_the_gpu_policy(checkout, tmp_path):
    planned = _planned_threads(_dry_run(checkout, ".venv/bin/snakemake --workflow-profile profiles/local --cores 2"))
    assert {"train_segmentation", "evaluate_segmentation", "train_cnn"} <= set(planned)
    for rule in set(GPU_RULES) & set(planned):
        assert planned[rule] == {CPU_THREADS[rule]}, (rule, planned[rule])
    assert planned["classic_ml"] == {2}  # its 8 threads, capped at --cores 2

    profile = tmp_path / "slurm"
    profile.mkdir()
    (profile / "config.yaml").write_text(yaml.safe_dump(SLURM))
    # --cores: a dry run shows threads only against some number of cores; the profile's max-threads caps them anyway.
    command = f".venv/bin/snakemake --workflow-profile {profile} --cores {SLURM['max-threads']}"
    planned = _planned_threads(_dry_run(checkout, command))
    assert {"train_segmentation", "evaluate_segmentation", "train_cnn"} <= set(planned)
    for rule in set(GPU_RULES) & set(planned):
        assert planned[rule] == {SLURM["set-threads"][rule]}, (rule, planned[rule])
