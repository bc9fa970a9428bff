"""TAS: channel-wise interpolation, Gumbel sampling, the supernet, exact expected FLOPs, the
search (budget, resume, outputs), weight extraction, knowledge distillation, schedules, configs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pruning import PruneLabError
from pruning.data import load_digits_data
from pruning.measure import count_macs, count_params
from pruning.methods.base import PruneContext
from pruning.methods.tas import TAS, extract, fit_budget, init_from_dense, tas_dense_spec
from pruning.models import build, default_spec
from pruning.models.resnet_tas import Projection
from pruning.models.tas_search import (
    SearchConv,
    TASSupernet,
    cwi,
    depth_choices,
    gumbel_select,
    gumbel_softmax,
    width_choices,
)
from pruning.train import Schedule, distillation_loss
from tests.conftest import TINY_CIFAR, plain_cfg, write_fake_cifar


def tiny_resnet(depth: int = 14, in_channels: int = 1) -> nn.Module:
    torch.manual_seed(0)
    return build(default_spec("resnet_cifar", depth=depth, num_classes=10, in_channels=in_channels))


def test_cwi_is_identity_at_same_width_and_interpolates_channels():
    x = torch.randn(2, 4, 3, 3)
    assert torch.equal(cwi(x, 4), x)
    a, b = torch.full((1, 1, 2, 2), 1.0), torch.full((1, 1, 2, 2), 3.0)
    up = cwi(torch.cat([a, b], 1), 4)  # (1, 4, 2, 2)
    assert up.shape == (1, 4, 2, 2)
    assert up[0, :, 0, 0].tolist() == [1.0, 1.0, 3.0, 3.0]
    down = cwi(torch.cat([a, a, b, b], 1), 2)
    assert down[0, :, 0, 0].tolist() == [1.0, 3.0]


def test_choices_follow_the_official_definitions():
    assert width_choices(16) == (4, 6, 8, 9, 11, 12, 14, 16)
    assert depth_choices(3) == (1, 2, 3)
    assert depth_choices(9) == (1, 3, 5, 7, 9)  # the released ResNet-56 shape has 5 blocks
    assert depth_choices(9, "thirds") == (3, 6, 9)
    with pytest.raises(PruneLabError, match="depth_choices"):
        depth_choices(9, "half")


def test_gumbel_select_samples_two_distinct_candidates_differentiably():
    logits = torch.zeros(5, requires_grad=True)
    index, weights = gumbel_select(logits, 1.0, generator=torch.Generator().manual_seed(0))
    assert len(set(index)) == 2 and abs(float(weights.sum().detach()) - 1) < 1e-6
    (weights[0] * 3 + weights[1]).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_gumbel_softmax_weights_every_candidate_differentiably():
    logits = torch.tensor([0.3, -0.2, 0.1, 0.0, 0.5], requires_grad=True)
    probs = gumbel_softmax(logits, 1.0, generator=torch.Generator().manual_seed(0))
    assert probs.shape == (5,) and abs(float(probs.sum().detach()) - 1) < 1e-6 and bool((probs > 0).all())
    (probs * torch.arange(5.0)).sum().backward()
    assert bool((logits.grad != 0).all())


def test_stage_output_mixes_all_candidate_depths_as_the_official_search():
    """select2withP(depth_attentions, tau, just_prob=True): every candidate depth of a stage is in
    the mixture, so every depth logit gets a gradient (two sampled ones would leave the others 0)."""
    torch.manual_seed(0)
    net = TASSupernet(default_spec("resnet_tas", depth=56), image_size=16)
    assert net.depths[0] == (1, 3, 5, 7, 9)
    net.tau = 1.0
    net.generator = torch.Generator().manual_seed(0)
    net(torch.randn(2, 3, 16, 16)).square().sum().backward()
    for logits in net.depth_logits:
        assert bool((logits.grad != 0).all()), logits.grad


def test_tas_cifar_resnet_has_the_official_shortcuts():
    """InferCifarResNet / CifarResNet: stride 2 -> avg-pool 2x2 + 1x1 conv, no BN; stride 1 with a
    width change -> 1x1 conv + BN; else identity. The supernet has the same layers."""
    spec = default_spec("resnet_tas", depth=20)
    spec["stages"][0]["blocks"][1] = [8, 12]  # a stride-1 width change 16 -> 12, then 12 -> 16
    model = build(spec)
    down = model.stages[1][0].shortcut
    assert isinstance(down, Projection) and down.avg and down.bn is None
    assert down.conv.stride == (1, 1) and down.conv.kernel_size == (1, 1)
    widen = model.stages[0][1].shortcut
    assert isinstance(widen, Projection) and not widen.avg and isinstance(widen.bn, nn.BatchNorm2d)
    assert widen.conv.stride == (1, 1) and isinstance(model.stages[0][1].shortcut, Projection)
    assert isinstance(model.stages[0][0].shortcut, nn.Identity)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    net = TASSupernet(default_spec("resnet_tas", depth=20), image_size=32)
    search_down = net.stages[1][0].shortcut
    assert isinstance(search_down, SearchConv) and search_down.avg and search_down.conv.stride == (1, 1)
    assert net.stages[0][0].shortcut is None
    # ImageNet keeps torchvision's strided projection + BN
    imagenet = build(default_spec("resnet_tas", depth=18, num_classes=10, stem_type="imagenet"))
    proj = imagenet.stages[1][0].shortcut
    assert not proj.avg and proj.conv.stride == (2, 2) and proj.bn is not None


def test_full_width_tas_resnet56_counts_as_the_official_counter():
    """The official CifarResNet-56 (xautodl get_model_infos: conv + linear multiply-adds plus
    the linear bias, no BN / pooling) gives 125.74785M = our 125,747,840 + 10 fc bias adds;
    855,578 parameters (option-A ResNet-56: 125,485,696 MACs, 853,018 parameters)."""
    torch.manual_seed(0)
    model = build(default_spec("resnet_tas", depth=56))
    assert count_macs(model, (3, 32, 32)) == 125_747_840
    assert count_params(model) == 855_578
    assert count_macs(build(default_spec("resnet_cifar", depth=56)), (3, 32, 32)) == 125_485_696
    assert abs(float(model.fc.weight.detach().std()) - 0.01) < 0.002 and torch.all(
        model.fc.bias == 0
    )  # initialize_resnet


def test_released_tas_resnet56_shape_counts_as_the_official_counter():
    """configs/compares/CIFAR010-TAS-R56.config (xchannels, xblocks 5/5/5) built as InferCifarResNet
    gives 59.4514M by the official counter and 441,494 parameters: ours 59,451,390 + 10 fc bias."""
    xc = [
        3,
        16,
        16,
        16,
        14,
        14,
        14,
        16,
        12,
        16,
        6,
        16,
        4,
        4,
        4,
        14,
        4,
        4,
        6,
        4,
        32,
        32,
        32,
        32,
        32,
        32,
        22,
        25,
        16,
        32,
        19,
        9,
        9,
        16,
        25,
        12,
        16,
        9,
        64,
        64,
        64,
        64,
        64,
        64,
        64,
        64,
        64,
        51,
        19,
        19,
        32,
        51,
        25,
        32,
        19,
        19,
    ]
    spec = default_spec("resnet_tas", depth=56)
    spec["stem"] = xc[1]
    for s, stage in enumerate(spec["stages"]):
        stage["blocks"] = [[xc[2 + 2 * (9 * s + b)], xc[3 + 2 * (9 * s + b)]] for b in range(5)]
    model = build(spec)
    assert count_macs(model, (3, 32, 32)) == 59_451_390
    assert count_params(model) == 441_494


def test_tas_starts_from_the_official_cifar_resnet():
    method = TAS()
    cifar = default_spec("resnet_cifar", depth=56)
    dense = method.dense_spec(cifar)
    assert dense == default_spec("resnet_tas", depth=56) and dense["shortcut"] == "tas"
    assert method.dense_spec(dense) == dense  # idempotent
    imagenet = default_spec("resnet_imagenet", depth=18, num_classes=10)
    assert method.dense_spec(imagenet) == imagenet  # torchvision's, same MACs as its resnet_tas
    assert count_macs(build(tas_dense_spec(imagenet)), (3, 64, 64)) == count_macs(build(imagenet), (3, 64, 64))
    method.validate("resnet56", dense)


def test_pipeline_trains_the_tas_resnet_as_the_dense_net(tmp_path: Path):
    from pruning.pipeline import validate

    _, spec = validate(plain_cfg(["method=tas", "model=resnet20", "data=digits", "dry_run=true"], tmp_path))
    assert spec["arch"] == "resnet_tas" and spec["shortcut"] == "tas"


def test_supernet_forward_samples_and_backpropagates_to_arch_and_weights():
    net = TASSupernet(tas_dense_spec(tiny_resnet(20, 3).spec), image_size=16)
    net.tau = 5.0
    logits = net(torch.randn(3, 3, 16, 16))
    assert logits.shape == (3, 10)
    (logits.sum() + net.expected_flops() * 1e-6).backward()
    assert all(p.grad is not None for p in net.depth_logits)
    assert sum(p.grad is not None and p.grad.abs().sum() > 0 for p in net.width_logits) > 5
    assert net.stem.conv.weight.grad is not None


@pytest.mark.parametrize(
    "dense_spec, size",
    [
        (default_spec("resnet_tas", depth=56), 32),
        (default_spec("resnet_tas", depth=18, num_classes=1000, stem_type="imagenet"), 64),
        (default_spec("resnet_tas", depth=50, num_classes=1000, stem_type="imagenet"), 64),
    ],
)
def test_expected_flops_of_one_hot_architectures_equal_count_macs(dense_spec, size):
    net = TASSupernet(dense_spec, image_size=size)
    rng = random.Random(0)
    for trial in range(3):
        widths = [rng.randrange(len(c.choices)) for c in net.searched]
        depths = [rng.randrange(len(d)) for d in net.depths]
        if trial == 0:  # the full net
            widths, depths = [len(c.choices) - 1 for c in net.searched], [len(d) - 1 for d in net.depths]
        built = build(net.to_spec(widths, depths))
        exact = count_macs(built, (3, size, size))
        expected = float(net.expected_flops(*net.one_hot(widths, depths)))
        assert abs(expected - exact) / exact < 1e-5, (trial, expected, exact)
    # a soft distribution costs less than the full net and is differentiable
    assert float(net.expected_flops().detach()) < count_macs(build(dense_spec), (3, size, size))


@pytest.mark.parametrize(
    "dense_spec, size",
    [
        (default_spec("resnet_imagenet", depth=18, num_classes=10), 64),  # torchvision projections
        (default_spec("resnet_tas", depth=20), 32),  # the official TAS CIFAR ResNet (avg-pool shortcuts)
    ],
)
def test_extracted_full_net_reproduces_the_dense_net_exactly(dense_spec, size):
    """Dense nets with projection shortcuts: dense -> supernet -> full-width extraction must give
    back the dense function (checks every weight/BN mapping)."""
    torch.manual_seed(0)
    dense = build(dense_spec)
    for m in dense.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    net = TASSupernet(tas_dense_spec(dense.spec), image_size=size)
    init_from_dense(net, dense)
    full = extract(net, [len(c.choices) - 1 for c in net.searched], [len(d) - 1 for d in net.depths])
    x = torch.randn(2, 3, size, size)
    torch.testing.assert_close(full.eval()(x), dense.eval()(x), rtol=1e-4, atol=1e-4)


def test_extracted_pruned_net_builds_runs_and_keeps_prefix_weights():
    net = TASSupernet(tas_dense_spec(tiny_resnet(14).spec), image_size=8)
    widths, depths = [0] * len(net.searched), [0] * len(net.depths)
    pruned = extract(net, widths, depths)
    assert pruned(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert [len(s["blocks"]) for s in pruned.spec["stages"]] == [1, 1, 1]
    assert pruned.spec["stem"] == width_choices(16)[0]
    torch.testing.assert_close(pruned.stem[0].weight, net.stem.conv.weight[: pruned.spec["stem"]])


@pytest.mark.integration  # slow (3-5 s on 2 cores): the fast tier stays under 5 min
def test_fit_budget_lands_in_the_band():
    torch.manual_seed(0)
    net = TASSupernet(default_spec("resnet_tas", depth=20), image_size=32)
    dense = count_macs(build(default_spec("resnet_cifar", depth=20)), (3, 32, 32))
    full = [len(c.choices) - 1 for c in net.searched], [len(d) - 1 for d in net.depths]
    for target in (0.3, 0.55, 0.8):
        widths, depths, moves = fit_budget(net, *full, dense, target, 0.05)
        kept = count_macs(build(net.to_spec(widths, depths)), (3, 32, 32)) / dense
        assert target - 0.05 <= kept <= target and moves > 0


def test_tiny_search_hits_the_target_and_writes_distributions(tmp_path: Path):
    data = load_digits_data()
    model = tiny_resnet(14)
    method = TAS(ratio=0.5, search_epochs=2, batch_size=256, arch_lr=0.05, flop_weight=4.0, init_from_dense=True)
    ctx = PruneContext(data=data, device="cpu", input_shape=(1, 8, 8), seed=0, work_dir=tmp_path)
    result = method.prune(model, ctx)
    achieved = result.extras["achieved_flops_reduction"]
    assert 50.0 <= achieved <= 55.0 + 1e-6, achieved
    flops = count_macs(result.model, (1, 8, 8))
    reference = count_macs(build(tas_dense_spec(model.spec)), (1, 8, 8))  # full-width TAS net
    assert result.extras["flops_dense_reference"] == reference
    assert abs(100 * (1 - flops / reference) - achieved) < 1e-9
    assert build(result.spec)(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    log = json.loads((tmp_path / "tas_search.json").read_text())
    assert [e["epoch"] for e in log["epochs"]] == [1, 2]
    first = log["epochs"][0]
    assert first["tau"] == 5.0 and log["epochs"][1]["tau"] == pytest.approx(0.1)
    assert all(abs(sum(layer["probs"]) - 1) < 1e-3 for layer in first["layers"])
    assert (tmp_path / "tas_widths.png").stat().st_size > 1000
    # the search itself moved toward the target: fewer expected FLOPs than the uniform start
    assert log["epochs"][-1]["flops_ratio_expected"] < 0.5


def test_search_resumes_from_its_checkpoint(tmp_path: Path):
    data = load_digits_data()
    ctx = PruneContext(data=data, device="cpu", input_shape=(1, 8, 8), seed=1, work_dir=tmp_path)
    TAS(ratio=0.3, search_epochs=1, batch_size=512).prune(tiny_resnet(8), ctx)
    first = json.loads((tmp_path / "tas_search.json").read_text())["epochs"]
    TAS(ratio=0.3, search_epochs=2, batch_size=512).prune(tiny_resnet(8), ctx)
    both = json.loads((tmp_path / "tas_search.json").read_text())["epochs"]
    assert len(both) == 2 and both[0] == first[0]  # epoch 1 not re-run


@pytest.mark.integration  # slow (5-14 s on 2 cores): the fast tier stays under 5 min
def test_search_is_cached_and_shared_by_the_kd_ablation(tmp_path: Path):
    data = load_digits_data()

    def ctx(run: str, seed: int = 2) -> PruneContext:
        (tmp_path / run).mkdir()
        return PruneContext(
            data=data,
            device="cpu",
            input_shape=(1, 8, 8),
            seed=seed,
            work_dir=tmp_path / run,
            cache_dir=tmp_path / "cache",
            source_id="base-abc",
        )

    first = TAS(ratio=0.3, search_epochs=1, batch_size=512).prune(tiny_resnet(8), ctx("kd"))
    ablation = TAS(ratio=0.3, search_epochs=1, batch_size=512, kd=False).prune(tiny_resnet(8), ctx("nokd"))
    assert first.extras["search_cached"] is False and ablation.extras["search_cached"].startswith("base-abc-")
    assert ablation.spec == first.spec and (tmp_path / "nokd" / "tas_search.json").exists()
    assert len(list((tmp_path / "cache" / "tas_searches").iterdir())) == 1
    other = TAS(ratio=0.3, search_epochs=1, batch_size=512).prune(tiny_resnet(8), ctx("seed3", seed=3))
    assert other.extras["search_cached"] is False  # another seed is another search
    assert len(list((tmp_path / "cache" / "tas_searches").iterdir())) == 2
    # a truncated cache entry is moved aside and searched again, not an error for every run sharing it
    (entry,) = [p for p in (tmp_path / "cache" / "tas_searches").iterdir() if p.name.endswith(first_digest(ablation))]
    (entry / "search.pt").write_bytes((entry / "search.pt").read_bytes()[:500])
    again = TAS(ratio=0.3, search_epochs=1, batch_size=512).prune(tiny_resnet(8), ctx("again"))
    assert again.extras["search_cached"] is False and again.spec == first.spec
    assert list(entry.glob("search.pt.corrupt-*")) and (entry / "search.pt").exists()


def first_digest(result) -> str:
    return result.extras["search_cached"].rsplit("-", 1)[1]


def test_distillation_loss_alpha_zero_is_cross_entropy_and_teacher_gets_no_gradient():
    torch.manual_seed(0)
    student, teacher = nn.Linear(5, 4), nn.Linear(5, 4)
    x, y = torch.randn(8, 5), torch.randint(0, 4, (8,))
    s_logits, t_logits = student(x), teacher(x)
    torch.testing.assert_close(distillation_loss(s_logits, t_logits, y, 0.0, 4.0), F.cross_entropy(s_logits, y))
    loss = distillation_loss(s_logits, t_logits, y, 0.9, 4.0)
    loss.backward()
    assert student.weight.grad is not None and teacher.weight.grad is None
    # pure KD toward itself costs nothing; toward another net it costs T^2 * KL
    assert float(distillation_loss(s_logits, s_logits.detach(), y, 1.0, 4.0).detach()) == pytest.approx(0.0, abs=1e-6)
    kl = F.kl_div(F.log_softmax(s_logits / 4, 1), F.softmax(t_logits / 4, 1), reduction="batchmean")
    assert float(distillation_loss(s_logits, t_logits, y, 1.0, 4.0).detach()) == pytest.approx(
        16 * float(kl.detach()), rel=1e-5
    )


def test_cosine_and_warmup_schedule_and_unchanged_cache_identity():
    step = Schedule(epochs=10, lr=0.1)
    assert "lr_schedule" not in step.identity() and "warmup_epochs" not in step.identity()
    later = {"lr_schedule", "warmup_epochs", "optimizer", "grad_clip", "warmup_steps", "per_step"}
    assert set(step.identity()) == set(step.__dict__) - later
    cos = Schedule(epochs=10, lr=0.1, lr_schedule="cosine", warmup_epochs=2)
    assert cos.identity()["lr_schedule"] == "cosine" and cos.identity()["warmup_epochs"] == 2
    lrs = [cos.lr_at(e) for e in range(10)]
    assert lrs[0] == pytest.approx(0.1 / 3) and lrs[1] == pytest.approx(0.2 / 3)
    assert lrs[2] == pytest.approx(0.1) and all(a > b for a, b in zip(lrs[2:], lrs[3:], strict=False))
    with pytest.raises(PruneLabError, match="lr_schedule"):
        Schedule(epochs=3, lr=0.1, lr_schedule="poly").lr_at(1)


def test_existing_baseline_keys_do_not_change(tmp_path: Path):
    """The cache key of a config without the new schedule keys equals the pre-TAS formula."""
    import hashlib

    from pruning.pipeline import baseline_id, make_method, model_spec, pretrain_schedule

    cfg = plain_cfg(["model=resnet20", "data=digits"], tmp_path)
    data = load_digits_data()
    spec, method = model_spec(cfg["model"], cfg["data"]), make_method(cfg["method"])
    old_schedule = {
        k: v
        for k, v in pretrain_schedule(cfg).__dict__.items()
        # fields added later, at their defaults
        if k not in ("lr_schedule", "warmup_epochs", "optimizer", "grad_clip", "warmup_steps", "per_step")
    }
    identity = {
        "data": {
            "kind": cfg["data"].get("kind", cfg["data"]["name"]),
            "fingerprint": data.info["fingerprint"],
            "train_subset": data.info.get("train_subset"),
            "augment": data.augment,
        },
        "spec": spec,
        "schedule": old_schedule,
        "seed": 0,
        "method_pretrain": method.pretrain_extras(),
    }
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]
    assert baseline_id(cfg, data, spec, method) == f"resnet20-digits-{digest}"


def test_validation_errors_name_the_value_and_the_fix(tmp_path: Path):
    with pytest.raises(PruneLabError, match="method.ratio=1.2"):
        TAS(ratio=1.2)
    from pruning.pipeline import validate

    cfg = plain_cfg(["method=tas", "model=vgg16", "data=digits"], tmp_path)
    with pytest.raises(PruneLabError, match="supported: resnet_cifar"):
        validate(cfg)


@pytest.mark.parametrize("model", ["resnet18", "resnet50"])
def test_imagenet_tas_configs_compose_and_validate(tmp_path: Path, model: str):
    from pruning.pipeline import make_method, model_spec

    cfg = plain_cfg(["method=tas", f"model={model}", "data=imagenet", "dry_run=true"], tmp_path)
    method = make_method(cfg["method"])
    spec = model_spec(cfg["model"], cfg["data"])
    method.validate(model, spec)
    assert tas_dense_spec(spec)["block"] == ("basic" if model == "resnet18" else "bottleneck")


@pytest.mark.slow  # ~40 s alone, 385 s measured on the shared, contended 2 cores
def test_pipeline_runs_tas_with_kd_and_ablation_on_digits(tmp_path: Path, monkeypatch):
    common = [
        "model=resnet20",
        "data=digits",
        "method=tas",
        "method.search_epochs=1",
        "method.batch_size=512",
        "schedule.epochs=1",
        "finetune=scratch_e",
        "latency.cpu_batch_sizes=[1]",
        "latency.repeats=2",
    ]
    from pruning.pipeline import run, run_subdir

    results = []
    for kd in ("true", "false"):
        cfg = plain_cfg([*common, f"method.kd={kd}"], tmp_path / "results")
        run_dir = tmp_path / "results" / "runs" / run_subdir(cfg)
        results.append((run(cfg, run_dir), run_dir))
    (with_kd, kd_dir), (without, _) = results
    assert with_kd["status"] == "done" and with_kd["key"]["variant"] == "kd"
    assert without["key"]["variant"] == "nokd" and "nokd" in str(results[1][1])
    assert with_kd["budget"]["distillation"] == {"alpha": 0.9, "temperature": 4.0}
    assert without["budget"]["distillation"] is None
    assert with_kd["extras"]["requested_flops_reduction"] == pytest.approx(45.0)
    assert abs(with_kd["flops_reduction"] - with_kd["extras"]["achieved_flops_reduction"]) < 1e-9
    # the dense baseline / teacher / FLOPs reference is the official TAS ResNet-20
    assert with_kd["spec_dense"]["arch"] == "resnet_tas" and with_kd["spec_dense"]["shortcut"] == "tas"
    assert with_kd["flops_dense"] == with_kd["extras"]["flops_dense_reference"]
    assert with_kd["spec_pruned"]["arch"] == "resnet_tas"
    assert (kd_dir / "tas_search.json").exists() and (kd_dir / "tas_widths.png").exists()
    ckpt = torch.load(kd_dir / "ckpt_scratch_e.pt", weights_only=True)
    assert not any(k.startswith("teacher") for k in ckpt["model"])  # the teacher is not saved
    # the same architecture for both (same seed, same search), so the ablation isolates KD
    assert with_kd["spec_pruned"] == without["spec_pruned"]


@pytest.mark.slow
def test_cli_tas_resnet20_on_fake_cifar(tmp_path: Path, monkeypatch):
    from pruning.pipeline import run, run_subdir

    root = write_fake_cifar(tmp_path / "cifar", n_train_per_batch=20, n_test=20)
    cfg = plain_cfg(
        [
            *TINY_CIFAR,
            f"data.root={root}",
            "method=tas",
            "method.search_epochs=1",
            "method.batch_size=50",
            "schedule.epochs=1",
        ],
        tmp_path / "results",
    )
    metrics = run(cfg, tmp_path / "results" / "runs" / run_subdir(cfg))
    assert metrics["status"] == "done"
    assert metrics["flops_dense"] == count_macs(build(default_spec("resnet_tas", depth=20)), (3, 32, 32))
    assert 45.0 <= metrics["flops_reduction"] <= 50.0 + 1e-6


def test_tas_report_shows_drop_flops_count_and_requested_vs_achieved(tmp_path: Path):
    from pruning.report import build_tables, format_count, load_runs, load_specs

    assert format_count(2.24e7) == "2.24E7" and format_count(1.19e8) == "1.19E8"
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    metrics = {
        "schema": 1,
        "status": "done",
        "key": {
            "data": "cifar10",
            "model": "resnet20",
            "method": "tas",
            "variant": "kd",
            "ratio": 0.45,
            "finetune": "scratch_e",
            "seed": 0,
        },
        "data": {"label": "CIFAR-10 (test)"},
        "budget": {"pretrain_epochs": 8, "train_subset": 10000},
        "stages": {"pretrain": {"top1_best": 60.0}},
        "final": {"top1_best": 57.5, "top1": 57.0},
        "flops_reduction": 47.0,
        "flops_pruned": 2.15e7,
        "extras": {"requested_flops_reduction": 45.0},
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    table = build_tables(load_specs()["tas_cifar"], load_runs(tmp_path))[0]
    row = table.by_row()["ResNet-20 TAS (C10)"]
    assert row["n"] == "1" and row["Drop"] == "2.50 (0.00†)"  # a short budget (8 of 305 epochs): no Δ
    assert row["FLOPs"] == "2.15E7 (2.24E7†)"
    assert row["FLOPs↓ requested"].startswith("45.0% (") and row["FLOPs↓ achieved"].startswith("47.0% (")


@pytest.mark.integration  # slow (5-14 s on 2 cores): the fast tier stays under 5 min
def test_pipeline_runs_tas_on_resnet18_with_a_tiny_image_folder(tmp_path: Path):
    """The ImageNet configuration runs end to end (search, KD scratch-E) on an ImageFolder the
    test writes: 3 classes, 32-px crops."""
    from pruning.pipeline import run, run_subdir
    from tests.conftest import write_image_folder

    root = write_image_folder(tmp_path / "imagenet")
    cfg = plain_cfg(
        [
            "data=imagenet",
            "model=resnet18",
            f"data.root={root}",
            "data.num_classes=3",
            "data.image_size=32",
            "data.resize_size=36",
            "data.workers=0",
            "schedule.epochs=1",
            "schedule.batch_size=6",
            "schedule.test_batch_size=6",
            "method=tas",
            "method.search_epochs=1",
            "method.batch_size=6",
            "finetune=scratch_e",
            "latency.enabled=false",
        ],
        tmp_path / "results",
    )
    metrics = run(cfg, tmp_path / "results" / "runs" / run_subdir(cfg))
    assert metrics["status"] == "done" and metrics["spec_pruned"]["stem_type"] == "imagenet"
    assert metrics["method_settings"] == {"search_epochs": 1, "init_from_dense": True, "fit_budget": True}
    assert metrics["budget"]["distillation"] is not None and {"top1", "top5"} <= set(metrics["final"])
    # every stage records its training cost; the search is the method's own stage
    search = metrics["stages"]["search"]
    assert search["epochs"] == 1 and search["train_macs"] == search["samples"] * search["macs_per_sample"] > 0
    assert metrics["stages"]["pretrain"]["train_macs"] > 0 and metrics["stages"]["scratch_e"]["train_macs"] > 0
    requested = metrics["extras"]["requested_flops_reduction"]
    assert abs(metrics["flops_reduction"] - requested) <= 5.0
