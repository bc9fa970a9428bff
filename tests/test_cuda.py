"""What only a GPU can check (``pytest -m cuda``; scripts/device_check.sh runs these): the engine's
CUDA options train like the fp32 reference, evaluation on the GPU matches the CPU, the pipeline
runs end to end on CUDA and times the GPU latency. Skipped on a machine without CUDA."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch

from pruning.data import load_cifar
from pruning.models import build, default_spec
from pruning.train import PLAIN, Engine, Schedule, evaluate, make_optimizer, train_one_epoch
from tests.conftest import TINY_CIFAR

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (CUDA)"),
]


def _epoch(fake_cifar, engine: Engine, device: str) -> tuple[torch.nn.Module, dict]:
    data = load_cifar("cifar10", fake_cifar, strict_sizes=False).to(device)
    data.augment = False
    torch.manual_seed(0)
    model = build(default_spec("resnet_cifar", depth=8, base_width=8)).to(device)
    stats = train_one_epoch(
        model,
        data,
        make_optimizer(model, Schedule(epochs=1, lr=0.05, batch_size=25)),
        25,
        torch.Generator().manual_seed(3),
        engine=engine,
        forward=engine.prepare(model),
    )
    return model, stats


def test_cuda_engine_auto_trains_like_fp32(fake_cifar) -> None:
    auto = Engine.from_config({"channels_last": "auto", "amp_bf16": "auto"}, "cuda")
    assert auto.channels_last and auto.amp_bf16
    _, fp32 = _epoch(fake_cifar, PLAIN, "cuda")
    _, fast = _epoch(fake_cifar, auto, "cuda")
    assert fast["train_loss"] == pytest.approx(fp32["train_loss"], rel=0.05)  # bf16 autocast: ~3 digits


def test_cuda_fp32_epoch_matches_cpu(fake_cifar) -> None:
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    cpu_model, cpu = _epoch(fake_cifar, PLAIN, "cpu")
    gpu_model, gpu = _epoch(fake_cifar, PLAIN, "cuda")
    assert gpu["train_loss"] == pytest.approx(cpu["train_loss"], rel=1e-3)
    data = load_cifar("cifar10", fake_cifar, strict_sizes=False)
    on_cpu = evaluate(cpu_model, data)
    on_gpu = evaluate(copy.deepcopy(cpu_model).cuda(), data.to("cuda"), device="cuda")
    assert on_gpu["top1"] == pytest.approx(on_cpu["top1"], abs=100 / len(data.test) + 1e-9)  # one image at most
    assert on_gpu["test_loss"] == pytest.approx(on_cpu["test_loss"], rel=1e-4)
    del gpu_model


def test_cuda_pipeline_end_to_end(fake_cifar, tmp_path) -> None:
    """prune-exp on CUDA: a GPU device name, the GPU latency setting, peak GPU memory recorded."""
    env = {**os.environ, "PRUNE_LAB_RESULTS": str(tmp_path)}
    cmd = [sys.executable, "-m", "pruning.cli.exp", *TINY_CIFAR, f"data.root={fake_cifar}", "method.ratio=0.5"]
    cmd += ["device=cuda", "quiet=true", "latency.gpu_batch_size=32"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (path,) = (tmp_path / "runs").rglob("metrics.json")
    m = json.loads(path.read_text())
    assert m["status"] == "done" and m["device"] == torch.cuda.get_device_name(0)
    assert "cuda_b32" in m["latency"] and m["latency"]["cuda_b32"]["dense_ms"] > 0
    assert m["stages"]["pretrain"].get("peak_gpu_mem_mb", 0) > 0
