"""bench/sd_finetune.py: the --tiny smoke run measures every route on the CPU, a real-size run without a GPU
is refused in one line, the real-size shapes are SD 1.5's, and the GPU peaks are looked up by name."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "sd_finetune.py"
CPU_ONLY = os.environ | {"CUDA_VISIBLE_DEVICES": ""}  # the CPU path, also on a machine with a GPU


def _bench_module():
    spec = importlib.util.spec_from_file_location("sd_finetune", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_measures_every_route(tmp_path):
    """--tiny trains all four routes on the CPU and writes images/s, step times, ratios and FLOPs."""
    out = tmp_path / "x.json"
    cmd = [
        sys.executable,
        str(BENCH),
        "--tiny",
        "--steps",
        "3",
        "--out",
        str(out),
        "--work",
        str(tmp_path / "w"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=CPU_ONLY, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    routes = doc["routes"]
    assert list(routes) == ["phenogen-lora", "plain-lora", "phenogen-full", "plain-full"]
    for name, r in routes.items():
        assert "error" not in r, (name, r)
        assert r["images_per_s"] > 0 and len(r["step_seconds"]) == 3, name
    assert routes["plain-full"]["ratio_to_plain"] == 1.0
    assert routes["phenogen-lora"]["ratio_to_plain"] == pytest.approx(
        routes["phenogen-lora"]["images_per_s"] / routes["plain-lora"]["images_per_s"]
    )
    flops = doc["model"]["flops_per_image"]
    assert flops["full"] > flops["lora"] > 0  # LoRA's backward computes no gradients of the frozen weights
    assert doc["settings"]["resolution"] == 16 and doc["machine"]["device"] == "cpu"
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 2 + 4 and all(f"| {name} |" in proc.stdout for name in routes)
    assert not (tmp_path / "w" / "run-phenogen-lora").exists()  # the runs' directories are cleaned up


def test_real_size_run_without_a_gpu_is_refused_in_one_line(tmp_path):
    """Without --tiny and without CUDA: exit 2, one line on stderr that says what to do, nothing written."""
    out = tmp_path / "x.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--out", str(out)], capture_output=True, text=True,
                          env=CPU_ONLY, timeout=300)  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "GPU" in lines[0] and "--tiny" in lines[0], proc.stderr
    assert proc.stdout == "" and not out.exists()


def test_real_size_shapes_are_stable_diffusion_15():
    """The randomly initialised model has SD 1.5's parameter counts (UNet 859,520,964; VAE 83,653,863)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    bench = _bench_module()
    with torch.device("meta"):
        unet = UNet2DConditionModel(**bench.SD15_UNET)
        vae = AutoencoderKL(**bench.SD15_VAE)
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863


@pytest.mark.parametrize(
    "name, peak",
    [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H200", 989.0), ("NVIDIA H100 PCIe", 756.0),
     ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA H100 NVL", None), ("NVIDIA GeForce RTX 4090", None)],
)  # fmt: skip
def test_peak_tflops_by_device_name(name, peak):
    """Known GPUs get their dense bf16 peak; others none (the script then asks for --peak-tflops)."""
    assert _bench_module().default_peak_tflops(name) == peak


def test_a_failing_route_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    """An out-of-memory route (injected: the CPU has no such error) is recorded; the next route still runs."""
    import torch

    bench = _bench_module()

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(bench, "run_plain", oom)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "x.json"
    argv = ["--tiny", "--steps", "1", "--routes", "plain-lora,phenogen-lora", "--out", str(out)]
    assert bench.main(argv) == 1  # the JSON is written, the exit status says a route failed
    routes = json.loads(out.read_text())["routes"]
    assert routes["plain-lora"]["error"].startswith("OutOfMemoryError: CUDA out of memory")
    assert routes["phenogen-lora"]["images_per_s"] > 0 and "ratio_to_plain" not in routes["phenogen-lora"]
