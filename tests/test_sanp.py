"""SANP (method=sanp): exact per-sample MACs, the batch-1 skipping path, the straight-through gates,
the budget loss, prune() end to end (cache, resume), config errors. Every test is a few seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pruning import PruneLabError
from pruning.cache import digest
from pruning.data import ImageData, Split
from pruning.measure import count_macs
from pruning.methods.base import PruneContext
from pruning.methods.sanp import SANP, cost_loss
from pruning.models import build, channel_groups, default_spec
from pruning.models.sanp import decisions, per_sample_macs
from tests.conftest import run_path

SMALL_VGG = {"cfg": [8, 8, "M", 16, "M", 16, 16], "hidden": 8}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny nets: one intra-op thread is faster, and fair to whatever else runs on the machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _sanp(base: dict, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build(default_spec("sanp", base=base, **kw))


def _resnet20():
    return _sanp(default_spec("resnet_cifar", depth=20))


def _vgg():
    return _sanp(default_spec("vgg_cifar", **SMALL_VGG))


def _randomise_gates(model, std: float = 3.0, bias_std: float = 1.0) -> None:
    """Gates whose decisions differ across channels and samples."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for spm in model.gates:
            spm.fc2.weight.copy_(torch.randn(spm.fc2.weight.shape, generator=g) * std)
            spm.fc2.bias.copy_(torch.randn(spm.fc2.bias.shape, generator=g) * bias_std)


# ----------------------------------------------------------------------------- MAC counting
@pytest.mark.parametrize("make", [_resnet20, _vgg])
def test_all_open_costs_dense_plus_spm(make) -> None:
    model = make().eval()
    x = torch.randn(3, 3, 16, 16)
    dense = count_macs(model.base, (3, 16, 16))
    spm = sum(g.c_in * g.hidden + g.hidden * g.c_out for g in model.gates)
    assert model.spm_macs() == spm > 0
    with model.masked(open_gates=True):
        open_macs = per_sample_macs(model, x)
        assert count_macs(model, (3, 16, 16)) == dense + spm  # count_macs's own hooks agree
    assert open_macs.dtype == torch.int64
    assert open_macs.tolist() == [dense + spm] * 3
    assert len(model.sites) == (9 if model.kind == "resnet" else 5)
    assert channel_groups(model.spec) == []


def test_hand_counted_small_vgg_and_resnet() -> None:
    # VGG: conv0 3->4 at 8x8, maxpool, conv1 4->6 at 4x4, Linear(6, 2); SPM hidden = max(4, C_in // 4) = 4
    model = _sanp(default_spec("vgg_cifar", cfg=[4, "M", 6], hidden=0, num_classes=2)).eval()
    keep0, keep1 = [1, 0, 1, 0], [1, 1, 0, 0, 0, 1]
    with torch.no_grad():
        for spm, keep in zip(model.gates, (keep0, keep1), strict=True):
            spm.fc2.weight.zero_()
            spm.fc2.bias.copy_(torch.tensor(keep, dtype=torch.float) * 2 - 1)
    k0, k1 = sum(keep0), sum(keep1)
    hand = k0 * 3 * 9 * 64 + k1 * k0 * 9 * 16 + k1 * 2 + (3 * 4 + 4 * 4) + (k0 * 4 + 4 * 6)
    assert per_sample_macs(model, torch.randn(2, 3, 8, 8)).tolist() == [hand, hand]
    assert [d[0].tolist() for d in decisions(model, torch.randn(1, 3, 8, 8))] == [keep0, keep1]

    # ResNet-8 (one block per stage) on 8x8: stem, three gated blocks (mid kept 5 / 7 / 3), fc
    model = _sanp(default_spec("resnet_cifar", depth=8)).eval()
    kept = [5, 7, 3]
    with torch.no_grad():
        for spm, k in zip(model.gates, kept, strict=True):
            spm.fc2.weight.zero_()
            spm.fc2.bias.fill_(-1.0)
            spm.fc2.bias[:k] = 1.0
    k0, k1, k2 = kept
    hand = (
        16 * 3 * 9 * 64  # stem
        + k0 * 16 * 9 * 64 + 16 * k0 * 9 * 64  # stage 0 block: conv1 (gated), conv2 (kept inputs)
        + k1 * 16 * 9 * 16 + 32 * k1 * 9 * 16  # stage 1 (stride 2: 4x4)
        + k2 * 32 * 9 * 4 + 64 * k2 * 9 * 4  # stage 2 (2x2)
        + 64 * 10  # fc
        + (16 * 4 + 4 * 16) + (16 * 4 + 4 * 32) + (32 * 8 + 8 * 64)  # SPMs (hidden 4, 4, 8)
    )  # fmt: skip
    assert per_sample_macs(model, torch.randn(2, 3, 8, 8)).tolist() == [hand, hand]


@pytest.mark.parametrize("make", [_resnet20, _vgg])
def test_per_sample_costs_differ_and_match_each_sample_alone(make) -> None:
    model = make().eval()
    _randomise_gates(model)
    x = torch.randn(4, 3, 16, 16) * 2
    macs = per_sample_macs(model, x)
    assert len(set(macs.tolist())) > 1  # the decisions are per sample
    alone = [int(per_sample_macs(model, x[i : i + 1].repeat(2, 1, 1, 1))[0]) for i in range(4)]
    assert alone == macs.tolist()  # a sample's cost does not depend on its batch (eval BN)


# ----------------------------------------------------------------------------- the skipping path
@pytest.mark.parametrize("make", [_resnet20, _vgg])
def test_skipping_path_equals_masked_path(make) -> None:
    model = make().eval()
    _randomise_gates(model)
    with torch.no_grad():  # one gate closes every channel: the zero-channel case
        model.gates[1].fc2.bias.fill_(-1e4)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad(), model.masked():
        masked = model(x)
        masked_decisions = [m.clone() for m in model.last_masks]
    for i in range(4):
        with torch.no_grad():
            skipped = model(x[i : i + 1])  # eval, batch 1: the skipping path
        torch.testing.assert_close(skipped, masked[i : i + 1], rtol=1e-4, atol=1e-4)
        assert [m[0].tolist() for m in model.last_masks] == [m[i].tolist() for m in masked_decisions]
    kept = torch.stack([m.sum(1) for m in masked_decisions], 1)
    assert (kept[:, 1] == 0).all() and (kept > 0).any()


@pytest.mark.parametrize("make", [_resnet20, _vgg])
def test_a_logit_of_exactly_zero_opens_its_channel_in_every_path(make) -> None:
    """One rule (gate_open: logit >= 0): training (both relaxations), masked path, skipping path."""
    from pruning.models.sanp import gate_open, relaxed_mask

    zero = torch.zeros(2, 3)
    assert gate_open(zero).tolist() == [[1.0] * 3] * 2
    assert relaxed_mask(zero, 2 / 3, "sigmoid_st").tolist() == [[1.0] * 3] * 2
    assert gate_open(torch.tensor([-1e-30, -0.0, 0.0, 1e-30])).tolist() == [0.0, 1.0, 1.0, 1.0]
    model = make().eval()
    _randomise_gates(model)
    with torch.no_grad():  # channel 0 of every gate: logit exactly 0 whatever the input
        for spm in model.gates:
            spm.fc2.weight[0].zero_()
            spm.fc2.bias[0] = 0.0
    x = torch.randn(4, 3, 16, 16)
    masked = decisions(model, x)
    assert all(bool((m[:, 0] == 1).all()) for m in masked)
    recorded = per_sample_macs(model, x)
    terms = model.cost_terms((3, 16, 16))
    for i in range(4):
        with torch.no_grad():
            model(x[i : i + 1])  # the skipping path
        assert all(float(m[0, 0]) == 1.0 for m in model.last_masks)
        executed = model.macs_from_masks([m.round().long() for m in model.last_masks], terms)
        assert int(executed[0]) == int(recorded[i])


def test_skipping_path_really_skips() -> None:
    """At batch 1 the gated convs are not called as modules (their slices are)."""
    model = _resnet20().eval()
    calls = []
    model.base.stages[0][0].conv1.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
        assert calls == []
        model(torch.randn(2, 3, 32, 32))
    assert calls == [1]


# ----------------------------------------------------------------------------- relaxation and budget
@pytest.mark.parametrize("relaxation", ["gumbel_st", "sigmoid_st"])
def test_straight_through_gradient_reaches_every_gate(relaxation: str) -> None:
    model = _sanp(default_spec("resnet_cifar", depth=20), relaxation=relaxation).train()
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    logits = model(x)
    masks = model.last_masks
    assert all(set(m.detach().unique().tolist()) <= {0.0, 1.0} for m in masks)  # hard in the forward
    ratio = model.macs_from_masks(masks, model.cost_terms((3, 16, 16))).mean() / count_macs(model.base, (3, 16, 16))
    (F.cross_entropy(logits, y) + ratio).backward()
    for spm in model.gates:
        assert spm.fc2.weight.grad is not None and spm.fc2.weight.grad.abs().sum() > 0
        assert spm.fc1.weight.grad.abs().sum() > 0


def test_budget_loss_drives_mean_cost_toward_target() -> None:
    model = _sanp(default_spec("resnet_cifar", depth=8)).train()
    x = torch.randn(8, 3, 8, 8)
    terms = model.cost_terms((3, 8, 8))
    dense = count_macs(model.base, (3, 8, 8))
    opt = torch.optim.Adam(model.gates.parameters(), lr=0.05)
    target = 0.5
    ratios = []
    for _ in range(30):
        model(x)
        ratio = model.macs_from_masks(model.last_masks, terms).mean() / dense
        loss = cost_loss(ratio, target, "squared")
        opt.zero_grad()
        loss.backward()
        opt.step()
        ratios.append(float(ratio.detach()))
    assert ratios[0] > 0.8
    assert abs(sum(ratios[-5:]) / 5 - target) < 0.12
    model.eval()
    assert abs(float(per_sample_macs(model, x).double().mean()) / dense - target) < 0.15
    assert float(cost_loss(torch.tensor(0.4), 0.5, "hinge")) == 0.0
    assert float(cost_loss(torch.tensor(0.7), 0.5, "hinge")) == pytest.approx(0.2)
    assert float(cost_loss(torch.tensor(0.7), 0.5, "squared")) == pytest.approx(0.04)


# ----------------------------------------------------------------------------- prune() end to end
def _random_cifar(n_train: int = 32, n_test: int = 20, side: int = 32) -> ImageData:
    g = torch.Generator().manual_seed(1)

    def split(n: int) -> Split:
        labels = torch.arange(n) % 4
        images = (torch.rand(n, 3, side, side, generator=g) * 120 + labels.view(-1, 1, 1, 1) * 30).to(torch.uint8)
        return Split(images, labels)

    return ImageData("cifar10", split(n_train), split(n_test), 10, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), True)


def _ctx(tmp_path: Path, name: str, cache: bool = True, side: int = 32, **kw) -> PruneContext:
    work = tmp_path / name
    work.mkdir(parents=True, exist_ok=True)
    return PruneContext(
        data=_random_cifar(side=side),
        input_shape=(3, side, side),
        work_dir=work,
        cache_dir=tmp_path / "cache" if cache else None,
        source_id="dense-src" if cache else None,
        **kw,
    )


def test_prune_end_to_end_resnet20_cached(tmp_path: Path) -> None:
    torch.manual_seed(0)
    dense = build(default_spec("resnet_cifar", depth=20))
    method = SANP(ratio=0.5, epochs=1, batch_size=16, lr=0.01)
    method.validate("resnet20", dense.spec)
    result = method.prune(dense, _ctx(tmp_path, "run", side=16))
    ex = result.extras
    cost = ex["cost_per_sample"]
    assert cost["unit"] == "MACs" and cost["dense"] == count_macs(dense, (3, 16, 16))
    assert cost["target_mean"] == pytest.approx(0.5 * cost["dense"])
    assert cost["p5"] <= cost["mean"] <= cost["p95"] and cost["samples"] == 20
    assert ex["budget_hit"]["requested_reduction_pct"] == 50.0
    assert ex["budget_hit"]["achieved_reduction_pct"] == pytest.approx(100 * (1 - cost["mean"] / cost["dense"]))
    target = ex["target"]  # asked / achieved as fractions; met within 10% of the asked amount
    assert target["quantity"] == "mean_macs_reduction" and target["asked"] == 0.5
    assert target["achieved"] == pytest.approx(ex["budget_hit"]["achieved_reduction_pct"] / 100)
    assert target["met"] == (abs(target["achieved"] - 0.5) <= 0.05)
    check = ex["skip_path_check"]  # the skipping path executes what was recorded (same rule)
    assert check["samples"] == 20 and check["max_rel_macs_diff"] < 0.01
    rates = ex["keep_rates"]
    assert len(rates["layers"]) == len(rates["overall"]) == 9 and len(rates["per_class"]) == 10
    assert rates["per_class"][0] is not None and rates["per_class"][9] is None  # labels 0..3 only
    assert (tmp_path / "run" / "sanp_keep_rates.png").stat().st_size > 5000
    assert not (tmp_path / "run" / "ckpt_sanp.pt").exists()
    own = result.own_stage
    assert own["name"] == "sanp" and own["epochs"] == 1 and own["samples"] == 32
    assert own["macs_per_sample"] == cost["dense"] + result.model.spm_macs()
    # the spec rebuilds the network (the pipeline's build(spec) + load_state_dict)
    again_built = build(result.spec)
    again_built.load_state_dict(result.model.state_dict())
    x = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(per_sample_macs(again_built, x), per_sample_macs(result.model, x))
    # the dense weights were the start: the SANP backbone has the dense net's keys
    assert set(result.model.base.state_dict()) == set(dense.state_dict())
    hit = method.prune(dense, _ctx(tmp_path, "run2", side=16))
    assert hit.extras["sanp_cached"] and hit.extras["cost_per_sample"] == cost
    other = SANP(ratio=0.3, epochs=1, batch_size=16, lr=0.01)
    assert digest(other.identity(result.model, _ctx(tmp_path, "x"))) != digest(
        method.identity(result.model, _ctx(tmp_path, "x"))
    )


def test_a_run_far_from_its_target_says_so(tmp_path: Path) -> None:
    from pruning.summary import summary_table

    torch.manual_seed(0)
    dense = build(default_spec("vgg_cifar", **SMALL_VGG))
    said: list[str] = []
    method = SANP(ratio=0.9, epochs=1, batch_size=16, lr=0.01)  # 2 steps cannot remove 90%
    result = method.prune(dense, _ctx(tmp_path, "run", cache=False, side=16, say=said.append))
    target = result.extras["target"]
    assert target["met"] is False and target["asked"] == 0.9 and target["achieved"] < 0.81
    assert any(line.startswith("warning: SANP: target missed: asked 90.0% mean MACs removed") for line in said)
    metrics = {
        "key": {"method": "sanp", "model": "vgg", "data": "cifar10", "ratio": 0.9, "finetune": "none", "seed": 0},
        "status": "done",
        "extras": {"target": target},
        "stages": {},
    }
    assert "[yellow]warning: sanp: target missed: asked 90.0%" in str(summary_table(metrics).caption)
    metrics["extras"]["target"] = {**target, "met": True}
    assert "target" not in str(summary_table(metrics).caption)


@pytest.mark.parametrize("gate_optimizer", ["sgd", "adam"])
def test_prune_vgg_and_resumes_from_the_epoch_checkpoint(tmp_path: Path, gate_optimizer: str) -> None:
    class Killed(Exception):
        pass

    def dies_after_epoch_1(message: str) -> None:
        if "epoch 1/2" in message:
            raise Killed

    torch.manual_seed(0)
    dense = build(default_spec("vgg_cifar", **SMALL_VGG))
    method = SANP(
        ratio=0.4,
        epochs=2,
        batch_size=16,
        lr=0.01,
        relaxation="sigmoid_st",
        cost_loss="hinge",
        gate_optimizer=gate_optimizer,
    )
    with pytest.raises(Killed):
        method.prune(dense, _ctx(tmp_path, "run", cache=False, side=16, quiet=False, say=dies_after_epoch_1))
    assert (tmp_path / "run" / "ckpt_sanp.pt").exists()
    said: list[str] = []
    resumed = method.prune(dense, _ctx(tmp_path, "run", cache=False, side=16, quiet=False, say=said.append))
    assert any("resumed after epoch 1/2" in s for s in said)
    assert sum("epoch 2/2" in s for s in said) == 1 and not any("epoch 1/2 CE" in s for s in said)
    straight = method.prune(dense, _ctx(tmp_path, "straight", cache=False, side=16))
    for a, b in zip(resumed.model.state_dict().values(), straight.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    assert resumed.own_stage["samples"] == straight.own_stage["samples"] == 64
    assert len(resumed.extras["keep_rates"]["overall"]) == 5


# ----------------------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    "kw,key",
    [
        ({"ratio": 1.2}, "method.ratio"),
        ({"epochs": 0}, "method.epochs"),
        ({"batch_size": 1}, "method.batch_size"),
        ({"lr": -1}, "method.lr"),
        ({"cost_weight": "x"}, "method.cost_weight"),
        ({"cost_loss": "cubic"}, "method.cost_loss"),
        ({"relaxation": "topk"}, "method.relaxation"),
        ({"temperature": 0}, "method.temperature"),
        ({"lr_schedule": "poly"}, "method.lr_schedule"),
        ({"reduction": 0}, "method.reduction"),
        ({"gate_optimizer": "rmsprop"}, "method.gate_optimizer"),
        ({"gate_lr": 0}, "method.gate_lr"),
    ],
)
def test_bad_config_values_name_the_key(kw: dict, key: str) -> None:
    with pytest.raises(PruneLabError, match=key.replace(".", r"\.")):
        SANP(**kw)


def test_validate_refuses_unsupported_models() -> None:
    method = SANP()
    for name, spec in (("resnet20", default_spec("resnet_cifar", depth=20)), ("vgg16", default_spec("vgg_cifar"))):
        method.validate(name, spec)
    method.validate("resnet18", default_spec("resnet_imagenet", depth=18))
    for name, spec in (("resnet50", default_spec("resnet_imagenet", depth=50)), ("lenet5_caffe", {"arch": "lenet"})):
        with pytest.raises(PruneLabError, match=f"model={name}.*resnet56.*vgg16.*resnet18"):
            method.validate(name, spec)


def test_imagenet_resnet18_gates_and_skips() -> None:
    model = _sanp(default_spec("resnet_imagenet", depth=18, num_classes=5)).eval()
    _randomise_gates(model)
    assert len(model.sites) == 8
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), model.masked():
        masked = model(x)
    with torch.no_grad():
        torch.testing.assert_close(model(x[1:]), masked[1:], rtol=1e-4, atol=1e-4)
    with model.masked(open_gates=True):
        assert per_sample_macs(model, x).tolist() == [count_macs(model.base, (3, 64, 64)) + model.spm_macs()] * 2


def test_method_config_composes(tmp_path: Path) -> None:
    from conftest import plain_cfg

    cfg = plain_cfg(["method=sanp", "model=resnet56", "data=cifar10"], tmp_path)
    assert cfg["finetune"]["name"] == "none"
    method = SANP(**{k: v for k, v in cfg["method"].items() if k not in ("_target_", "name")})
    assert method.ratio == 0.5 and method.cost_loss == "squared" and method.relaxation == "gumbel_st"
    assert method.tag() == "r0.5"


@pytest.mark.integration
def test_sanp_through_the_pipeline_records_cost_per_sample(fake_cifar, tmp_path: Path) -> None:
    """prune-exp method=sanp: the run's MACs are the measured mean per test sample (SPMs
    included), with p5 / p95; latency is timed on real test images; the second stage is none."""
    from tests.conftest import pipeline_cfg, run_pipeline

    m = run_pipeline(pipeline_cfg(fake_cifar, tmp_path, "method=sanp", "method.epochs=1", "method.batch_size=50"))
    cost = m["cost_per_sample"]
    assert m["status"] == "done" and m["key"]["finetune"] == "none" and "sanp" in m["stages"]
    assert m["flops_pruned"] == round(cost["mean"]) and cost["p5"] <= cost["mean"] <= cost["p95"]
    assert cost["samples"] == 60 and cost["dense"] == m["flops_dense"]  # the whole (fake) test set
    assert m["latency"]["cpu_b1"]["inputs"] == "test images"
    assert (run_path(m, tmp_path) / "sanp_keep_rates.png").exists()
