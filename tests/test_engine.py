"""The fast engine trains like the plain DataLoader loop (up to numerical noise), its batched
augmentation is the usual pad-crop + flip, and DDP (gloo, 2 CPU processes) runs the pipeline."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pruning.data import crop_flip, load_cifar
from pruning.models import build, default_spec
from pruning.train import PLAIN, Engine, make_optimizer, plain_train_one_epoch, train_one_epoch
from pruning.train import Schedule as TrainSchedule
from tests.conftest import TINY_CIFAR


def _one_epoch_both_ways(fake_cifar, engine: Engine):
    data = load_cifar("cifar10", fake_cifar, strict_sizes=False)
    data.augment = False
    torch.manual_seed(0)
    model = build(default_spec("resnet_cifar", depth=8, base_width=4))
    reference = copy.deepcopy(model)
    schedule = TrainSchedule(epochs=1, lr=0.05, batch_size=25)

    fast = train_one_epoch(
        model,
        data,
        make_optimizer(model, schedule),
        25,
        torch.Generator().manual_seed(3),
        engine=engine,
        forward=engine.prepare(model),
    )
    # the same batches, through a DataLoader of normalised tensors (the torchvision-style loop)
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(3))
    dataset = TensorDataset(data.normalise(data.train.images), data.train.labels)
    loader = DataLoader(dataset, batch_size=25, sampler=order.tolist())
    plain = plain_train_one_epoch(reference, loader, make_optimizer(reference, schedule), "cpu")
    return model, reference, fast, plain


def test_engine_fp32_is_identical_to_the_plain_loop(fake_cifar) -> None:
    model, reference, fast, plain = _one_epoch_both_ways(fake_cifar, PLAIN)
    assert fast["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-6)
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_engine_channels_last_matches_up_to_noise(fake_cifar) -> None:
    model, reference, fast, plain = _one_epoch_both_ways(fake_cifar, Engine(channels_last=True))
    assert fast["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-4)
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items(), strict=True):
        scale = b.float().abs().max().clamp_min(1e-6)
        assert ((a.float() - b.float()).abs().max() / scale) < 2e-2, name  # 8 SGD steps of float noise


def test_engine_bf16_autocast_stays_close(fake_cifar) -> None:
    _, _, fast, plain = _one_epoch_both_ways(fake_cifar, Engine(amp_bf16=True))
    assert fast["train_loss"] == pytest.approx(plain["train_loss"], rel=0.05)


def test_batched_crop_flip_equals_per_image_crop() -> None:
    images = torch.randint(0, 255, (3, 3, 8, 8), dtype=torch.uint8)
    dy, dx, flip = torch.tensor([0, 4, 8]), torch.tensor([8, 2, 0]), torch.tensor([False, True, True])
    out = crop_flip(images, 4, dy, dx, flip)
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for i in range(3):
        crop = padded[i, :, dy[i] : dy[i] + 8, dx[i] : dx[i] + 8]
        assert torch.equal(out[i], crop.flip(-1) if flip[i] else crop)


def test_engine_config_auto_is_channels_last_on_cpu_and_bf16_only_on_cuda() -> None:
    auto = {"channels_last": "auto", "amp_bf16": "auto"}
    assert Engine.from_config(auto, "cpu") == Engine(channels_last=True)
    assert Engine.from_config(auto, "cuda") == Engine(True, True)
    assert Engine.from_config({"channels_last": False}, "cpu") == PLAIN  # engine=plain: the reference


def test_channels_last_gradient_is_as_close_to_float64_as_nchw() -> None:
    """One forward/backward of a ResNet in channels_last (the CPU default) against the same step in
    float64: the whole gradient agrees to fp32 rounding (relative L2 error; a ReLU whose input
    rounds across zero flips a few entries, so no entry-wise bound is meaningful). Measured here:
    NCHW ~1e-6 to 5e-4, channels_last ~2e-6 to 1.5e-3 (ResNet-8 / 20, 4 seeds): the same order."""
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build(default_spec("resnet_cifar", depth=8, base_width=8))
        x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
        grads = {}
        for name, net, inputs in (
            ("float64", copy.deepcopy(model).double(), x.double()),
            ("channels_last", Engine(channels_last=True).prepare(copy.deepcopy(model)), Engine(True).inputs(x)),
        ):
            torch.nn.functional.cross_entropy(net(inputs), y).backward()
            grads[name] = torch.cat([p.grad.double().reshape(-1) for p in net.parameters()])
        error = (grads["channels_last"] - grads["float64"]).norm() / grads["float64"].norm()
        assert error < 5e-3, (seed, float(error))


def test_engine_leaves_token_ids_alone() -> None:
    ids = torch.randint(0, 5, (2, 7))
    assert Engine(channels_last=True).inputs(ids) is ids


@pytest.mark.integration  # make test-integration (subprocesses, sweeps, torchrun, wheel build)
def test_ddp_two_cpu_processes_run_the_pipeline(fake_cifar, tmp_path) -> None:
    """torchrun, gloo backend, 2 ranks: one metrics.json written by rank 0, one history line
    per epoch, test metrics reduced over the whole test set."""
    env = {**os.environ, "PRUNE_LAB_RESULTS": str(tmp_path), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "pruning.cli.exp",
        *TINY_CIFAR,
        f"data.root={fake_cifar}",
        "method.ratio=0.5",
        "device=cpu",
        "quiet=true",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (path,) = (tmp_path / "runs").rglob("metrics.json")
    m = json.loads(path.read_text())
    assert m["status"] == "done" and m["world_size"] == 2
    history = (path.parent / "history.jsonl").read_text().splitlines()
    assert len(history) == 1
    (baseline,) = (tmp_path / "cache" / "baselines").iterdir()
    assert len((baseline / "history.jsonl").read_text().splitlines()) == 2
    # accuracy is a fraction of the full 60-image test set (reduced across ranks)
    assert round(m["stages"]["pretrain"]["top1"] * 60 / 100, 6).is_integer()
