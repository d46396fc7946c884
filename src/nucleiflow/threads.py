"""How many threads a job asks Snakemake for, by the device it will run on (imported while the DAG is built).

On a node with an NVIDIA GPU, one thread of a GPU job drives the GPU and the
others become its data-loader workers (`nucleiflow.device.setup_device`), so
those jobs ask for several. On a CPU-only run the same jobs' threads would be
torch's intra-op threads, and the demo's small models and batches gain little
from a second one (`benchmarks/bench_threads.py`; figures in the README): one
thread each lets Snakemake run as many jobs side by side as it has cores.

The check looks for NVIDIA device files, not at torch (importing torch would add
seconds to every DAG build), and honours `CUDA_VISIBLE_DEVICES` hiding the GPUs.
It describes the machine that builds the DAG, which for local runs is the one
the jobs run on; a cluster profile names the threads of its GPU jobs itself
(`set-threads` in `profiles/slurm`), as the head node may have no GPU.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

# CUDA_VISIBLE_DEVICES values that mean "no GPU" (SLURM writes NoDevFiles when none was requested).
NO_GPU = ("", "-1", "NoDevFiles")
# The variables through which a scheduler hands a job its GPUs.
GPU_ALLOCATION_VARIABLES = ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS")
NVIDIA_DEVICE_FILES = "nvidia[0-9]*"  # /dev/nvidia0, /dev/nvidia1, ...: one per GPU the driver exposes


def nvidia_gpu_present(environ=None, dev_dir: Path | str = "/dev") -> bool:
    """Whether this machine has an NVIDIA GPU that CUDA programs may use.

    False when `CUDA_VISIBLE_DEVICES` hides every GPU (empty, -1 or NoDevFiles),
    else whether the driver exposes a GPU device file in `dev_dir`.
    """
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in NO_GPU:
        return False
    return any(Path(dev_dir).glob(NVIDIA_DEVICE_FILES))


@functools.cache
def _gpu_here() -> bool:
    return nvidia_gpu_present()


def device_threads(*, gpu: int, cpu: int, gpu_present: bool | None = None) -> int:
    """A GPU job's threads: `gpu` where this machine has an NVIDIA GPU, else `cpu`."""
    if gpu < 2:
        raise ValueError(f"gpu={gpu}: a GPU job needs 2 threads or more (one drives the GPU, one loads data)")
    if cpu < 1:
        raise ValueError(f"cpu={cpu}: a job needs at least 1 thread")
    present = _gpu_here() if gpu_present is None else gpu_present
    return gpu if present else cpu
