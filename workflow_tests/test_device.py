"""Device set-up on CPU with `torch.cuda` mocked: precision per GPU generation, device selection,
loader options, and the one-line stop when an allocated GPU is unusable."""

from __future__ import annotations

import logging
import warnings

import cv2
import pytest
import torch

from nucleiflow import device as dev
from nucleiflow.errors import NucleiflowError

AMPERE, TURING, VOLTA = (8, 0), (7, 5), (7, 0)
PINNED_ARCHS = torch.cuda.get_arch_list()  # the installed wheel's kernels; known without a GPU


@pytest.fixture(autouse=True)
def no_allocation(monkeypatch):
    """No GPU allocated by the environment unless a test says so."""
    for name in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake_cuda(monkeypatch):
    """Make torch.cuda answer like a machine with `count` GPUs of `capability`; returns the set_device calls."""
    calls: list[int] = []

    def install(capability=AMPERE, count=2, name="NVIDIA A100-SXM4-40GB", arch_list=None):
        def is_bf16_supported(including_emulation: bool = True) -> bool:
            # As torch answers: True on every CUDA GPU with emulation counted, natively only from 8.0.
            return including_emulation or capability[0] >= 8

        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: calls[-1] if calls else 0)
        monkeypatch.setattr(torch.cuda, "set_device", calls.append)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: PINNED_ARCHS if arch_list is None else arch_list)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
        return calls

    return install


@pytest.fixture
def no_cuda(monkeypatch):
    """CUDA unusable as with a driver older than the wheel's CUDA: is_available() warns and answers False."""

    def is_available() -> bool:
        warnings.warn(
            "CUDA initialization: The NVIDIA driver on your system is too old (found version 12020).\n"
            "Please update your GPU driver.",
            UserWarning,
            stacklevel=2,
        )
        return False

    monkeypatch.setattr(torch.cuda, "is_available", is_available)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_ampere_uses_bf16_without_scaler_and_channels_last(fake_cuda):
    calls = fake_cuda(AMPERE)
    setup = dev.setup_device("auto", threads=8)
    assert setup.device == torch.device("cuda", 0)
    assert setup.amp_dtype == torch.bfloat16
    assert not setup.needs_grad_scaler
    assert setup.channels_last and setup.pin_memory
    assert calls == [0]


@pytest.mark.parametrize(
    "capability, arch_list", [(TURING, None), (VOLTA, ["sm_70", "sm_75", "sm_80"])], ids=["turing", "volta"]
)
def test_pre_ampere_uses_fp16_with_grad_scaler(fake_cuda, capability, arch_list):
    # bf16 is "supported" there only by emulation (slower than fp32): fp16 + GradScaler is the fast path.
    fake_cuda(capability, name="Tesla", arch_list=arch_list)
    setup = dev.setup_device("cuda", threads=4)
    assert setup.amp_dtype == torch.float16
    assert setup.needs_grad_scaler


def test_amp_off_is_full_precision(fake_cuda):
    fake_cuda(AMPERE)
    setup = dev.setup_device("cuda", threads=4, amp=False)
    assert setup.amp_dtype is None and not setup.needs_grad_scaler
    assert setup.channels_last


def test_cuda_index_becomes_the_current_device(fake_cuda):
    calls = fake_cuda(AMPERE, count=2)
    setup = dev.setup_device("cuda:1", threads=4)
    assert calls == [1]
    assert setup.device == torch.device("cuda", 1)


def test_cuda_index_beyond_the_visible_gpus_is_one_line(fake_cuda):
    fake_cuda(AMPERE, count=1)
    with pytest.raises(NucleiflowError, match=r"'cuda:1'.*sees 1 GPU.*cuda:0") as caught:
        dev.setup_device("cuda:1")
    assert "\n" not in str(caught.value)


def test_gpu_without_kernels_in_the_wheel_is_one_line(fake_cuda):
    # The CUDA 13 wheel has no Volta (sm_70) kernels: every op would fail with "no kernel image".
    fake_cuda(VOLTA, name="Tesla V100-SXM2-16GB")
    with pytest.raises(NucleiflowError, match=r"Tesla V100.*7\.0.*sm_75") as caught:
        dev.setup_device("cuda")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "capability, arch_list, ok",
    [
        ((8, 9), ["sm_80", "sm_86"], True),  # Ada runs Ampere cubins
        ((8, 0), ["sm_86"], False),
        ((12, 1), ["sm_100", "sm_120"], True),
        ((9, 0), ["sm_80", "compute_80"], True),  # PTX is compiled by the driver
        ((7, 0), ["sm_75", "sm_80", "sm_90a"], False),
        ((7, 0), [], True),
    ],
)
def test_has_kernels_for(capability, arch_list, ok):
    assert dev.has_kernels_for(capability, arch_list) is ok


def test_setup_logs_gpu_and_precision(fake_cuda, caplog, monkeypatch):
    fake_cuda(TURING, name="Tesla T4")
    monkeypatch.setattr(dev, "available_cpus", lambda: 16)
    with caplog.at_level(logging.INFO, logger="nucleiflow.device"):
        dev.setup_device("auto", threads=4)
    line = caplog.records[-1].getMessage()
    for part in ("cuda:0", "Tesla T4", "compute capability 7.5", f"CUDA {torch.version.cuda}", "fp16", "3 loader"):
        assert part in line


def test_cpu_loads_in_process(monkeypatch):
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # leave this process's pool alone
    setup = dev.setup_device("cpu", threads=2)
    assert setup.device == torch.device("cpu")
    assert (setup.loader_workers, setup.pin_memory, setup.amp_dtype) == (0, False, None)
    assert dev.loader_kwargs(setup) == {"num_workers": 0, "pin_memory": False}


def test_inference_is_channels_last_on_the_cpu_and_training_is_not(monkeypatch):
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    training = dev.setup_device("cpu", threads=1, amp=False)
    inference = dev.for_inference(training)
    assert not training.channels_last and inference.channels_last
    assert (inference.device, inference.amp_dtype, inference.loader_workers) == (torch.device("cpu"), None, 0)


@pytest.mark.parametrize(
    "variable, value",
    [("CUDA_VISIBLE_DEVICES", "0"), ("SLURM_JOB_GPUS", "3"), ("SLURM_STEP_GPUS", "0,1")],
)
def test_allocated_gpu_without_cuda_stops_with_one_line(no_cuda, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(NucleiflowError) as caught:
        dev.setup_device("auto", threads=2)
    message = str(caught.value)
    assert "\n" not in message
    for part in (
        f"{variable}={value}",
        f"torch {torch.__version__}",
        f"CUDA {torch.version.cuda}",
        "driver on your system is too old",
    ):
        assert part in message


@pytest.mark.parametrize("value", ["", "-1", "NoDevFiles"])
def test_no_gpu_allocated_falls_back_to_cpu(no_cuda, monkeypatch, value):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    assert dev.setup_device("auto").device == torch.device("cpu")


def test_explicit_cuda_without_cuda_is_one_line(no_cuda):
    with pytest.raises(NucleiflowError, match=r"'cuda'.*is_available\(\) is False") as caught:
        dev.setup_device("cuda")
    assert "\n" not in str(caught.value)


def test_gpu_loader_options(fake_cuda, monkeypatch):
    fake_cuda(AMPERE)
    monkeypatch.setattr(dev, "available_cpus", lambda: 16)
    options = dev.loader_kwargs(dev.setup_device("cuda", threads=8))
    assert options["num_workers"] == 7
    assert options["pin_memory"] and options["persistent_workers"]
    assert options["prefetch_factor"] == dev.PREFETCH_FACTOR
    assert options["worker_init_fn"] is dev.limit_worker_threads
    # A scheduler that grants fewer CPUs than the rule's threads caps the workers.
    monkeypatch.setattr(dev, "available_cpus", lambda: 4)
    assert dev.setup_device("cuda", threads=8).loader_workers == 3


def test_worker_init_limits_opencv_and_torch_threads():
    before = torch.get_num_threads(), cv2.getNumThreads()
    try:
        dev.limit_worker_threads(0)
        assert torch.get_num_threads() == 1
        assert cv2.getNumThreads() == 1  # setNumThreads(0): OpenCV runs its functions sequentially
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])


def test_persistent_workers_follow_set_epoch(pannuke_store):
    """Workers that live across epochs must still draw each epoch's augmentation."""
    from nucleiflow.segmentation.training.data import SegmentationDataset, make_loader
    from nucleiflow.store import Store

    store = Store(pannuke_store)

    def epochs(workers: int) -> list[torch.Tensor]:
        dataset = SegmentationDataset(store, store.ids[:4], 32, policy="tile", random_tiles=True, seed=1)
        loader = make_loader(dataset, 2, shuffle=False, seed=0, workers=workers, pin_memory=False)
        drawn = []
        for epoch in (1, 2):
            dataset.set_epoch(epoch)
            drawn.append(torch.cat([images for images, _, _ in loader]))
        return drawn

    in_process, workers = epochs(0), epochs(1)
    assert not torch.equal(in_process[0], in_process[1])  # the tiles do depend on the epoch
    for a, b in zip(in_process, workers, strict=True):
        assert torch.equal(a, b)


def test_gpu_nodes_keep_their_thread_policy(fake_cuda, monkeypatch):
    """On a GPU node each GPU rule's threads (rules/*.smk, as a node with a GPU evaluates them) become one thread
    for the GPU and the rest loader workers, as before the CPU-only policy: training 8 threads, 7 workers."""
    from test_threads import GPU_THREADS, threads_on

    fake_cuda(AMPERE)
    monkeypatch.setattr(dev, "available_cpus", lambda: 16)
    threads = threads_on(gpu_present=True)
    assert threads == GPU_THREADS
    workers = {rule: dev.setup_device("auto", threads=n).loader_workers for rule, n in threads.items()}
    assert workers["train_segmentation"] == workers["train_cnn"] == 7
    assert {workers[rule] for rule in set(workers) - {"train_segmentation", "train_cnn"}} == {1}
