import os

import pytest
import torch

from olmo_model import OlmoConfig
from olmo_model.flops import flops_per_token
from steps.train import throughput
from steps.train.throughput import memory_metrics, model_flops_utilization, peak_flops, peak_flops_for_name


@pytest.mark.parametrize(
    ("device_name", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", 989.5e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835.5e12),
        ("NVIDIA H200", 989.5e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A100 80GB PCIe", 312e12),
        ("AMD Instinct MI250X", 191.5e12),  # one GCD
        ("AMD Instinct MI250X / MI250", 191.5e12),
        ("AMD Instinct MI300X", 1307.4e12),
        ("AMD Instinct MI300A", None),
        ("NVIDIA GeForce RTX 4090", None),
        ("", None),
    ],
)
def test_peak_flops_by_device_name(device_name, expected):
    assert peak_flops_for_name(device_name) == expected


def test_no_peak_on_cpu():
    assert peak_flops(torch.device("cpu")) is None


def test_peak_of_a_cuda_device_comes_from_its_name(monkeypatch):
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: asked.append(device) or "NVIDIA H200")
    assert peak_flops(torch.device("cuda", 3)) == 989.5e12
    assert asked == [torch.device("cuda", 3)]


def test_mfu_divides_the_run_rate_over_devices():
    assert model_flops_utilization(2000.0, 1e12, 2, 4e15) == pytest.approx(0.25)
    # OLMo-1B at 45,000 tokens/s per H100 over 8 GPUs, seq 2048: 45e3 * 7.8659e9 / 989.5e12.
    flops = flops_per_token(OlmoConfig.preset("olmo-1b"), 2048)
    assert model_flops_utilization(8 * 45_000.0, flops, 8, 989.5e12) == pytest.approx(0.3577, abs=1e-4)


@pytest.mark.parametrize(("world_size", "peak", "message"), [
    (0, 1e12, "world_size: expected a positive integer"),
    (1.0, 1e12, "world_size: expected a positive integer"),
    (1, 0.0, "peak_flops_per_device: expected a positive number"),
])
def test_mfu_rejects_bad_input(world_size, peak, message):
    with pytest.raises(ValueError, match=message):
        model_flops_utilization(1000.0, 1e9, world_size, peak)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads Linux's /proc")
def test_cpu_memory_is_the_peak_resident_set_in_gib():
    metrics = memory_metrics(torch.device("cpu"))
    with open("/proc/self/status") as status:
        high_water_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    assert metrics.keys() == {"peak_rss_gib"}
    assert metrics["peak_rss_gib"] == pytest.approx(high_water_kib / 2**20, rel=0.01)


def test_gpu_memory_reports_peaks_in_gib_then_resets_them(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 3 * 2**30)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device: 4.5 * 2**30)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: calls.append(device))
    device = torch.device("cuda", 0)
    assert memory_metrics(device) == {throughput.MAX_ALLOCATED_KEY: 3.0, throughput.MAX_RESERVED_KEY: 4.5}
    assert calls == [device]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA or ROCm device")
def test_gpu_memory_peak_on_a_real_device():
    device = torch.device("cuda")
    memory_metrics(device)  # reset
    block = torch.empty(2**30, dtype=torch.uint8, device=device)
    del block
    assert memory_metrics(device)[throughput.MAX_ALLOCATED_KEY] >= 1.0
    assert memory_metrics(device)[throughput.MAX_ALLOCATED_KEY] < 1.0  # the peak was reset
