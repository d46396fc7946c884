"""The line `make demo` ends with: the last run's jobs, their CPU time, its wall time and the cores kept busy."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime

import pytest
from conftest import REPO

from nucleiflow.run_summary import JobTimes, last_run, read_benchmark, run_jobs, summary_line

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
STARTED = datetime(2026, 3, 1, 12, 0, 0)


def _log(log_dir, started: datetime, lines: list[str]):
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"{started.strftime('%Y-%m-%dT%H%M%S.%f')}.snakemake.log"
    path.write_text("Building DAG of jobs...\n" + "".join(f"{line}\n" for line in lines))
    return path


def _benchmark(path, wall: float, cpu: float, at: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{wall}\t0:00:00\t100\t200\t50\t60\t0\t0\t90\t{cpu}\n")
    os.utime(path, (at, at))


@pytest.fixture
def workflow(tmp_path):
    """A run of 3 jobs that took 100 s, a benchmark from an earlier run, and a later report-only log."""
    start = STARTED.timestamp()
    finished = [f"Finished jobid: {i} (Rule: {rule})" for i, rule in enumerate(("train", "train", "eval", "all"))]
    _log(tmp_path / "log", STARTED, [*finished, "Elapsed time: 0:01:40.250000"])
    _log(tmp_path / "log", datetime(2026, 3, 1, 12, 5), ["Creating report..."])  # no job ran
    _benchmark(tmp_path / "results/a/benchmarks/train_x.tsv", 60.0, 110.5, start + 61)
    _benchmark(tmp_path / "results/a/benchmarks/train_y.tsv", 62.0, 60.0, start + 63)
    _benchmark(tmp_path / "resources/demo/benchmarks/eval.tsv", 30.0, 29.5, start + 99)
    _benchmark(tmp_path / "results/a/benchmarks/old.tsv", 5.0, 5.0, start - 3600)  # an earlier run's job
    return tmp_path


def test_the_last_run_with_jobs_and_its_benchmarks(workflow):
    run = last_run(workflow / "log")
    assert run.log.name.startswith("2026-03-01T120000.")
    assert run.started == STARTED.timestamp() and run.wall_s == pytest.approx(100.25)
    assert run.finished_jobs == 4  # `all` included: it has no benchmark
    jobs = run_jobs([workflow / "results", workflow / "resources"], run)
    assert sorted(job.path.name for job in jobs) == ["eval.tsv", "train_x.tsv", "train_y.tsv"]
    line = summary_line(jobs, run.wall_s)
    assert line == "3 jobs: 200 s of CPU time in 100 s of wall time, 2.00 cores busy on average (CPU / wall)"


def test_a_jobs_own_cpu_account_replaces_the_sampled_benchmark(workflow):
    """Snakemake samples a job's CPU every 30 s; the resources line its log ends with is the whole of it."""
    log = workflow / "results/a/logs/train_y.log"
    log.parent.mkdir(parents=True)
    log.write_text("2026-03-01 12:01:03 INFO    nucleiflow: job resources: CPU 121.50 s (user + system, ...)\n")
    run = last_run(workflow / "log")
    jobs = run_jobs([workflow / "results", workflow / "resources"], run)
    assert {job.path.name: job.best_cpu_s for job in jobs}["train_y.tsv"] == 121.5
    line = summary_line(jobs, run.wall_s)
    assert line.startswith("3 jobs: 262 s of CPU time in 100 s of wall time, 2.61 cores busy")
    assert "as 1 jobs' logs account it" in line and "give 200 s, 2.00" in line


def test_a_job_log_ends_with_its_process_accounting(tmp_path):
    code = (
        "import time\n"
        "from nucleiflow.log import setup_logging\n"
        f"setup_logging({str(tmp_path / 'job.log')!r})\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.3: pass\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
    from nucleiflow.log import logged_cpu

    assert logged_cpu(tmp_path / "job.log") >= 0.3
    assert logged_cpu(tmp_path / "absent.log") is None


def test_a_job_process_exits_with_its_objects_frozen(tmp_path):
    """After the resources line the shutdown's garbage collections are spared (`gc.freeze`); the exit hooks
    registered before it (here, one that records the freeze) still run, and a failing job still fails."""
    seen = tmp_path / "frozen.txt"
    code = (
        "import atexit, gc\n"
        f"atexit.register(lambda: open({str(seen)!r}, 'w').write(str(gc.get_freeze_count())))\n"
        "from nucleiflow.log import setup_logging\n"
        f"setup_logging({str(tmp_path / 'job.log')!r})\n"
        "objects = [[i] for i in range(1000)]\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
    assert int(seen.read_text()) >= 1000
    failed = subprocess.run(
        [sys.executable, "-c", f"{code}raise RuntimeError('bad tile')"], env=env, capture_output=True
    )
    assert failed.returncode == 1 and b"bad tile" in failed.stderr


def test_a_stopped_run_ends_at_its_last_log_line(tmp_path):
    log = _log(tmp_path, STARTED, ["Finished jobid: 3 (Rule: train)"])  # killed: no "Elapsed time"
    os.utime(log, (STARTED.timestamp() + 42, STARTED.timestamp() + 42))
    assert last_run(tmp_path).wall_s == pytest.approx(42)


def test_no_run_with_jobs(tmp_path):
    assert last_run(tmp_path / "missing") is None
    _log(tmp_path, STARTED, ["Nothing to be done (all requested files are present and up to date)."])
    assert last_run(tmp_path) is None


def test_a_benchmark_file_keeps_its_last_row(tmp_path):
    path = tmp_path / "job.tsv"
    path.write_text(HEADER + "1\t0\t0\t0\t0\t0\t0\t0\t0\t1\n" + "2.5\t0\t0\t0\t0\t0\t0\t0\t0\t3.25\n")
    assert read_benchmark(path) == JobTimes(path, 2.5, 3.25)
    path.write_text("time\n1\n")
    with pytest.raises(ValueError, match=r"job.tsv: not a Snakemake benchmark file"):
        read_benchmark(path)


def test_the_command_prints_the_line_from_the_workflow_folder(workflow):
    result = subprocess.run(
        [sys.executable, "-m", "nucleiflow.run_summary", "--logs", "log"],
        cwd=workflow,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("last run (2026-03-01T120000.000000.snakemake.log): 3 jobs: 200 s of CPU time")


def test_make_demo_ends_with_the_summary():
    demo = (REPO / "Makefile").read_text().split("\ndemo:")[1].split("\n\n")[0]
    assert demo.rstrip().splitlines()[-1].strip() == "$(BIN)/python -m nucleiflow.run_summary"
