"""FLOP (method=flop): the hard-concrete constants of the official code, the Lagrangian, the exact
compaction of masked factorised layers (SRU and Transformer-XL), short pruning runs that reach their
target sparsity, resume and cache. Tiny models on a generated corpus; the whole file takes ~25 s."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from conftest import (
    TINY_SRU,
    TINY_SRU_PIPELINE,
    TINY_TXL,
    VOCAB,
    lm_ctx,
    lm_model,
    text_corpus_cfg,
    tiny_corpus,
    tokens,
)

from pruning import PruneLabError
from pruning.hardconcrete import HardConcrete, HardConcreteLinear, HardConcreteProjectedLinear, hard_size
from pruning.methods.base import PruneContext
from pruning.methods.flop import (
    FLOP,
    compact,
    expected_sparsity,
    factor_rank,
    factorised_linear,
    insert_hard_concrete,
    lagrangian,
    lambda_lr,
    model_lr,
    target_at,
)
from pruning.models import build, default_spec
from pruning.models import transformer_xl as txl
from pruning.text_data import TextData

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def corpus(n: int = 30_000) -> TextData:
    return tiny_corpus(n, held_out=2000)


def ctx(tmp_path: Path, run: str = "run", data: TextData | None = None, cache: bool = False, **kw) -> PruneContext:
    return lm_ctx(tmp_path, run, data if data is not None else corpus(), cache, **kw)


def numel(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- hard concrete
def test_hard_concrete_constants_are_the_official_ones() -> None:
    for mean, keep in ((0.5, 0.9167), (0.05, 0.9952)):
        mask = HardConcrete(1000, init_mean=mean, init_std=0.0)
        assert float(mask.log_alpha.detach().mean()) == pytest.approx(math.log(1 - mean) - math.log(mean))
        assert float(mask.keep_probability().detach()[0]) == pytest.approx(keep, abs=5e-5)  # the reference's P(z != 0)
        assert float(mask.l0_norm().detach()) == pytest.approx(1000 * keep, abs=0.05)
    mask = HardConcrete(50_000, init_mean=0.5, init_std=0.01)
    assert (mask.beta, mask.limit_l, mask.limit_r, mask.eps) == (1.0, -0.1, 1.1, 1e-6)
    assert mask.l0_shift == pytest.approx(2.3979, abs=1e-4) == -math.log(0.1 / 1.1)
    assert float(mask.log_alpha.detach().std()) == pytest.approx(0.01, rel=0.05)
    # expected L0 = sum sigmoid(log_alpha - beta log(-l / r))
    with torch.no_grad():
        mask.log_alpha.normal_(0.0, 2.0)
    formula = torch.sigmoid(mask.log_alpha - mask.beta * math.log(-mask.limit_l / mask.limit_r)).sum()
    torch.testing.assert_close(mask.l0_norm(), formula)


def test_training_samples_one_u_per_entry_and_match_the_keep_probability() -> None:
    torch.manual_seed(0)
    mask = HardConcrete(40_000, init_mean=0.3, init_std=0.0).train()
    z = mask()
    assert z.min() == 0 and z.max() == 1 and bool(((z > 0) & (z < 1)).any())  # stretched and clamped
    assert float((z != 0).float().mean()) == pytest.approx(float(mask.keep_probability().detach()[0]), abs=0.01)
    assert not torch.equal(z, mask())  # a new draw per call
    # one draw per entry shared by every row of a batch (not per example)
    torch.manual_seed(1)
    layer = HardConcreteProjectedLinear(torch.nn.Linear(6, 4, bias=False), torch.nn.Linear(4, 5)).train()
    x = torch.randn(1, 6).expand(7, 6)
    out = layer(x)
    torch.testing.assert_close(out, out[:1].expand_as(out))


def test_eval_mask_zeroes_the_expected_count_and_keeps_soft_values() -> None:
    mask = HardConcrete(200).eval()
    with torch.no_grad():
        mask.log_alpha.copy_(
            torch.linspace(-6, 6, 200)[torch.randperm(200, generator=torch.Generator().manual_seed(0))]
        )
    z = mask()
    num_zeros = round(200 - float(mask.l0_norm().detach()))
    assert int((z == 0).sum()) == num_zeros > 0
    soft = torch.sigmoid(0.8 * mask.log_alpha.detach() / mask.beta)
    kept = z != 0
    torch.testing.assert_close(z[kept], soft[kept])  # not binary: the kept entries keep their soft value
    assert float(soft[~kept].max()) <= float(soft[kept].min())  # the smallest ones were zeroed
    assert torch.equal(z, mask())  # deterministic


def test_sizes_follow_the_official_counts() -> None:
    hcpl = HardConcreteProjectedLinear(torch.nn.Linear(10, 4, bias=False), torch.nn.Linear(4, 30))
    hcl = HardConcreteLinear(torch.nn.Linear(7, 20, bias=False))
    assert hcpl.prunable_size() == (10 + 30) * 4 and hcl.prunable_size() == 7 * 20
    torch.testing.assert_close(hcpl.expected_size(), 40 * hcpl.mask.l0_norm())
    torch.testing.assert_close(hcl.expected_size(), 20 * hcl.mask.l0_norm())
    with torch.no_grad():
        hcl.mask.log_alpha.copy_(torch.tensor([-9.0, 9, 9, -9, 9, 9, 9]))
    assert hard_size(hcl) == 20 * 5


# ----------------------------------------------------------------------------- Lagrangian, schedules
def test_lagrangian_ascent_and_descent_drive_expected_sparsity_to_the_target() -> None:
    torch.manual_seed(0)
    layers = {
        "a": HardConcreteProjectedLinear(torch.nn.Linear(20, 8, bias=False), torch.nn.Linear(8, 30)),
        "b": HardConcreteLinear(torch.nn.Linear(16, 24, bias=False)),
    }
    prunable = sum(layer.prunable_size() for layer in layers.values())
    alphas = [layer.mask.log_alpha for layer in layers.values()]
    lambdas = torch.nn.Parameter(torch.zeros(2))
    descent = torch.optim.Adam(alphas, lr=0.05)
    ascent = torch.optim.Adam([lambdas], lr=0.05, maximize=True)
    target = 0.6
    start = float(expected_sparsity(layers, prunable).detach())
    assert start == pytest.approx(1 - 0.9167, abs=0.01)
    for step in range(600):
        loss = lagrangian(lambdas, expected_sparsity(layers, prunable), target)
        descent.zero_grad()
        ascent.zero_grad()
        loss.backward()
        if step == 0:  # at lambda = 0 only the lambdas move: the gradient on lambda_1 is s_hat - t < 0
            assert float(lambdas.grad[0]) == pytest.approx(start - target)
        descent.step()
        ascent.step()
        if step == 5:
            assert float(lambdas[0].detach()) < 0  # ascent: s_hat < t makes lambda_1 negative ...
            assert float(expected_sparsity(layers, prunable).detach()) > start  # ... and descent then raises s_hat
    assert float(expected_sparsity(layers, prunable).detach()) == pytest.approx(target, abs=0.02)


def test_learning_rates_and_target_follow_the_official_scripts() -> None:
    sru_recipe = {"family": "sru_lm", "lr": 2.0, "warmup_steps": 16000, "n_d": 3056, "prune_lr": 3.0, "prune_warmup": 0}
    assert model_lr(sru_recipe, 16000, 10**6) == pytest.approx(2.8604e-4, rel=1e-4)  # the reference's peak
    assert lambda_lr(sru_recipe, 16000) == pytest.approx(1.5 * 2.8604e-4, rel=1e-4)
    assert target_at(sru_recipe, 0.8, 1) == 0.8  # prune_warmup 0: the target from the start
    assert target_at({**sru_recipe, "prune_warmup": 100}, 0.8, 50) == pytest.approx(0.4)
    txl_recipe = {"family": "transformer_xl", "lr": 2.5e-4, "d_model": 512, "prune_lr": 1.0, "prune_warmup": 64000}
    assert model_lr(txl_recipe, 1, 1000) == 2.5e-4 and model_lr(txl_recipe, 501, 1000) == pytest.approx(1.25e-4)
    assert lambda_lr(txl_recipe, 1) == lambda_lr(txl_recipe, 2) == pytest.approx(1 / math.sqrt(512))
    assert lambda_lr(txl_recipe, 5) == pytest.approx(1 / math.sqrt(512) / 2)
    assert target_at(txl_recipe, 0.5, 1) == 0.0 and target_at(txl_recipe, 0.5, 32001) == pytest.approx(0.25)


# ----------------------------------------------------------------------------- compaction
def _spread_masks(layers: dict, seed: int = 0, closed: str | None = None) -> None:
    """log_alpha ~ N(0, 3): some components zero in eval, the others at varied soft values;
    ``closed``: every component of that layer zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, layer in layers.items():
            alpha = layer.mask.log_alpha
            alpha.copy_(torch.randn(alpha.shape, generator=g) * 3.0 if name != closed else torch.full_like(alpha, -20))


@pytest.mark.parametrize("closed", [None, "layers.0.transform", "layers.1.transform"])
def test_compact_sru_equals_the_masked_network_in_eval(closed: str | None) -> None:
    dense = lm_model("sru_lm")
    net = lm_model("sru_lm")
    layers = insert_hard_concrete(net, {"init_mean": 0.5})
    assert set(layers) == {"layers.0.transform", "layers.1.transform"}
    assert isinstance(layers["layers.0.transform"], HardConcreteLinear)  # the mask over layer 1's 12 inputs
    _spread_masks(layers, closed=closed)
    net.eval()
    x = tokens()
    masked = net(x)
    spec, state, kept = compact(net, layers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a rank-0 factor: "Initializing zero-element tensors is a no-op"
        small = build(spec)
    small.load_state_dict(state)
    small.eval()
    assert (masked - small(x)).abs().max() < 1e-5
    assert spec["n_e"] == max(1, kept["layers.0.transform"]) and spec["n_proj"] == [kept["layers.1.transform"]]
    assert "layer1_matrices" not in spec and small.layers[0].k == 4
    # parameter counts: every removed input drops an embedding column and a U column (4 n_d); every removed
    # rank component (n_d + 3 n_d)
    removed_inputs, removed_ranks = 12 - spec["n_e"], 16 - spec["n_proj"][0]
    assert numel(small) == numel(dense) - removed_inputs * (VOCAB + 4 * 32) - removed_ranks * (32 + 96)
    for name, layer in layers.items():  # a closed layer 1 keeps one zero column (n_e >= 1)
        floor = 1 if isinstance(layer, HardConcreteLinear) else 0
        assert kept[name] == max(floor, int((layer.mask.eval_mask() != 0).sum()))


def test_compact_sru_keeps_the_projected_skip_term_when_n_e_reaches_n_d() -> None:
    torch.manual_seed(0)
    net = build(default_spec("sru_lm", num_classes=VOCAB, depth=2, n_d=8, n_proj=4, n_e=10, dropout=0.0))
    layers = insert_hard_concrete(net, {"init_mean": 0.5})
    with torch.no_grad():  # keep 8 of the 10 inputs: n_e = 8 = n_d, yet layer 1 keeps U3
        layers["layers.0.transform"].mask.log_alpha.copy_(torch.tensor([5.0] * 8 + [-20.0] * 2))
    net.eval()
    x = tokens()
    spec, state, _ = compact(net, layers)
    assert spec["n_e"] == spec["n_d"] == 8 and spec["layer1_matrices"] == 4
    small = build(spec)
    small.load_state_dict(state)
    assert (net(x) - small.eval()(x)).abs().max() < 1e-5


def test_compact_transformer_xl_equals_the_masked_network_in_eval() -> None:
    dense = lm_model("transformer_xl")
    net = lm_model("transformer_xl")
    layers = insert_hard_concrete(net, {"init_mean": 0.05})
    names = [f"layers.0.{n}" for n in ("attn.qkv_net", "attn.r_net", "attn.o_net", "ff.fc1", "ff.fc2")]
    assert list(layers) == names
    assert [layers[n].rank for n in names] == [32 * 96 // 128, 16, 16, 32 * 64 // 96, 64 * 32 // 96]
    _spread_masks(layers, closed="layers.0.attn.r_net")
    net.eval()
    x = tokens()
    masked = net(x)
    spec, state, kept = compact(net, layers)
    assert spec["ranks"] == kept and kept["layers.0.attn.r_net"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = build(spec)
    small.load_state_dict(state)
    assert (masked - small.eval()(x)).abs().max() < 1e-5
    assert numel(small) == txl.num_params(spec)
    removed = sum((layers[n].in_features + layers[n].out_features) * (layers[n].rank - kept[n]) for n in names)
    assert numel(small) == txl.num_params({**spec, "ranks": {n: layers[n].rank for n in names}}) - removed
    assert numel(small) < numel(dense)


def test_full_rank_svd_factorisation_is_exact_and_balanced_rank_keeps_the_parameter_count() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(24, 40)
    x = torch.randn(5, 24)
    linear1, linear2 = factorised_linear(linear, factor_rank(24, 40, "full"))
    torch.testing.assert_close(linear2(linear1(x)), linear(x), atol=1e-5, rtol=1e-5)
    r = factor_rank(24, 40, "balanced")
    assert r == 15 and (24 + 40) * r <= 24 * 40
    linear1, linear2 = factorised_linear(linear, r)
    best = torch.linalg.matrix_norm(linear.weight - linear2.weight @ linear1.weight)
    s = torch.linalg.svdvals(linear.weight)
    assert float(best) == pytest.approx(float(s[r:].square().sum().sqrt()), rel=1e-4)  # Eckart-Young optimum


def test_a_factorised_transformer_spec_builds_with_the_official_init() -> None:
    spec = {**default_spec("transformer_xl", **TINY_TXL), "ranks": {"layers.0.ff.fc1": 5, "layers.0.attn.qkv_net": 0}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build(spec)
    fc1 = model.layers[0].ff.fc1
    assert isinstance(fc1, txl.FactorisedLinear) and fc1.linear1.weight.shape == (5, 32)
    assert fc1.linear2.weight.shape == (64, 5) and torch.equal(fc1.linear2.bias, torch.zeros(64))
    assert float(fc1.linear1.weight.std()) == pytest.approx(0.02, rel=0.5)
    assert numel(model) == txl.num_params(spec)
    assert model(tokens()).shape == (3 * 20, VOCAB)
    with pytest.raises(PruneLabError, match="ranks"):
        build({**spec, "ranks": {"layers.3.ff.fc1": 4}})


# ----------------------------------------------------------------------------- pruning runs
def _check_result(result, dense_spec: dict) -> None:
    again = build(result.spec)  # the pipeline rebuilds the pruned net from its spec and loads its weights
    again.load_state_dict(result.model.state_dict())
    x = tokens()
    again.eval()
    torch.testing.assert_close(again(x), result.model.eval()(x))
    assert result.extras["sparsity"]["of"] == "prunable parameters" and result.masks is None
    own = result.own_stage
    assert own["name"] == "flop" and own["samples"] > 0 and own["macs_per_sample"] > 0 and own["wall_s"] >= 0
    assert result.spec["arch"] == dense_spec["arch"]


@pytest.mark.integration
def test_sru_run_reaches_the_target_sparsity_and_is_cached(tmp_path: Path) -> None:
    dense = lm_model("sru_lm")
    method = FLOP(sparsity=0.5, epochs=10, batch_size=8, eval_batch_size=8, lr=2.0, warmup_steps=20, prune_lr=1.0)
    method = FLOP(**{**method.settings(), "sparsity": 0.5, "prune_warmup": 200, "eval_every": 50})
    method.validate("sru_small", dense.spec)
    result = method.prune(dense, ctx(tmp_path, cache=True))
    sparsity = result.extras["sparsity"]
    assert sparsity["target"] == 0.5 and abs(sparsity["achieved"] - 0.5) <= 0.02
    assert result.extras["accepted"] and sparsity["achieved"] > 0.48
    target = result.extras["target"]  # the acceptance rule: achieved > asked - 0.02
    assert target["quantity"] == "param_sparsity" and target["asked"] == 0.5 and target["met"]
    assert target["achieved"] == sparsity["achieved"]
    assert abs(sparsity["expected"] - 0.5) < 0.05
    _check_result(result, dense.spec)
    kept = result.extras["kept_ranks"]
    assert result.spec["n_e"] == kept["layers.0.transform"] and result.spec["n_proj"] == [kept["layers.1.transform"]]
    prunable = 12 * 128 + 16 * 128
    assert result.extras["prunable_params"] == prunable
    assert result.extras["prunable_params_kept"] == 128 * (kept["layers.0.transform"] + kept["layers.1.transform"])
    assert result.own_stage["macs_per_sample"] == 12 * 128 + 16 * 128 + 32 * VOCAB  # the factorised net, open
    assert result.extras["lambda_1"] != 0 and result.extras["lambda_2"] > 0
    assert not (tmp_path / "run" / "ckpt_flop.pt").exists()
    hit = method.prune(dense, ctx(tmp_path, "again", cache=True))
    assert hit.extras["flop_cached"] and hit.extras["sparsity"] == sparsity and hit.spec == result.spec


@pytest.mark.integration
def test_transformer_xl_run_reaches_the_target_sparsity(tmp_path: Path) -> None:
    dense = lm_model("transformer_xl")
    method = FLOP(
        sparsity=0.5, epochs=10, batch_size=8, eval_batch_size=8, lr=0.05, prune_lr=4.0, prune_warmup=100, eval_every=50
    )
    result = method.prune(dense, ctx(tmp_path))
    sparsity = result.extras["sparsity"]
    assert abs(sparsity["achieved"] - 0.5) <= 0.02 and result.extras["accepted"]
    _check_result(result, dense.spec)
    assert set(result.spec["ranks"]) == set(result.extras["kept_ranks"]) and len(result.spec["ranks"]) == 5
    assert result.extras["prunable_params"] == sum(
        (i + o) * factor_rank(i, o, "balanced") for i, o, _ in txl.linear_shapes(dense.spec).values()
    )


def test_resumes_from_the_epoch_checkpoint(tmp_path: Path) -> None:
    class Killed(Exception):
        pass

    def dies_after_epoch_1(message: str) -> None:
        if "epoch 1/2" in message:
            raise Killed

    data = corpus(8000)
    dense = lm_model("sru_lm")
    method = FLOP(sparsity=0.3, epochs=2, batch_size=8, eval_batch_size=8, lr=1.0, warmup_steps=10, prune_warmup=20)
    with pytest.raises(Killed):
        method.prune(dense, ctx(tmp_path, data=data, quiet=False, say=dies_after_epoch_1))
    assert (tmp_path / "run" / "ckpt_flop.pt").exists()
    said: list[str] = []
    resumed = method.prune(dense, ctx(tmp_path, data=data, quiet=False, say=said.append))
    assert any("resumed after epoch 1/2" in s for s in said) and sum("epoch 2/2" in s for s in said) == 1
    straight = method.prune(dense, ctx(tmp_path, "straight", data=data))
    assert resumed.spec == straight.spec
    for a, b in zip(resumed.model.state_dict().values(), straight.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    timeless = [
        [{k: v for k, v in row.items() if k != "epoch_s"} for row in r.extras["history"]] for r in (resumed, straight)
    ]
    assert timeless[0] == timeless[1]


# ----------------------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    "kw,key",
    [
        ({"sparsity": 1.0}, "method.sparsity"),
        ({"sparsity": -0.1}, "method.sparsity"),
        ({"epochs": 0}, "method.epochs"),
        ({"prune_lr": 0}, "method.prune_lr"),
        ({"prune_warmup": -1}, "method.prune_warmup"),
        ({"init_mean": 1.0}, "method.init_mean"),
        ({"rank": "half"}, "method.rank"),
        ({"eval_every": 1.5}, "method.eval_every"),
    ],
)
def test_bad_config_values_name_the_key(kw: dict, key: str) -> None:
    with pytest.raises(PruneLabError, match=key.replace(".", r"\.")):
        FLOP(**kw)


def test_validate_accepts_language_models_only_and_nulls_take_the_family_recipe() -> None:
    method = FLOP()
    method.validate("sru_small", default_spec("sru_lm", **TINY_SRU))
    method.validate("transformer_xl_small", default_spec("transformer_xl", **TINY_TXL))
    with pytest.raises(PruneLabError, match="model=resnet20.*sru"):
        method.validate("resnet20", default_spec("resnet_cifar", depth=20))
    assert FLOP.language_models and FLOP.needs_pretrained
    sru_recipe = method.recipe(default_spec("sru_lm", num_classes=205))
    assert (sru_recipe["lr"], sru_recipe["prune_lr"], sru_recipe["init_mean"], sru_recipe["clip_grad"]) == (
        2.0,
        3.0,
        0.5,
        0.3,
    )
    txl_recipe = FLOP(prune_warmup=10).recipe(default_spec("transformer_xl"))
    assert (txl_recipe["lr"], txl_recipe["prune_lr"], txl_recipe["init_mean"], txl_recipe["prune_warmup"]) == (
        2.5e-4,
        1.0,
        0.05,
        10,
    )


# ----------------------------------------------------------------------------- through the pipeline
def flop_cfg(tmp_path: Path, *extra: str) -> dict:
    return text_corpus_cfg(tmp_path, *TINY_SRU_PIPELINE, *extra)


def test_flop_and_agp_evidence_rows_prune_the_same_parameters() -> None:
    """experiment=flop_evidence_cpu: FLOP's masked matrices and AGP's pruned tensors are one set (issue 22)."""
    from conftest import compose
    from omegaconf import OmegaConf

    from pruning.config import make_method, model_spec
    from pruning.methods.agp import AGP, unstructured_targets
    from pruning.methods.flop import insert_hard_concrete, prunable_sizes

    cfgs = {
        row: OmegaConf.to_container(
            compose(["experiment=flop_evidence_cpu", f"table_row={row}", "data.path=corpus.txt"]), resolve=True
        )
        for row in ("flop_cpu_sru_80", "agp_cpu_sru_80")
    }
    flop, agp = (make_method(c["method"]) for c in cfgs.values())
    assert isinstance(flop, FLOP) and isinstance(agp, AGP) and flop.sparsity == agp.sparsity == 0.8
    spec, agp_spec = (model_spec(c["model"], c["data"]) for c in cfgs.values())
    assert spec == agp_spec and spec["num_classes"] == 165 and spec["n_e"] == 165  # V < n_d: FLOP's layout
    net = build(spec)
    agp_set = {id(t): t.numel() for t in unstructured_targets(net, agp.targets).values()}
    layers = insert_hard_concrete(net, {"init_mean": 0.5, "init_std": 0.01}, flop.rank)
    flop_set = {}
    for layer in layers.values():
        for t in (layer.linear1.weight, layer.linear2.weight) if hasattr(layer, "linear1") else (layer.weight,):
            flop_set[id(t)] = t.numel()
    assert flop_set == agp_set
    assert sum(agp_set.values()) == sum(prunable_sizes(layers).values()) == 300_032
    assert "layers.0.transform" in layers  # layer 1 is masked (4 matrices), as in FLOP's enwik8 model


def test_method_config_composes_with_no_second_stage(tmp_path: Path) -> None:
    from pruning.config import validate

    cfg = flop_cfg(tmp_path, "method=flop", "method.sparsity=0.7", "method.prune_warmup=50")
    assert cfg["finetune"]["name"] == "none" and cfg["method"]["_target_"] == "pruning.methods.flop.FLOP"
    method, spec = validate(cfg)
    assert isinstance(method, FLOP) and method.sparsity == 0.7 and spec["arch"] == "sru_lm"
    assert method.settings()["prune_warmup"] == 50 and method.settings()["lr"] is None


@pytest.mark.integration
def test_pipeline_records_flop_sparsity_and_the_pruned_spec(tmp_path: Path) -> None:
    from conftest import run_pipeline

    metrics = run_pipeline(
        flop_cfg(tmp_path, "method=flop", "method.epochs=1", "method.batch_size=4", "method.warmup_steps=5")
    )
    assert metrics["status"] == "done" and metrics["sparsity"]["target"] == 0.5
    assert metrics["spec_pruned"]["n_proj"][0] <= 16 and metrics["stages"]["flop"]["samples"] > 0
    assert metrics["params_pruned"] < metrics["params_dense"] and metrics["final"]["bpc"] > 0
