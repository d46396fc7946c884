"""Logging set-up shared by every workflow script: to the rule's log file and stderr.

A job's log ends with one `RESOURCES` line written as its process exits: the CPU seconds the operating
system accounted to it and to the child processes it waited for (loader and post-processing workers), and
its peak memory. Snakemake's benchmark files sample a job every 30 s and miss what it used after the last
sample (a 40 s job of 40 s CPU time reads about 15 s), so `run_summary` prefers this line.

The same exit hook then freezes the garbage collector's objects. Without that, the interpreter's shutdown
collections walk every object torch, timm and segmentation-models-pytorch created, about 1 s of CPU per job
that builds a model, after its work is done (`benchmarks/bench_imports.py`, exit columns). Frozen objects
are still released as their modules are cleared; only the cycle search over them is skipped, so an object
caught in a reference cycle is not finalised at exit. Nothing a job leaves relies on that: its outputs are
written and closed (and atomically renamed) before its script ends.
"""

from __future__ import annotations

import atexit
import logging
import re
import sys
import time
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
RESOURCES = "job resources:"
_resources_registered = False
RESOURCES_LINE = re.compile(re.escape(RESOURCES) + r" CPU (\d+(?:\.\d+)?) s")


def setup_logging(log_file: str | Path | None = None, level: int = logging.INFO) -> logging.Logger:
    """Send log records to `log_file` (if given) and stderr; return the package logger."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(level=level, format=FORMAT, handlers=handlers, force=True)
    logging.captureWarnings(True)
    log = logging.getLogger("nucleiflow")
    global _resources_registered
    if log_file and not _resources_registered:  # one line per process, however often logging is set up
        # Registered after logging's own shutdown hook, so it runs first, while the handlers are open.
        atexit.register(log_resources, log, time.perf_counter())
        _resources_registered = True
    return log


def log_resources(log: logging.Logger, started: float) -> None:
    """Log this process's CPU time (user + system, waited-for children included) and peak RSS; then spare the
    interpreter's shutdown its garbage collections (module docstring)."""
    import gc
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    peak = max(own.ru_maxrss, children.ru_maxrss) / 1024  # Linux reports KiB
    log.info(
        "%s CPU %.2f s (user + system, child processes included), %.1f s since logging started, peak RSS %.0f MiB",
        RESOURCES,
        cpu,
        time.perf_counter() - started,
        peak,
    )
    gc.freeze()


def logged_cpu(log_file: str | Path) -> float | None:
    """The CPU seconds a job's log reports in its `RESOURCES` line; None without one (killed, or not ours)."""
    try:
        found = RESOURCES_LINE.findall(Path(log_file).read_text(errors="replace"))
    except OSError:
        return None
    return float(found[-1]) if found else None
