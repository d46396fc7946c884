"""The SLURM path on a real one-node SLURM cluster (tools/slurm-local/start.sh).

The tiny config runs end to end through profiles/slurm, changed only where a user fits it to
a cluster: the account, `max-threads` (the threads a job may take) and the memory of the GPU rules (the
profile's 16-32 GB exceed a small machine; sbatch would refuse them). The cluster's `gpu`
partition has stand-in GPUs, so the GPU rules are submitted exactly as on a real cluster
(`--gpus=1`) and compute on CPU. Skipped when SLURM cannot be installed or started.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, copy_checkout, threads_per_worker

pytestmark = pytest.mark.slurm

START = REPO / "tools" / "slurm-local" / "start.sh"
STOP = REPO / "tools" / "slurm-local" / "stop.sh"
TINY = "workflow_tests/config_tiny.yaml"
ACCOUNT = "nucleiflow"  # the account start.sh creates
GPU_RULES = ("train_segmentation", "evaluate_segmentation", "train_cnn")
GPU_RULE_MEM_MB = 4000
DSB_MODEL = "results/dsb2018/dsb_tiny/models/resunet/none/none"
STATUS_SECONDS = 2  # status checks every 2 s here (the profile's 20 s suits a real cluster)


def _cluster_env(out: str) -> dict:
    (conf,) = re.findall(r"^export SLURM_CONF=(\S+)$", out, flags=re.M)
    return {**os.environ, "SLURM_CONF": conf}


@pytest.fixture(scope="module")
def cluster():
    """The environment that reaches the local cluster; the cluster is stopped afterwards if this started it."""
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (slurmd, munged and mariadbd run as their users)")
    if not shutil.which("sbatch") and not shutil.which("apt-get"):
        pytest.skip("SLURM is not installed and apt-get is absent to install it")
    try:
        # Three times the machine's CPUs: a short job waits half its time, so more of them run side by side.
        env = {**os.environ, "SLURM_LOCAL_CPUS": str(3 * os.cpu_count())}
        started = subprocess.run([str(START)], env=env, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        pytest.skip("tools/slurm-local/start.sh did not finish within 10 minutes")
    if started.returncode != 0:
        pytest.skip(f"SLURM could not be installed or started: {started.stderr.strip()[-600:]}")
    env = _cluster_env(started.stdout)
    yield env
    if "already running" not in started.stderr:
        subprocess.run([str(STOP)], capture_output=True, timeout=120)


def _node(env: dict) -> dict:
    line = subprocess.run(["scontrol", "-o", "show", "node", "localhost"], env=env, capture_output=True, text=True)
    return dict(re.findall(r"(\w+)=(\S+)", line.stdout))


def _test_profile(dest: Path, threads: int) -> Path:
    """profiles/slurm with the edits a user makes for their cluster, and quick status checks."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"]["slurm_account"] = ACCOUNT
    profile["max-threads"] = threads
    for rule in GPU_RULES:
        profile["set-resources"][rule]["mem_mb"] = GPU_RULE_MEM_MB
    profile["slurm-init-seconds-before-status-checks"] = STATUS_SECONDS
    profile["seconds-between-status-checks"] = STATUS_SECONDS
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return dest


def _snakemake(root: Path, profile: Path, env: dict, *args: str, timeout: int = 900, **popen):
    command = [".venv/bin/snakemake", "--workflow-profile", str(profile), *args]
    if popen:
        return subprocess.Popen(command, cwd=root, env=env, text=True, **popen)
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)


def _sacct(env: dict, root: Path, since: str) -> pd.DataFrame:
    """The SLURM jobs started from `root` since `since`, one row each (allocations only, no steps)."""
    fields = ["JobID", "Comment", "Partition", "Account", "ReqMem", "TimelimitRaw", "ReqTRES", "State", "WorkDir"]
    result = subprocess.run(
        ["sacct", "-X", "-P", "-n", "-a", "-S", since, "-E", "now", f"--format={','.join(fields)}"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [line.split("|") for line in result.stdout.splitlines() if line]
    jobs = pd.DataFrame(rows, columns=fields)
    jobs = jobs[jobs["WorkDir"] == str(root)].copy()
    jobs["rule"] = jobs["Comment"].str.extract(r"^rule_(\w+?)(?:_wildcards_|$)")[0]
    return jobs


def _submitted(output: str) -> dict[str, dict]:
    """What Snakemake asked SLURM for, by SLURM job id: each job's rule and its resources as the run prints them."""
    asked = {}
    for block in re.split(r"^\[\w{3} \w{3} +\d+ [\d:]+ \d{4}\]$", output, flags=re.M):
        rule = re.search(r"^rule (\w+):$", block, flags=re.M)
        jobid = re.search(r"^\s+jobid: (\d+)$", block, flags=re.M)
        resources = re.search(r"^\s+resources: (.*)$", block, flags=re.M)
        if rule and jobid and resources:
            asked[jobid.group(1)] = {"rule": rule.group(1), **dict(re.findall(r"(\w+)=([^,\s]+)", resources.group(1)))}
    submissions = re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", output)
    return {slurm_id: asked[jobid] for jobid, slurm_id in submissions}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    """The tiny config through the SLURM profile, from a fresh checkout."""
    root = copy_checkout(tmp_path_factory.mktemp("slurm_checkout"))
    # max-threads: the cores this test worker may keep busy (the other worker shares the machine). The node
    # declares three times the machine's CPUs, so several jobs share each core: a job that asked for more
    # threads than its share would spend its time waiting on its own descheduled OpenMP threads.
    profile = _test_profile(tmp_path_factory.mktemp("slurm_profile"), threads_per_worker())
    since = _now()
    started = time.monotonic()
    result = _snakemake(root, profile, cluster, "--configfile", TINY)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    print(f"tiny config through SLURM: {time.monotonic() - started:.0f} s")
    return {"root": root, "profile": profile, "env": cluster, "since": since, "output": output}


def test_every_job_ran_as_a_slurm_job_with_its_rules_limits(slurm_run):
    jobs = _sacct(slurm_run["env"], slurm_run["root"], slurm_run["since"])
    planned = dict(re.findall(r"^(\w+)\s+(\d+)$", slurm_run["output"].split("Job stats:")[1], flags=re.M))
    planned.pop("all"), planned.pop("total")
    assert jobs["rule"].value_counts().to_dict() == {rule: int(count) for rule, count in planned.items()}
    assert (jobs["State"] == "COMPLETED").all(), jobs[["JobID", "rule", "State"]]
    assert (jobs["Account"] == ACCOUNT).all()

    profile = yaml.safe_load((slurm_run["profile"] / "config.yaml").read_text())
    submitted = _submitted(slurm_run["output"])
    assert set(submitted) == set(jobs["JobID"])
    for row in jobs.itertuples():
        asked = submitted[row.JobID]
        assert asked["rule"] == row.rule
        assert row.ReqMem == f"{asked['mem_mb']}M", (row.rule, row.ReqMem, asked)
        assert row.TimelimitRaw == asked["runtime"], (row.rule, row.TimelimitRaw, asked)
        gpu = row.rule in GPU_RULES
        if gpu:  # the profile's values for the GPU rules, as this test set them
            rule_profile = profile["set-resources"][row.rule]
            assert (int(asked["mem_mb"]), int(asked["runtime"])) == (rule_profile["mem_mb"], rule_profile["runtime"])
        assert row.Partition == ("gpu" if gpu else "cpu"), (row.rule, row.Partition)
        assert ("gres/gpu=1" in row.ReqTRES) == gpu, (row.rule, row.ReqTRES)


def test_tables_equal_a_local_run(slurm_run):
    """Training, evaluation and the classifiers give the same numbers through SLURM as on the workstation."""
    root = slurm_run["root"]
    tables = [
        "results/dsb2018/dsb_tiny/tables/metrics.csv",
        "results/dsb2018/dsb_tiny/tables/model_sizes.csv",
        "results/nucrec/classification/nucrec_tiny/tables/table1_classic_base.csv",
        "results/nucrec/classification/nucrec_tiny/tables/table2_classic_augmented.csv",
    ]
    through_slurm = {table: pd.read_csv(root / table) for table in tables}
    shutil.rmtree(root / DSB_MODEL)  # no checkpoint to resume from: train from scratch
    local = subprocess.run(
        [".venv/bin/snakemake", "--workflow-profile", "profiles/local", "--cores", "2", "--configfile", TINY]
        + ["--forcerun", "train_segmentation", "classic_ml", "--", *tables],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert local.returncode == 0, (local.stdout + local.stderr)[-3000:]
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", (local.stdout + local.stderr).split("Job stats:")[1], flags=re.M))
    assert {"train_segmentation", "evaluate_segmentation", "classic_ml"} <= set(stats), stats
    for table, frame in through_slurm.items():
        pd.testing.assert_frame_equal(pd.read_csv(root / table), frame, check_exact=False, rtol=1e-6, obj=table)


def test_a_cancelled_training_job_is_resubmitted_and_resumes_from_its_checkpoint(slurm_run, tmp_path):
    root, env = slurm_run["root"], slurm_run["env"]
    config = yaml.safe_load((root / TINY).read_text())
    config["segmentation"]["dsb_tiny"]["training"]["epochs"] = 20  # long enough to be cancelled mid-training
    (root / "config_long.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.rmtree(root / DSB_MODEL, ignore_errors=True)
    last = root / DSB_MODEL / "checkpoints" / "last.pt"

    since = _now()
    log = (tmp_path / "run.log").open("w")
    run = _snakemake(
        root, slurm_run["profile"], env, "--configfile", "config_long.yaml", "--", f"{DSB_MODEL}/model.pt",
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not last.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert last.exists(), "training wrote no checkpoints/last.pt"
        queue = subprocess.run(["squeue", "-h", "-o", "%i|%k|%T"], env=env, capture_output=True, text=True).stdout
        (job,) = [line.split("|")[0] for line in queue.splitlines() if "rule_train_segmentation" in line]
        subprocess.run(["scancel", job], env=env, check=True)
        assert run.wait(timeout=300) == 0, (tmp_path / "run.log").read_text()[-4000:]
    finally:
        if run.poll() is None:
            run.kill()
    output = (tmp_path / "run.log").read_text()

    jobs = _sacct(env, root, since)
    assert jobs["rule"].tolist() == ["train_segmentation", "train_segmentation"], jobs
    assert jobs["State"].tolist()[0].startswith("CANCELLED") and jobs["State"].tolist()[1] == "COMPLETED", jobs
    assert job in output and "Trying to restart job" in output
    train_log = (root / "results/dsb2018/dsb_tiny/logs/train_resunet_none_none.log").read_text()
    assert "resumed from" in train_log and "last.pt" in train_log, train_log[-2000:]
    # Snakemake deleted the cancelled job's log before the retry: the engine tells its epochs again.
    logged = [int(n) for n in re.findall(r"engine: epoch (\d+)/20:", train_log)]
    assert logged == list(range(1, 21)), train_log[-2000:]
    history = pd.read_csv(root / DSB_MODEL / "history.csv")
    assert history["epoch"].tolist() == list(range(1, 21))


def test_a_failing_rule_fails_and_nothing_downstream_runs(slurm_run):
    root, env = slurm_run["root"], slurm_run["env"]
    config = yaml.safe_load((root / TINY).read_text())
    config["datasets"]["dsb2018"]["files"]["stage1_train.zip"]["sha256"] = "0" * 64
    (root / "config_bad_checksum.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    store = root / "results/dsb2018/store.h5"
    before = store.stat().st_mtime_ns

    since = _now()
    result = _snakemake(
        root, slurm_run["profile"], env, "--configfile", "config_bad_checksum.yaml", "--",
        "results/dsb2018/dsb_tiny/tables/metrics.csv", timeout=300,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "Error in rule download" in output
    jobs = _sacct(env, root, since)
    # The download is tried again (the rule's own retries); unpack, convert, split, train... never start.
    assert set(jobs["rule"]) == {"download"} and len(jobs) >= 2, jobs
    assert (jobs["State"] == "FAILED").all(), jobs
    assert store.stat().st_mtime_ns == before


def test_a_job_no_node_can_run_is_refused_at_submission(slurm_run):
    """sbatch refuses it (EnforcePartLimits=ALL): the run fails at once instead of pending forever."""
    root, env = slurm_run["root"], slurm_run["env"]
    node = _node(env)
    target = "results/pannuke/augment/light.json"
    started = time.monotonic()
    result = _snakemake(
        root, slurm_run["profile"], env, "--configfile", TINY, "--forcerun", target,
        "--set-resources", f"augment_pipeline:mem_mb={int(node['RealMemory']) + 1000}",
        "--", target, timeout=120,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "Memory specification can not be satisfied" in output, output[-3000:]
    assert time.monotonic() - started < 60
