"""Device choice and its consequences (mixed precision, memory format, loader sizing)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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


def pick_device(preference: str = "auto") -> torch.device:
    """CUDA, then MPS, then CPU, unless the config names one."""
    if preference != "auto":
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def setup_device(preference: str = "auto", threads: int = 1, amp: bool = True) -> DeviceSetup:
    """Mixed precision and channels-last on CUDA; loader workers from the rule's threads.

    On CPU the threads go to torch's intra-op pool and data loads in-process
    (workers would compete for the same cores).
    """
    device = pick_device(preference)
    if device.type == "cuda":
        amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if amp else None
        return DeviceSetup(device, amp_dtype, True, max(1, threads - 1), True)
    torch.set_num_threads(max(1, threads))
    return DeviceSetup(device, None, False, 0, False)
