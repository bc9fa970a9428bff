"""Pruning from Scratch (pruning/methods/pfs.py, pruning/models/resnet_pfs.py) against the
official code (frankwang345/pruning-from-scratch): models and their MACs, gate placement, gate-only
optimisation, the loss, the save rule, the budget search, and the pipeline without pretraining."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from pruning import PruneLabError
from pruning.measure import count_macs, count_params
from pruning.methods.base import PruneContext
from pruning.methods.pfs import (
    PFS,
    Gates,
    budget_search,
    expanded_spec,
    official_macs,
    pfs_dense_spec,
    rank_gates,
    spec_macs,
    spec_with_widths,
    split_train_val,
)
from pruning.models import build, channel_groups, default_spec
from tests.conftest import compose, pipeline_cfg, plain_cfg, run_path, run_pipeline

# Numbers of the official models, measured by running the official flop_counter.py
# (calculate_flops in script/prune_model.py, input 1x3x32x32) on models.<arch>(10) at HEAD 3102332.
# The official counter also counts the ResNets' AvgPool2d(8) module (its input: 64 x 8 x 8 = 4,096);
# count_macs does not count pooling. VGG pools with an inline nn.AvgPool2d(2), which it misses too.
OFFICIAL = {  # model: (official MACs, official parameters)
    ("resnet_pfs", 20): (40_817_280, 272_474),
    ("resnet_pfs", 32): (69_128_832, 466_906),
    ("resnet_pfs", 56): (125_751_936, 855_770),
    ("resnet_pfs", 110): (253_153_920, 1_730_714),
    ("vgg_cifar", 16): (313_201_664, 14_724_042),
    ("vgg_cifar", 19): (398_136_320, 20_035_018),
}
AVGPOOL = {"resnet_pfs": 4_096, "vgg_cifar": 0}


def _pfs_spec(arch: str, depth: int, **kw) -> dict:
    extra = {"hidden": 0} if arch == "vgg_cifar" else {}
    return default_spec(arch, depth=depth, num_classes=10, in_channels=3, **extra, **kw)


@pytest.mark.parametrize("arch,depth", sorted(OFFICIAL))
def test_dense_macs_and_params_match_the_official_models(arch: str, depth: int) -> None:
    spec = _pfs_spec(arch, depth)
    model = build(spec)
    macs, params = OFFICIAL[(arch, depth)]
    assert count_macs(model, (3, 32, 32)) == macs - AVGPOOL[arch]
    assert spec_macs(spec, (3, 32, 32)) == macs - AVGPOOL[arch]
    assert count_params(model) == params


def test_expanded_nets_match_the_official_expanded_models() -> None:
    # official models.resnet56(10, 32): 502,113,536 MACs (with the pool's 8,192), 3,412,394 params;
    # models.vgg16_bn(10, 80): 488,823,040 MACs, 23,001,530 params
    wide = expanded_spec(_pfs_spec("resnet_pfs", 56), 32)
    assert (spec_macs(wide, (3, 32, 32)), count_params(build(wide))) == (502_113_536 - 8_192, 3_412_394)
    assert wide["stem"] == 32 and [s["width"] for s in wide["stages"]] == [32, 64, 128]
    wide = expanded_spec(_pfs_spec("vgg_cifar", 16), 80)
    assert wide["cfg"][:3] == [80, 80, "M"] and wide["cfg"][-1] == 640
    assert (spec_macs(wide, (3, 32, 32)), count_params(build(wide))) == (488_823_040, 23_001_530)


@pytest.mark.parametrize("arch,depth", sorted(OFFICIAL))
def test_the_budget_counts_macs_as_the_official_counter_pool_included(arch: str, depth: int) -> None:
    assert official_macs(_pfs_spec(arch, depth), (3, 32, 32)) == OFFICIAL[(arch, depth)][0]
    # the expanded ResNet-56 at e = 32: 502,113,536 with its pool's 128 * 8 * 8 (official counter)
    assert official_macs(expanded_spec(_pfs_spec("resnet_pfs", 56), 32), (3, 32, 32)) == 502_113_536


def test_closed_form_macs_equal_count_macs_on_pruned_specs() -> None:
    g = torch.Generator().manual_seed(0)
    for spec in (expanded_spec(_pfs_spec("resnet_pfs", 20), 24), expanded_spec(_pfs_spec("vgg_cifar", 16), 40)):
        groups = channel_groups(spec)
        widths = [int(torch.randint(1, grp.size + 1, (1,), generator=g)) for grp in groups]
        small = spec_with_widths(spec, [grp.spec_path for grp in groups], widths)
        assert spec_macs(small, (3, 32, 32)) == count_macs(build(small), (3, 32, 32))


def test_option_a_and_li_vgg_configs_map_to_the_pfs_nets() -> None:
    resnet = pfs_dense_spec(default_spec("resnet_cifar", depth=56))
    assert resnet["arch"] == "resnet_pfs" and resnet == _pfs_spec("resnet_pfs", 56)
    vgg = pfs_dense_spec(default_spec("vgg_cifar", depth=16))  # Li et al.'s 512-unit head -> one Linear
    assert vgg == _pfs_spec("vgg_cifar", 16)
    with pytest.raises(PruneLabError, match="no gated form"):
        pfs_dense_spec(default_spec("densenet_cifar", depth=40))
    blocks = [m for m in build(resnet).modules() if m.__class__.__name__ == "BasicBlock"]
    projections = [b.shortcut for b in blocks if len(b.shortcut)]
    assert len(projections) == 2  # option B where the stride/width changes: 1x1 conv + BN
    assert all(
        isinstance(p[0], nn.Conv2d) and p[0].kernel_size == (1, 1) and isinstance(p[1], nn.BatchNorm2d)
        for p in projections
    )


# ----------------------------------------------------------------------------- gates


@pytest.mark.parametrize("arch,depth", [("resnet_pfs", 8), ("vgg_cifar", 11)])
def test_gates_multiply_after_bn_before_relu_where_the_official_code_puts_them(arch: str, depth: int) -> None:
    torch.manual_seed(0)
    model = build(_pfs_spec(arch, depth)).eval()
    gates = Gates(model, "cpu")
    if arch == "resnet_pfs":  # block mid channels only (gate.py new_basicblock_forward)
        assert gates.names == ["stages.0.0.mid", "stages.1.0.mid", "stages.2.0.mid"]
        assert all(
            bn is model.get_submodule(n.replace(".mid", ".bn1")) for bn, n in zip(gates.bns, gates.names, strict=True)
        )
    else:  # every conv (gate.py new_convbn_forward)
        assert len(gates.params) == sum(1 for m in model.modules() if isinstance(m, nn.Conv2d))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in gates.params:
            p.copy_(torch.rand(p.shape, generator=g))
    x = torch.randn(4, 3, 32, 32, generator=g)
    gated = model(x)
    # g * BN(x) == BN with scale g*gamma and shift g*beta: the gate sits on BN's output, before ReLU
    gates.remove()
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for bn, p in zip(gates.bns, gates.params, strict=True):
            twin = reference.get_submodule(next(n for n, m in model.named_modules() if m is bn))
            twin.weight.mul_(p)
            twin.bias.mul_(p)
    assert torch.allclose(gated, reference(x), atol=1e-5)


def test_regulariser_is_lambda_times_squared_gap_of_the_global_mean() -> None:
    gates = Gates(build(_pfs_spec("resnet_pfs", 8)), "cpu")  # 16 + 32 + 64 gates
    with torch.no_grad():
        gates.params[0].fill_(1.0)
        gates.params[1].fill_(0.5)
        gates.params[2].fill_(0.0)
    global_mean = (16 * 1.0 + 32 * 0.5) / 112  # not the mean of layer means (0.5)
    assert gates.regulariser(0.5, 0.2).item() == pytest.approx(0.5 * (global_mean - 0.2) ** 2)


def _tiny_data(fake_cifar: Path):
    from pruning import data as datasets

    cfg = plain_cfg(["data=cifar10", "data.strict_sizes=false", f"data.root={fake_cifar}"], fake_cifar)
    return datasets.load(cfg["data"])


def test_first_ninety_percent_train_the_gates_and_the_last_ten_validate(fake_cifar: Path) -> None:
    data = _tiny_data(fake_cifar)  # 200 training images
    train, val = split_train_val(data, 0.1)
    assert len(train.train) == 180 and len(val.test) == 20
    assert torch.equal(train.train.labels, data.train.labels[:180])
    assert torch.equal(val.test.labels, data.train.labels[180:])


def test_gate_learning_moves_only_the_gates_clamped_with_bn_in_train_mode(fake_cifar: Path) -> None:
    data = _tiny_data(fake_cifar)
    method = PFS(ratio=0.5, expansion=16, sparsity_level=0.0, gate_epochs=2, batch_size=50, lr=0.05)
    wide = expanded_spec(_pfs_spec("resnet_pfs", 8), 16)
    ctx = PruneContext(data=data, input_shape=(3, 32, 32), seed=0)
    learnt = method.learn_gates(wide, ctx, None)
    flat = torch.cat([torch.tensor(g) for g in learnt["gates"]])
    assert flat.min() >= 0 and flat.max() <= 1 and (flat < 1).any()
    assert learnt["saved_epoch"] == "last"  # s = 0: no epoch has <= 0% non-zero gates
    assert learnt["samples"] == 2 * 180 and learnt["macs_per_sample"] == spec_macs(wide, (3, 32, 32))
    # the official rule keeps the best validation epoch among those with non-zero fraction <= s
    method = PFS(ratio=0.5, expansion=16, sparsity_level=1.0, gate_epochs=2, batch_size=50)
    learnt = method.learn_gates(wide, ctx, None)
    best = max(learnt["history"], key=lambda r: (r["val_top1"], -r["epoch"]))
    assert learnt["saved_epoch"] == best["epoch"]


def test_gate_learning_leaves_weights_and_bn_affine_unchanged_and_updates_running_stats(fake_cifar: Path) -> None:
    data = _tiny_data(fake_cifar)
    wide = expanded_spec(_pfs_spec("resnet_pfs", 8), 16)
    torch.manual_seed(0)
    model = build(wide)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    for p in model.parameters():
        p.requires_grad_(False)
    gates = Gates(model, "cpu")
    optimizer = torch.optim.Adam(gates.params, lr=0.01)
    model.train()
    for images, labels in data.train_batches(50, torch.Generator().manual_seed(0)):
        loss = nn.functional.cross_entropy(model(images), labels) + gates.regulariser(0.5, 0.2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        gates.clamp()
    state = model.state_dict()
    for name, value in state.items():
        if "running" in name or "num_batches" in name:
            continue
        assert torch.equal(value, init[name]), name  # conv, BN affine and fc weights untouched
    assert not torch.equal(state["stages.0.0.bn1.running_mean"], init["stages.0.0.bn1.running_mean"])
    assert all(p.grad is not None for p in gates.params)


# ----------------------------------------------------------------------------- budget search


def _search(spec: dict, gates: list[torch.Tensor], ratio: float, **kw) -> dict:
    paths = [g.spec_path for g in channel_groups(spec)]
    dense = spec_macs(_pfs_spec(spec["arch"], spec["depth"]), (3, 32, 32))
    return budget_search(gates, lambda w: spec_macs(spec_with_widths(spec, paths, w), (3, 32, 32)), dense, ratio, **kw)


@pytest.mark.parametrize("arch,depth,e", [("resnet_pfs", 20, 32), ("resnet_pfs", 56, 32), ("vgg_cifar", 16, 80)])
@pytest.mark.parametrize("ratio", [0.5, 0.7])
def test_budget_search_hits_the_target_within_a_tenth_of_a_percent(arch: str, depth: int, e: int, ratio: float) -> None:
    wide = expanded_spec(_pfs_spec(arch, depth), e)
    g = torch.Generator().manual_seed(depth)
    gates = [torch.rand(grp.size, generator=g) for grp in channel_groups(wide)]
    result = _search(wide, gates, ratio)
    assert result["within_tolerance"]
    assert abs(result["achieved"] - ratio) / ratio <= 0.001
    assert min(result["widths"]) >= 1


def test_tied_gates_are_ranked_by_a_documented_rule() -> None:
    values = torch.tensor([0.5, 0.0, 0.0, 0.0, 0.0, 0.9, 0.0, 0.0])  # layers of 5 and 3 gates
    # spread: each layer's tied zeros at (j + 0.5) / T: layer 0 at 1/8, 3/8, 5/8, 7/8; layer 1 at 1/4, 3/4
    assert rank_gates(values, [5, 3], "spread").tolist() == [5, 0, 1, 6, 2, 3, 7, 4]
    assert rank_gates(values, [5, 3], "position").tolist() == [5, 0, 1, 2, 3, 4, 6, 7]
    with pytest.raises(PruneLabError, match="tie_break"):
        rank_gates(values, [5, 3], "topk")


def _vgg_gates_with_zeros(zero_fraction: float = 0.8) -> tuple[dict, list[torch.Tensor]]:
    """VGG-16 at e = 80 with most gates clamped to exactly 0, as gate learning leaves them (s = 0.2)."""
    wide = expanded_spec(_pfs_spec("vgg_cifar", 16), 80)
    g = torch.Generator().manual_seed(5)
    gates = []
    for grp in channel_groups(wide):
        v = torch.rand(grp.size, generator=g)
        v[torch.randperm(grp.size, generator=g)[: int(zero_fraction * grp.size)]] = 0.0
        gates.append(v)
    return wide, gates


def test_kept_zero_gates_are_spread_over_the_layers_not_given_to_the_first_ones() -> None:
    wide, gates = _vgg_gates_with_zeros()
    spread = _search(wide, gates, 0.5)
    position = _search(wide, gates, 0.5, tie_break="position")
    assert spread["within_tolerance"] and position["within_tolerance"]
    assert spread["tie_break"] == "spread" and spread["tied_kept_gates"] > 0.25 * spread["total_gates"]
    nonzero = [int((v != 0).sum()) for v in gates]
    tied = [w - nz for w, nz in zip(spread["widths"], nonzero, strict=True)]  # zeros kept per layer
    shares = [t / (v == 0).sum().item() for t, v in zip(tied, gates, strict=True)]
    assert max(shares) - min(shares) < 0.1  # every layer keeps about the same share of its zeros
    by_position = [w - nz for w, nz in zip(position["widths"], nonzero, strict=True)]
    zeros = [int((v == 0).sum()) for v in gates]
    assert by_position[0] == zeros[0] and by_position[-1] == 0  # the first layers take every kept zero


def test_budget_search_never_empties_a_layer() -> None:
    wide = expanded_spec(_pfs_spec("resnet_pfs", 20), 32)
    groups = channel_groups(wide)
    gates = [torch.full((grp.size,), 0.9) for grp in groups]
    gates[0].zero_()  # a whole layer at 0 (and many ties): the official topk would empty it
    gates[4][:] = 0.01
    result = _search(wide, gates, 0.7)
    assert result["within_tolerance"] and result["widths"][0] == 1 and min(result["widths"]) >= 1
    assert len(result["keep"][0]) == 1


def test_official_search_alone_stops_after_max_iter_and_refinement_is_recorded() -> None:
    wide = expanded_spec(_pfs_spec("vgg_cifar", 16), 80)
    gates = [torch.rand(grp.size, generator=torch.Generator().manual_seed(3)) for grp in channel_groups(wide)]
    official = _search(wide, gates, 0.5, refine=False, max_iter=3)
    assert official["iterations"] == 3 and not official["official_converged"]
    refined = _search(wide, gates, 0.5, max_iter=3)
    assert refined["within_tolerance"] and refined["iterations"] == 3


def test_unreachable_budgets_are_refused_with_the_reason() -> None:
    wide = expanded_spec(_pfs_spec("resnet_pfs", 20), 80)  # the README's e = 80: trunk alone ~40%
    gates = [torch.rand(grp.size) for grp in channel_groups(wide)]
    with pytest.raises(PruneLabError, match="smaller method.expansion"):
        _search(wide, gates, 0.7)


# ----------------------------------------------------------------------------- config + pipeline


def test_finetune_is_refused_and_scratch_policies_are_accepted(tmp_path: Path) -> None:
    from pruning.pipeline import validate

    base = ["data=cifar10", "data.download=true", "model=resnet56", "method=pfs"]
    with pytest.raises(PruneLabError, match="finetune=finetune does not apply to method=pfs"):
        validate(plain_cfg([*base, "finetune=finetune"], tmp_path))
    for policy in ("scratch_b", "scratch_e"):
        method, spec = validate(plain_cfg([*base, f"finetune={policy}"], tmp_path))
        assert spec["arch"] == "resnet_pfs" and method.expansion == 32 and method.sparsity_level == 0.2
    method, spec = validate(plain_cfg([*base, "finetune=scratch_b", "model=vgg16"], tmp_path))
    assert spec["hidden"] == 0 and method.expansion == 80
    with pytest.raises(PruneLabError, match="does not support model=densenet40"):
        validate(plain_cfg([*base, "finetune=scratch_b", "model=densenet40"], tmp_path))


def test_the_experiment_preset_trains_scratch_b_on_the_official_recipe() -> None:
    cfg = compose(["experiment=pfs_cifar"])
    assert (cfg.method.name, cfg.finetune.name, cfg.schedule.batch_size, cfg.model.name) == (
        "pfs",
        "scratch_b",
        128,
        "resnet56_pfs",
    )
    # scratch-B epochs: int(160 * F_dense / F_pruned); official int(160 / (1 - p)) = 320 at p = 0.5
    from omegaconf import OmegaConf

    from pruning.pipeline import policy_schedule

    plain = OmegaConf.to_container(cfg, resolve=True)
    assert policy_schedule(plain, 1000, 500).epochs == 320
    assert policy_schedule(plain, 1000, 300).epochs == 533


def test_method_pfs_defaults_to_scratch_b() -> None:
    assert compose(["method=pfs"]).finetune.name == "scratch_b"
    assert compose(["method=pfs", "finetune=scratch_e"]).finetune.name == "scratch_e"
    assert compose(["method=l1_norm"]).finetune.name == "finetune"


def test_pfs_runs_without_pretraining_and_shares_one_gate_learning_across_ratios(
    fake_cifar: Path, tmp_path: Path
) -> None:
    extra = [
        "model=resnet20_pfs",
        "model.depth=8",
        "method=pfs",
        "finetune=scratch_b",
        "method.expansion=16",
        "method.gate_epochs=1",
        "method.batch_size=50",
        "schedule.epochs=1",
    ]
    runs = []
    for ratio in (0.5, 0.7):
        cfg = pipeline_cfg(fake_cifar, tmp_path / "results", *extra, f"method.ratio={ratio}")
        runs.append(run_pipeline(cfg))
    cache = Path(cfg["paths"]["cache_dir"])
    assert not (cache / "baselines").exists()  # no dense baseline was trained or cached
    assert len(list((cache / "pfs_gates").iterdir())) == 1  # one gate learning for both ratios
    for ratio, m in zip((0.5, 0.7), runs, strict=True):
        assert m["status"] == "done" and "pretrain" not in m["stages"]
        gates = m["stages"]["gates"]
        assert gates["train_macs"] == gates["samples"] * gates["macs_per_sample"]
        assert gates["samples"] == 180 and gates["macs_per_sample"] == m["extras"]["gated_macs"]
        assert m["extras"]["requested_flops_reduction"] == pytest.approx(100 * ratio)
        gap = abs(m["flops_reduction"] / 100 - ratio) / ratio  # ResNet-8: 3 gated layers, coarse steps
        assert gap < 0.01 and m["extras"]["achieved_flops_reduction"] == pytest.approx(m["flops_reduction"])
        official = m["extras"]["achieved_flops_reduction_official_counter"] / 100  # the search's measure
        assert m["extras"]["within_tolerance"] == (abs(official - ratio) / ratio <= 0.001)
        target = m["extras"]["target"]  # extras.target: the search's rule, on the official counter
        assert (target["quantity"], target["asked"]) == ("flops_reduction", ratio)
        assert target["achieved"] == pytest.approx(official) and target["met"] == m["extras"]["within_tolerance"]
        assert m["budget"]["stage_epochs"] == int(1 * m["flops_dense"] / m["flops_pruned"])
        assert m["stages"]["scratch_b"]["epochs"] == m["budget"]["stage_epochs"]
        assert set(m["final"]) >= {"top1", "top1_best"}
        run_dir = run_path(m, tmp_path / "results")
        assert (run_dir / "pfs_gates.png").stat().st_size > 0
        layers = json.loads((run_dir / "pfs_gates.json").read_text())["layers"]
        assert [layer["kept"] for layer in layers] == [s["mid"][0] for s in m["spec_pruned"]["stages"]]
    assert runs[0]["stages"]["gates"].get("cached") is False and runs[1]["stages"]["gates"]["cached"] is True
    assert runs[1]["stages"]["gates"]["train_macs"] == runs[0]["stages"]["gates"]["train_macs"]
