"""Device choice and its consequences (mixed precision, memory format, data loading).

`device: auto` takes CUDA, then MPS, then CPU. A job that was allocated a GPU
(`CUDA_VISIBLE_DEVICES`, `SLURM_JOB_GPUS`, `SLURM_STEP_GPUS`) but cannot use it
stops with one line instead of training on CPU for days: the usual cause is a
driver older than the CUDA the torch wheel was built for, or a GPU the wheel
has no kernels for.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, replace

import torch

from nucleiflow.errors import NucleiflowError
from nucleiflow.threads import GPU_ALLOCATION_VARIABLES, NO_GPU

log = logging.getLogger(__name__)

PREFETCH_FACTOR = 4  # batches each loader worker keeps ready


class DeviceError(NucleiflowError, RuntimeError):
    """The requested or allocated device cannot be used by this torch build."""


@dataclass(frozen=True)
class DeviceSetup:
    device: torch.device
    amp_dtype: torch.dtype | None  # None: full precision
    channels_last: bool
    loader_workers: int
    pin_memory: bool

    @property
    def needs_grad_scaler(self) -> bool:
        return self.amp_dtype == torch.float16

    @property
    def precision(self) -> str:
        return {torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast + GradScaler"}.get(
            self.amp_dtype, "fp32"
        )


# Loading in the main process: what CPU jobs and tests use.
IN_PROCESS = DeviceSetup(torch.device("cpu"), None, False, 0, False)


def allocated_gpus(environ=None) -> str | None:
    """The variable that hands this job a GPU, as `NAME=value`, or None when none was allocated."""
    environ = os.environ if environ is None else environ
    for name in GPU_ALLOCATION_VARIABLES:
        value = environ.get(name)
        if value is None or value.strip() in NO_GPU:
            continue
        return f"{name}={value}"
    return None


def torch_build() -> str:
    cuda = f"CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
    return f"torch {torch.__version__} ({cuda})"


def probe_cuda() -> tuple[bool, str]:
    """torch.cuda.is_available(), and when False the warning torch gives as it probes the driver (the why)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    reasons = [" ".join(str(w.message).split()) for w in caught]
    return available, next((r for r in reasons if "cuda" in r.lower() or "driver" in r.lower()), "")


def cuda_error(what: str, reason: str) -> DeviceError:
    because = f" ({reason})" if reason else ""
    fix = (
        "install an NVIDIA driver that supports this CUDA version (nvidia-smi shows the highest it supports)"
        if torch.version.cuda
        else "install a CUDA build of torch"
    )
    return DeviceError(
        f"{what}, but {torch_build()} cannot use it: torch.cuda.is_available() is False{because}; "
        f"{fix}, or set training.device: cpu"
    )


def pick_device(preference: str = "auto", environ=None) -> torch.device:
    """CUDA, then MPS, then CPU, unless the config names one; a GPU that was allocated must be usable."""
    if preference != "auto":
        device = torch.device(preference)
        if device.type == "cuda":
            available, reason = probe_cuda()
            if not available:
                raise cuda_error(f"device {preference!r} was requested", reason)
        return device
    available, reason = probe_cuda()
    if available:
        return torch.device("cuda")
    allocated = allocated_gpus(environ)
    if allocated:
        raise cuda_error(f"device 'auto': this job was allocated a GPU ({allocated})", reason)
    if reason:
        log.info("no usable CUDA device: %s", reason)
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def has_kernels_for(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether the wheel's compiled architectures run on a GPU of `capability`.

    A cubin built for sm_XY runs on sm_XZ with Z >= Y (same major); PTX (compute_XY)
    is compiled by the driver for any capability >= XY. An empty list (a custom
    build) is taken as compatible.
    """
    if not arch_list:
        return True
    major, minor = capability
    for arch in arch_list:
        kind, _, number = arch.partition("_")
        digits = number.rstrip("af")
        if not digits.isdigit():
            continue
        code_major, code_minor = int(digits[:-1]), int(digits[-1])
        if kind == "sm" and code_major == major and code_minor <= minor:
            return True
        if kind == "compute" and (code_major, code_minor) <= (major, minor):
            return True
    return False


def select_cuda(device: torch.device) -> torch.device:
    """Make `device` the current CUDA device (so side work does not land on GPU 0); check the wheel runs on it."""
    index = torch.cuda.current_device() if device.index is None else device.index
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"device {str(device)!r}: this job sees {count} GPU(s); use cuda:0 to cuda:{count - 1}")
    torch.cuda.set_device(index)
    capability = torch.cuda.get_device_capability(index)
    arch_list = torch.cuda.get_arch_list()
    if not has_kernels_for(capability, arch_list):
        raise DeviceError(
            f"GPU {index} ({torch.cuda.get_device_name(index)}) has compute capability "
            f"{capability[0]}.{capability[1]}, which {torch_build()} has no kernels for "
            f"(built for {' '.join(arch_list)}); install a torch wheel built for this GPU, or set training.device: cpu"
        )
    return torch.device("cuda", index)


def cuda_amp_dtype(index: int) -> torch.dtype:
    """bf16 where the GPU computes it natively (Ampere, compute capability 8.0, and later), else fp16.

    `torch.cuda.is_bf16_supported()` alone also answers True on Volta/Turing,
    where bf16 is emulated and slower than fp32.
    """
    major, _ = torch.cuda.get_device_capability(index)
    if major >= 8 or torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.bfloat16
    return torch.float16


def available_cpus() -> int:
    """CPUs this process may run on (the cgroup/affinity set a scheduler gives it), not the node's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def setup_device(preference: str = "auto", threads: int = 1, amp: bool = True) -> DeviceSetup:
    """Mixed precision and channels-last on CUDA; loader workers from the rule's threads.

    On CUDA one thread drives the GPU and the rest become loader workers. On CPU
    the threads go to torch's intra-op pool and data loads in-process (workers
    would compete for the same cores).
    """
    device = pick_device(preference)
    if device.type == "cuda":
        device = select_cuda(device)
        amp_dtype = cuda_amp_dtype(device.index) if amp else None
        workers = max(1, min(threads, available_cpus()) - 1)
        setup = DeviceSetup(device, amp_dtype, True, workers, True)
        major, minor = torch.cuda.get_device_capability(device.index)
        log.info(
            "device %s: %s, compute capability %d.%d, %s; precision %s, channels-last, %d loader workers",
            device,
            torch.cuda.get_device_name(device.index),
            major,
            minor,
            torch_build(),
            setup.precision,
            workers,
        )
        return setup
    torch.set_num_threads(max(1, threads))
    setup = DeviceSetup(device, None, False, 0, False)
    log.info("device %s: %s, %d torch threads; precision fp32, data loaded in-process", device, torch_build(), threads)
    return setup


def for_inference(setup: DeviceSetup) -> DeviceSetup:
    """The device setup a trained model predicts with: channels-last on every device, the CPU included.

    For inference oneDNN's channels-last convolutions were 1.1-1.3x faster on the CPU for five of the
    studies' six architectures (residual U-Net 1.33x, U-Net/ResNet-18 1.26x) and 0.97x, within run-to-run
    noise, for DeepLabV3+/ResNet-50 (`benchmarks/bench_memory_format.py`, one thread); the maps are the
    same up to float rounding. Training keeps `setup_device`'s choice (channels-last on CUDA only): on the
    CPU its gain there was uneven (1.01x for DeepLabV3+/ResNet-50 to 1.33x for the residual U-Net per
    256-px step), and a change of format would change the weights every CPU run trains.
    """
    return replace(setup, channels_last=True)


def limit_worker_threads(worker_id: int) -> None:
    """Loader worker start: one thread each, or every worker's OpenCV and torch pools oversubscribe the CPUs."""
    import cv2  # here, not at import: only loader workers need it

    cv2.setNumThreads(0)
    torch.set_num_threads(1)


def loader_kwargs(
    setup: DeviceSetup,
    *,
    workers: int | None = None,
    pin_memory: bool | None = None,
    prefetch_factor: int = PREFETCH_FACTOR,
) -> dict:
    """DataLoader keyword arguments for `setup`: workers, pinning, persistence, prefetch, thread limits.

    Workers persist across epochs (no re-fork, no store re-open each epoch); a
    dataset whose samples depend on the epoch must share it with its workers
    (as `SegmentationDataset.set_epoch` does). `workers` and `pin_memory`
    override the setup's choice (benchmarks, tests).
    """
    workers = setup.loader_workers if workers is None else workers
    options: dict[str, object] = {
        "num_workers": workers,
        "pin_memory": setup.pin_memory if pin_memory is None else pin_memory,
    }
    if workers > 0:
        options.update(persistent_workers=True, prefetch_factor=prefetch_factor, worker_init_fn=limit_worker_threads)
    return options
