"""One line about the last Snakemake run: its jobs, their CPU time, its wall time and how many cores were busy.

The run is the latest one in Snakemake's own logs (`.snakemake/log/`) that
finished jobs: its start is the log's name, its wall time the "Elapsed time"
Snakemake writes at the end (the log's last write, if the run was stopped).
The jobs are the Snakemake benchmark files (`results/**/benchmarks/*.tsv` and
`resources/**/benchmarks/*.tsv`, one per job: `s` wall seconds, `cpu_time` user + system seconds of the job's
processes) written during that run. A job's CPU time is the operating system's account of it that its log
ends with (`log.RESOURCES`, beside the benchmark: `.../logs/<job>.log`), else the benchmark's `cpu_time`,
which Snakemake samples every 30 s and so undercounts any job longer than that; the line gives both sums.
CPU time over wall time is the number of cores the run kept busy on average: on 2 cores, 2.0 is every core
busy all the time.

    .venv/bin/python -m nucleiflow.run_summary            # from the workflow's folder (make demo runs it)
"""

from __future__ import annotations

import argparse
import csv
import re
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from nucleiflow.log import logged_cpu

LOG_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{6}\.\d+)\.snakemake\.log$")
ELAPSED = re.compile(r"^Elapsed time: (?:(\d+) days?, )?(\d+):(\d{2}):(\d{2}(?:\.\d+)?)$", re.M)
FINISHED = re.compile(r"^Finished jobid: \d+ \(Rule: (\w+)\)$", re.M)
SLACK_S = 5.0  # a benchmark file is written just before Snakemake logs its job as finished


@dataclass(frozen=True)
class Run:
    log: Path
    started: float  # epoch seconds
    wall_s: float
    finished_jobs: int  # jobs the log says finished, rules without a job process (e.g. `all`) included


@dataclass(frozen=True)
class JobTimes:
    path: Path
    wall_s: float
    cpu_s: float  # the benchmark's sampled cpu_time
    logged_cpu_s: float | None = None  # the job's own account (its log's resources line)

    @property
    def best_cpu_s(self) -> float:
        return self.cpu_s if self.logged_cpu_s is None else self.logged_cpu_s


def job_log(benchmark: Path) -> Path:
    """The log beside a benchmark file (`paths.log_path` and `paths.bench_path` share the job's name)."""
    return benchmark.parent.parent / "logs" / (benchmark.stem + ".log")


def read_benchmark(path: Path) -> JobTimes:
    """The wall and CPU seconds of a Snakemake benchmark file (its last row: a job repeated writes one each)."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows or "s" not in rows[-1] or "cpu_time" not in rows[-1]:
        raise ValueError(f"{path}: not a Snakemake benchmark file (a header with s and cpu_time, then one row a run)")
    return JobTimes(path, float(rows[-1]["s"]), float(rows[-1]["cpu_time"]))


def last_run(log_dir: Path) -> Run | None:
    """The latest run in `log_dir` that finished at least one job, or None."""
    logs = sorted((path for path in Path(log_dir).glob("*.snakemake.log") if LOG_NAME.match(path.name)), reverse=True)
    for path in logs:
        text = path.read_text(errors="replace")
        finished = FINISHED.findall(text)
        if not finished:
            continue  # a dry run, a report, or a run with nothing to do
        name = LOG_NAME.match(path.name)
        assert name is not None  # the glob above kept only matching names
        started = datetime.strptime(name.group(1), "%Y-%m-%dT%H%M%S.%f").timestamp()
        elapsed = ELAPSED.findall(text)
        if elapsed:
            days, hours, minutes, seconds = elapsed[-1]
            wall = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        else:  # stopped before its end: up to its last line
            wall = path.stat().st_mtime - started
        return Run(path, started, wall, len(finished))
    return None


def run_jobs(folders: list[Path], run: Run) -> list[JobTimes]:
    """The benchmark files under `folders` written during `run`."""
    ended = run.started + run.wall_s + SLACK_S
    return [
        replace(read_benchmark(path), logged_cpu_s=logged_cpu(job_log(path)))
        for folder in folders
        for path in sorted(Path(folder).rglob("benchmarks/*.tsv"))
        if run.started <= path.stat().st_mtime <= ended
    ]


def summary_line(jobs: list[JobTimes], wall_s: float) -> str:
    """E.g. `133 jobs: 1503 s of CPU time in 812 s of wall time, 1.85 cores busy on average (CPU / wall)`,
    then the benchmark files' sampled sum when the jobs' own accounts changed it."""
    cpu = sum(job.best_cpu_s for job in jobs)
    sampled = sum(job.cpu_s for job in jobs)
    busy = cpu / wall_s if wall_s > 0 else 0.0
    line = (
        f"{len(jobs)} jobs: {cpu:.0f} s of CPU time in {wall_s:.0f} s of wall time, "
        f"{busy:.2f} cores busy on average (CPU / wall)"
    )
    accounted = sum(job.logged_cpu_s is not None for job in jobs)
    if accounted:
        line += (
            f"; CPU time as {accounted} jobs' logs account it, the others' from their benchmark files "
            f"(which sample every 30 s and give {sampled:.0f} s, {sampled / wall_s if wall_s > 0 else 0:.2f})"
        )
    return line


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--folders", type=Path, nargs="+", default=[Path("results"), Path("resources")], help="where jobs write"
    )
    parser.add_argument("--logs", type=Path, default=Path(".snakemake/log"), help="Snakemake's log folder")
    args = parser.parse_args(argv)
    run = last_run(args.logs)
    if run is None:
        print(f"no Snakemake run with finished jobs in {args.logs}")
        return
    jobs = run_jobs(args.folders, run)
    print(f"last run ({run.log.name}): {summary_line(jobs, run.wall_s)}")


if __name__ == "__main__":
    main()
