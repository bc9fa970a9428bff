"""ANP-VS (method=anp): the beta-Bernoulli mask against its closed forms, mask placement, folding and
physical removal, the paper's memory / FLOPs / sparsity counts, config errors, a tiny prune()."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from pruning import PruneLabError
from pruning.attacks import capture, feature_sites
from pruning.data import ImageData, Split
from pruning.methods.anp import (
    ANP,
    BetaBernoulliMask,
    MaskSet,
    fold_masks,
    lenet_flops,
    lenet_memory,
    paper_numbers,
    remove_units,
    vgg_memory,
)
from pruning.methods.base import PruneContext
from pruning.models import build, default_spec

ATTACK = {"eps": 0.3, "step": 0.01, "steps": 2}
SMALL_VGG = {
    "cfg": [8, 8, "M", 8, 8, "M", 8, 8, 8, "M", 8, 8, 8, "M", 8, 8, 8, "M"],
    "hidden": 8,
}


def _quad_kl(a: float, b: float, alpha: float) -> float:
    """KL(Kumaraswamy(a, b) || Beta(alpha, 1)) by quadrature in the quantile variable u."""
    from scipy.integrate import quad

    def f(u: float) -> float:
        x = (1 - (1 - u) ** (1 / b)) ** (1 / a)  # Kumaraswamy inverse CDF
        log_q = math.log(a * b) + (a - 1) * math.log(x) + (b - 1) * math.log1p(-(x**a))
        log_p = math.log(alpha) + (alpha - 1) * math.log(x)
        return log_q - log_p

    return quad(f, 0, 1, limit=400, epsabs=1e-10, epsrel=1e-8)[0]


# ----------------------------------------------------------------------------- the mask layer
def test_initial_expected_pi_matches_the_official_values() -> None:
    conv, dense = BetaBernoulliMask(3, a_uc_init=2.0), BetaBernoulliMask(3, a_uc_init=-1.0)
    assert float(conv.b()[0].detach()) == pytest.approx(1.0, abs=1e-4)  # b_uc 0.5413 -> b = 1
    assert [round(float(v), 3) for v in conv.expected_pi().detach()] == [0.680] * 3
    assert [round(float(v), 3) for v in dense.expected_pi().detach()] == [0.239] * 3


@pytest.mark.parametrize("a_uc,b_uc", [(2.0, 0.5413), (-1.0, 0.5413), (0.3, 2.0), (1.0, -0.7)])
def test_expected_pi_closed_form_matches_monte_carlo(a_uc: float, b_uc: float) -> None:
    torch.manual_seed(0)
    mask = BetaBernoulliMask(200_000, a_uc_init=a_uc)  # 200k units of one distribution: 200k draws
    with torch.no_grad():
        mask.b_uc.fill_(b_uc)
        draws = mask.sample_pi()
        assert draws.shape == (200_000,)
        assert float(draws.mean()) == pytest.approx(float(mask.expected_pi()[0]), abs=4e-3)


@pytest.mark.parametrize("a_uc,b_uc", [(2.0, 0.5413), (-1.0, 0.5413), (0.3, 2.0), (1.5, -0.7)])
def test_kl_matches_numerical_integration(a_uc: float, b_uc: float) -> None:
    mask = BetaBernoulliMask(2, a_uc_init=a_uc)
    with torch.no_grad():
        mask.b_uc.fill_(b_uc)
        a, b = float(mask.a()[0]), float(mask.b()[0])
        assert float(mask.kl()) == pytest.approx(2 * _quad_kl(a, b, 1e-4), rel=1e-4)  # summed over units


def test_kl_known_value_uniform_against_beta_alpha_1() -> None:
    """a = b = 1 (uniform): KL = -log(alpha) + alpha - 1 per unit."""
    mask = BetaBernoulliMask(4, a_uc_init=math.log(math.e - 1))
    mask.b_uc.data.fill_(math.log(math.e - 1))
    assert float(mask.kl().detach()) == pytest.approx(4 * (-math.log(1e-4) + 1e-4 - 1), rel=1e-5)


def test_training_sample_is_per_sample_and_test_mask_is_expected_pi() -> None:
    torch.manual_seed(0)
    mask = BetaBernoulliMask(7, a_uc_init=0.5)
    z = mask.sample(5)
    assert z.shape == (5, 7) and bool(((z >= 0) & (z <= 1)).all())
    assert not torch.allclose(z[0], z[1])  # a relaxed Bernoulli draw per sample
    assert float(((z < 0.05) | (z > 0.95)).float().mean()) > 0.7  # temperature 0.1: nearly binary
    x = torch.rand(5, 7, 3, 3) + 0.5
    out = mask(x, training=True)
    ratio = out / x  # one factor per (sample, channel), constant over the map
    assert torch.allclose(ratio, ratio[:, :, :1, :1].expand_as(ratio), atol=1e-6)
    with torch.no_grad():
        mask.a_uc[2] = -10.0  # E[pi] ~ 4.5e-5 <= 1e-3: pruned at test time
    e = mask.expected_pi().detach()
    test = mask(x, training=False)
    assert torch.equal(test[:, 2], torch.zeros_like(test[:, 2]))
    keep = [i for i in range(7) if i != 2]
    torch.testing.assert_close(test[:, keep], x[:, keep] * e[keep].view(1, -1, 1, 1))
    assert mask.n_active() == 6
    feats = torch.rand(4, 7)
    torch.testing.assert_close(mask(feats, training=False), feats * mask.test_z())


# ----------------------------------------------------------------------------- placement
def test_mask_sites_lenet_and_vgg() -> None:
    lenet = build(default_spec("lenet"))
    ms = MaskSet(lenet)
    assert len(ms.sites) == 4 and sum(u for *_, u in ms.sites) == 1370
    assert [float(m.a_uc.detach()[0]) for m in ms.masks] == [-1.0] * 4
    vgg = build(default_spec("vgg_anp"))
    mv = MaskSet(vgg)
    assert len(mv.sites) == 15 and sum(u for *_, u in mv.sites) == 5248
    assert [float(m.a_uc.detach()[0]) for m in mv.masks] == [2.0] * 13 + [-1.0] * 2
    with pytest.raises(PruneLabError, match="no ANP mask sites"):
        MaskSet(build(default_spec("vgg_cifar", depth=16)))


def test_vgg_conv_mask_sits_before_bn_and_features_still_captured() -> None:
    torch.manual_seed(0)
    model = build(default_spec("vgg_anp", **SMALL_VGG)).eval()
    masks = MaskSet(model).attach()
    with torch.no_grad():
        masks.masks[0].a_uc[3] = -10.0  # conv1 channel 3 pruned
        masks.masks[13].a_uc[5] = -10.0  # dense14 input 5 pruned
        model.features[1].bias[3] = 0.7  # BN(0) = 0.7 for channel 3 (running mean 0, var 1)
    seen = {}
    bn_hook = model.features[1].register_forward_pre_hook(lambda m, a: seen.__setitem__("bn_in", a[0].clone()))
    d14_hook = model.classifier[1].register_forward_pre_hook(lambda m, a: seen.__setitem__("d14_in", a[0].clone()))
    with torch.no_grad(), capture(model, feature_sites(model)) as feats:
        model(torch.rand(2, 3, 32, 32))
    bn_hook.remove(), d14_hook.remove()
    assert float(seen["bn_in"][:, 3].abs().max()) == 0.0  # the mask multiplies the conv output, before BN
    assert float(seen["d14_in"][:, 5].abs().max()) == 0.0
    assert len(feats) == 15
    torch.testing.assert_close(feats[0][:, 3], torch.full_like(feats[0][:, 3], 0.7))  # relu(BN(0)) is constant
    masks.detach()
    with torch.no_grad():
        model(torch.rand(1, 3, 32, 32))  # hooks removed: plain network again


def test_lenet_fc1_input_mask_follows_the_nchw_flatten() -> None:
    torch.manual_seed(0)
    model = build(default_spec("lenet")).eval()
    masks = MaskSet(model).attach()
    with torch.no_grad():
        masks.masks[2].a_uc[16 * 7 + 5] = -10.0  # conv2 channel 7, pooled position 5
    seen = {}
    hook = model.fc1.register_forward_hook(lambda m, a, o: seen.__setitem__("in", a[0].clone()))
    with torch.no_grad(), capture(model, feature_sites(model)) as feats:
        model(torch.rand(3, 1, 28, 28))
    hook.remove()
    assert seen["in"].shape == (3, 50, 4, 4)
    assert float(seen["in"][:, 7].flatten(1)[:, 5].abs().max()) == 0.0
    assert len(feats) == 3  # relu(conv1), relu(conv2), relu(fc1)
    masks.detach()


# ----------------------------------------------------------------------------- folding / removal
def _masked_output(model, masks: MaskSet, x: torch.Tensor) -> torch.Tensor:
    masks.attach()
    model.eval()
    with torch.no_grad():
        out = model(x)
    masks.detach()
    return out


def _set_expected(masks: MaskSet, site: int, idx: list[int]) -> None:
    with torch.no_grad():
        masks.masks[site].a_uc[idx] = -10.0  # E[pi] ~ 4.5e-5: below the threshold


def test_lenet_removal_equals_the_masked_network_exactly() -> None:
    torch.manual_seed(0)
    model = build(default_spec("lenet"))
    masks = MaskSet(model)
    with torch.no_grad():
        for m in masks.masks:  # varied kept scales
            m.a_uc.uniform_(-1.0, 2.0)
    _set_expected(masks, 0, [0, 3, 19])  # conv1 outputs
    _set_expected(masks, 1, [2, 4])  # conv2 outputs
    _set_expected(masks, 2, list(range(16 * 10, 16 * 11)) + [16 * 12 + 3, 16 * 12 + 9])  # conv2 ch 10 dead, 12 partial
    _set_expected(masks, 3, list(range(0, 500, 3)))  # fc1 units
    x = torch.rand(4, 1, 28, 28)
    masked = _masked_output(model, masks, x)
    folded, keep, info = fold_masks(model, masks.expected())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), masked)
    small, keep2, _ = remove_units(model, masks.expected())
    assert keep2 == keep
    assert small.spec["conv"] == [17, 47] and small.spec["fc"] == [500 - 167]
    assert 12 in keep["conv2"] and 10 not in keep["conv2"]
    assert info["border_effect_channels"] == 0
    with torch.no_grad():
        torch.testing.assert_close(small.eval()(x), masked, rtol=1e-5, atol=1e-5)


def test_a_layer_keeps_one_unit_when_every_mask_is_below_threshold() -> None:
    torch.manual_seed(0)
    model = build(default_spec("lenet"))
    masks = MaskSet(model)
    _set_expected(masks, 0, list(range(20)))
    with torch.no_grad():
        masks.masks[0].a_uc[6] = -9.0  # the largest (still pruned) E[pi]
    x = torch.rand(2, 1, 28, 28)
    masked = _masked_output(model, masks, x)
    small, keep, _ = remove_units(model, masks.expected())
    assert keep["conv1"] == [6] and small.spec["conv"][0] == 1
    with torch.no_grad():
        torch.testing.assert_close(small.eval()(x), masked, rtol=1e-5, atol=1e-5)


def _random_bn(model) -> None:
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)


def test_vgg_removal_exact_for_the_dense_consumer_and_zero_constants() -> None:
    """Removed conv13 channels (their constant relu(BN(0)) absorbed into dense14's bias), channels
    removed by dense14's input mask, dense14 units removed by dense15's input mask, and interior
    conv channels whose constant is 0: the removed network equals the masked one."""
    torch.manual_seed(0)
    model = build(default_spec("vgg_anp", **SMALL_VGG))
    with torch.no_grad():
        _random_bn(model)
        model.features[1].bias[[1, 4]] = -5.0  # conv1 channels 1, 4: relu(BN(0)) = 0
    masks = MaskSet(model)
    with torch.no_grad():
        for m in masks.masks:
            m.a_uc.uniform_(-1.0, 2.0)
        model.features[-3].bias[[0, 2]] = 0.8  # conv13's BN: channels 0, 2 have relu(BN(0)) > 0
    _set_expected(masks, 0, [1, 4])
    _set_expected(masks, 12, [0, 2])  # conv13 (mask before BN): constant absorbed into dense14
    _set_expected(masks, 13, [5])  # dense14 input: conv13 channel 5 dead
    _set_expected(masks, 14, [1, 7])  # dense15 input: dense14 units 1, 7 dead
    x = torch.rand(3, 3, 32, 32)
    masked = _masked_output(model, masks, x)
    small, keep, info = remove_units(model, masks.expected())
    assert small.spec["cfg"][0] == 6 and small.spec["cfg"][-2] == 5 and small.spec["hidden"] == 6
    assert info["border_effect_channels"] == 0 and info["absorbed_channels"] >= 2
    with torch.no_grad():
        torch.testing.assert_close(small.eval()(x), masked, rtol=1e-4, atol=1e-5)


def test_vgg_interior_constant_is_absorbed_and_counted() -> None:
    """A removed conv channel with relu(BN(0)) > 0 feeding a 3x3 conv: absorbed into its bias, exact
    away from the border (a constant input image and a 1-conv check)."""
    torch.manual_seed(0)
    model = build(default_spec("vgg_anp", **SMALL_VGG))
    with torch.no_grad():
        _random_bn(model)
        model.features[1].bias[2] = 1.0
    masks = MaskSet(model)
    _set_expected(masks, 0, [2])
    folded, keep, info = fold_masks(model, masks.expected())
    assert 2 not in keep["features.0"] and info["border_effect_channels"] == 1
    small, _, _ = remove_units(model, masks.expected())
    masks.attach()
    model.eval()
    small.eval()
    with torch.no_grad():  # the second conv's pre-BN output, interior pixels only
        x = torch.rand(2, 3, 32, 32)
        ref = model.features[4](model.features[2](model.features[1](model.features[0](x))))
        out = small.features[4](small.features[2](small.features[1](small.features[0](x))))
        masks.detach()
        torch.testing.assert_close(out[:, :, 1:-1, 1:-1], ref[:, :, 1:-1, 1:-1], rtol=1e-4, atol=1e-5)
        assert not torch.allclose(out[:, :, 0], ref[:, :, 0], atol=1e-5)  # the border effect


# ----------------------------------------------------------------------------- paper numbers
def test_paper_numbers_dense_nets() -> None:
    for spec, total in ((default_spec("lenet"), 1370), (default_spec("vgg_anp"), 5248)):
        from pruning.models import family

        dense = [u for *_, u in family(spec).mask_sites(spec)]
        out = paper_numbers(spec, dense)
        assert out["paper_units_dense"] == total
        assert out["paper_memory_pct"] == pytest.approx(100.0)
        assert out["paper_flops_speedup"] == pytest.approx(1.0)
        assert out["paper_unit_sparsity"] == pytest.approx(0.0)


def test_paper_numbers_by_hand_lenet_and_the_vgg_memory_quirk() -> None:
    dense = [20, 50, 800, 500]
    # memory: conv1 patches 25*1*24*24 + kernel 25*1*20; conv2 25*20*8*8 + 25*20*50; fc 800*500+500; 500*10+10
    assert lenet_memory(dense) == 14400 + 500 + 32000 + 25000 + 400500 + 5010
    # FLOPs: conv1 20*576*(2*25-1) + 2*20*576; pool 20*144*4; conv2 50*64*999 + 2*50*64; pool 50*16*4;
    # fc1 1599*500 + 500 + 500; fc2 999*10 + 10 (no activation term)
    by_hand = (20 * 576 * 49 + 2 * 20 * 576) + 20 * 144 * 4 + (50 * 64 * 999 + 2 * 50 * 64) + 50 * 16 * 4
    by_hand += 1599 * 500 + 1000 + 999 * 10 + 10
    assert lenet_flops(dense) == by_hand == 4615940
    pruned = [10, 20, 300, 100]
    mem = (14400 + 250) + (25 * 10 * 64 + 25 * 10 * 20) + (300 * 100 + 100) + (100 * 10 + 10)
    flops = (10 * 576 * 49 + 2 * 10 * 576) + 10 * 144 * 4 + (20 * 64 * 499 + 2 * 20 * 64) + 20 * 16 * 4
    flops += 599 * 100 + 200 + 199 * 10 + 10
    out = paper_numbers(default_spec("lenet"), pruned)
    assert out["paper_memory_pct"] == pytest.approx(100 * mem / 477410)
    assert out["paper_flops_speedup"] == pytest.approx(4615940 / flops)
    assert out["paper_unit_sparsity"] == pytest.approx(100 - 100 * 430 / 1370)
    # vgg_memory: the two dense terms are added once per conv (13 times), as the official code does
    spec = default_spec("vgg_anp")
    units = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512]
    sides = [32, 32, 16, 16, 8, 8, 8, 4, 4, 4, 2, 2, 2]
    chans = [3, *units]
    convs = sum(9 * chans[i] * s * s + 9 * chans[i] * chans[i + 1] + 2 * chans[i + 1] for i, s in enumerate(sides))
    dense_terms = (512 * 512 + 512 + 2 * 512) + (512 * 10 + 10)
    assert vgg_memory(units, 10, spec["cfg"]) == convs + 13 * dense_terms


# ----------------------------------------------------------------------------- config
def test_config_errors_name_the_bad_value() -> None:
    cases = [
        ({"epochs": 0}, "method.epochs=0"),
        ({"batch_size": "x"}, "method.batch_size='x'"),
        ({"beta": -1}, "method.beta=-1"),
        ({"lam": "big"}, "method.lam='big'"),
        ({"boundaries": [0.8, 0.5]}, "method.boundaries"),
        ({"threshold": 2}, "method.threshold=2"),
        ({"attack": {"eps": 2.0, "step": 0.01, "steps": 2}}, "method.attack"),
        ({"attack": None}, "method.attack is required"),
    ]
    for kwargs, message in cases:
        with pytest.raises(PruneLabError, match=message.replace("[", r"\[").replace(".", r"\.")):
            ANP(**{"attack": ATTACK, "data_name": "mnist", **kwargs})
    with pytest.raises(PruneLabError, match="data=digits"):
        ANP(attack=ATTACK, data_name="digits")
    with pytest.raises(PruneLabError, match="model=vgg16 .*lenet5_caffe"):
        ANP(attack=ATTACK, data_name="mnist").validate("vgg16", default_spec("vgg_cifar", depth=16))


def test_variants_per_data_values_and_yaml(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from pruning.config import make_method
    from tests.conftest import compose

    full = ANP(attack=ATTACK, data_name="cifar100")
    assert (full.tag(), full.beta, full.lam) == ("anp_vs", 1.0, 0.1)
    no_vs = ANP(attack=ATTACK, data_name="cifar10", vs=False)
    assert (no_vs.key()["variant"], no_vs.beta, no_vs.lam) == ("anp", 2.0, 0.0)
    bp = ANP(adversarial=False, data_name="mnist")
    assert (bp.tag(), bp.beta, bp.settings()["attack"]) == ("bp", 1.0, None)
    fashion = ANP(attack=ATTACK, data_name="fashion_mnist")
    assert fashion.beta == 4.0 and "not a paper value" in fashion.per_data_note
    cfg = compose(["method=anp", "model=lenet5_caffe", "data=mnist", f"paths.results_root={tmp_path}"])
    cfg = OmegaConf.to_container(cfg, resolve=True)
    assert cfg["finetune"]["name"] == "none"
    method = make_method(cfg["method"])
    method.validate("lenet5_caffe", default_spec("lenet"))
    s = method.settings()
    assert (s["beta"], s["lam"], s["epochs"], s["boundaries"]) == (4.0, 0.001, 200, [0.5, 0.7])
    assert s["attack"]["eps"] == 0.3 and s["attack"]["steps"] == 20
    assert method.key() == {"variant": "anp_vs", "ratio": None}


# ----------------------------------------------------------------------------- end to end
def _random_mnist(n_train: int = 64, n_test: int = 32) -> ImageData:
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        labels = torch.randint(0, 10, (n,), generator=g)
        images = (torch.rand(n, 1, 28, 28, generator=g) * 80 + labels.view(-1, 1, 1, 1) * 17).to(torch.uint8)
        return Split(images, labels)

    return ImageData("mnist", split(n_train), split(n_test), 10, (0.1307,), (0.3081,), augment=False)


def _ctx(tmp_path: Path, name: str, cache: bool = True, **kw) -> PruneContext:
    work = tmp_path / name
    work.mkdir(parents=True, exist_ok=True)
    return PruneContext(
        data=_random_mnist(),
        input_shape=(1, 28, 28),
        work_dir=work,
        cache_dir=tmp_path / "cache" if cache else None,
        source_id="dense-src" if cache else None,
        **kw,
    )


def test_prune_end_to_end_lenet_cached(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build(default_spec("lenet"))
    method = ANP(attack=ATTACK, data_name="mnist", epochs=1, batch_size=32)
    method.validate("lenet5_caffe", model.spec)
    result = method.prune(model, _ctx(tmp_path, "run"))
    dense = model.spec
    assert all(
        a <= b for a, b in zip(result.spec["conv"] + result.spec["fc"], dense["conv"] + dense["fc"], strict=True)
    )
    for key in (
        "units_active",
        "kept_per_group",
        "paper_unit_sparsity",
        "paper_memory_pct",
        "paper_flops_speedup",
        "masked_top1",
        "removed_top1",
    ):
        assert key in result.extras
    assert result.extras["removed_top1"] == pytest.approx(result.extras["masked_top1"])  # LeNet: exact removal
    own = result.own_stage
    assert own["name"] == "anp" and own["samples"] == 64 and own["epochs"] == 1
    assert own["macs_per_sample"] == 4 * (20 * 576 * 25 + 50 * 64 * 500 + 800 * 500 + 500 * 10)  # 2 + 2 PGD steps
    assert not (tmp_path / "run" / "ckpt_anp.pt").exists()  # removed once the entry is written
    assert (tmp_path / "run" / "anp_masks.json").exists()
    again = method.prune(model, _ctx(tmp_path, "run2"))
    assert again.extras["anp_cached"] and again.spec == result.spec


def test_prune_resumes_from_the_epoch_checkpoint(tmp_path: Path) -> None:
    class Killed(Exception):
        pass

    def dies_after_epoch_1(message: str) -> None:
        if "epoch 1/2" in message:
            raise Killed

    torch.manual_seed(0)
    model = build(default_spec("lenet"))
    method = ANP(attack=ATTACK, data_name="mnist", epochs=2, batch_size=32)
    method.validate("lenet5_caffe", model.spec)
    with pytest.raises(Killed):
        method.prune(model, _ctx(tmp_path, "run", cache=False, quiet=False, say=dies_after_epoch_1))
    assert (tmp_path / "run" / "ckpt_anp.pt").exists()
    said: list[str] = []
    resumed = method.prune(model, _ctx(tmp_path, "run", cache=False, quiet=False, say=said.append))
    assert any("resumed after epoch 1/2" in s for s in said)
    assert sum("epoch 2/2" in s for s in said) == 1 and not any("epoch 1/2 CE" in s for s in said)
    straight = method.prune(model, _ctx(tmp_path, "straight", cache=False))
    assert resumed.spec == straight.spec
    for a, b in zip(resumed.model.state_dict().values(), straight.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    assert resumed.own_stage["samples"] == straight.own_stage["samples"] == 128


def test_the_official_cifar_attack_is_an_option_and_off_by_default() -> None:
    plain = ANP(attack=ATTACK, data_name="mnist")
    assert not plain.attack.official_clip and "official_clip" not in plain.settings()["attack"]  # cache ids kept
    official = ANP(attack={**ATTACK, "official_clip": True}, data_name="mnist")
    assert official.attack.official_clip and official.settings()["attack"]["official_clip"] is True


def test_prune_bp_variant_runs_without_attack(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build(default_spec("lenet"))
    method = ANP(adversarial=False, data_name="mnist", epochs=1, batch_size=32)
    method.validate("lenet5_caffe", model.spec)
    said: list[str] = []
    result = method.prune(model, _ctx(tmp_path, "bp", cache=False, say=said.append))
    assert result.extras["variant"] == "bp" and result.extras["lam"] == 0.0
    # two steps prune nothing (E[pi] starts at 0.24 >> 1e-3): recorded and said, not silent
    assert result.extras["target"] == {
        "quantity": "pruned_units",
        "asked": None,
        "achieved": 0.0,
        "met": False,
        "rule": "achieved > 0 (some unit removed)",
    }
    assert any(line.startswith("warning: ANP (bp): 0 of 1370 units pruned") for line in said)
    assert result.own_stage["macs_per_sample"] == 20 * 576 * 25 + 50 * 64 * 500 + 800 * 500 + 500 * 10


def _random_cifar(n_train: int = 32, n_test: int = 16) -> ImageData:
    g = torch.Generator().manual_seed(1)

    def split(n: int) -> Split:
        labels = torch.randint(0, 10, (n,), generator=g)
        images = (torch.rand(n, 3, 32, 32, generator=g) * 120 + labels.view(-1, 1, 1, 1) * 13).to(torch.uint8)
        return Split(images, labels)

    return ImageData("cifar10", split(n_train), split(n_test), 10, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), augment=True)


def test_prune_vgg_head_dropouts_off_block_dropouts_on(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build(default_spec("vgg_anp", **SMALL_VGG))
    modes: dict[str, set] = {"head": set(), "block": set()}
    model.classifier[0].register_forward_pre_hook(lambda m, a: modes["head"].add(m.training))
    model.features[3].register_forward_pre_hook(lambda m, a: modes["block"].add(m.training))  # dropout 0.3
    method = ANP(attack={"eps": 0.03, "step": 0.007, "steps": 1}, data_name="cifar10", epochs=1, batch_size=16)
    method.validate("vgg16_anp", model.spec)
    ctx = PruneContext(data=_random_cifar(), input_shape=(3, 32, 32), work_dir=tmp_path)
    result = method.prune(model, ctx)
    assert modes["head"] == {False}  # hooks travel with the deepcopy the method trains
    assert modes["block"] == {True, False}  # train-mode passes and the eval-mode attack / test
    assert len(result.extras["units_active"]) == 15 and result.extras["beta"] == 2.0
    assert result.own_stage["samples"] == 32
    assert "masked_top1" in result.extras and "removed_top1" in result.extras


def test_mask_gradients_come_from_the_adversarial_loss_only() -> None:
    """Masks: CE(x_adv) + beta KL / N; weights: the mixed loss (+ lambda V): changing lambda or the
    adversarial weight changes the weight gradients, never the mask gradients."""

    class Record:
        def __init__(self, params):
            self.params = list(params)
            self.grads = None

        def step(self):
            self.grads = [p.grad.clone() for p in self.params]

        def zero_grad(self, set_to_none=True):
            for p in self.params:
                p.grad = None

    data = _random_mnist(16, 4)
    images, labels = next(data.train_batches(16, torch.Generator().manual_seed(0)))

    def grads(**kw):
        torch.manual_seed(0)
        model = build(default_spec("lenet"))
        masks = MaskSet(model).attach()
        method = ANP(attack=ATTACK, data_name="mnist", **kw)
        weights, mparams = list(model.parameters()), masks.parameters()
        om, ow = Record(mparams), Record(weights)
        sums = torch.zeros(6)
        method._step(
            model,
            masks,
            weights,
            mparams,
            om,
            ow,
            images,
            labels,
            feature_sites(model),
            60000.0,
            sums,
            data.mean,
            data.std,
        )
        assert float(sums[4]) > 0  # the vulnerability was measured
        return om.grads, ow.grads

    base_m, base_w = grads(lam=0.001)
    for kw in ({"lam": 10.0}, {"lam": 0.001, "adv_weight": 0.5}):
        m, w = grads(**kw)
        for a, b in zip(base_m, m, strict=True):
            torch.testing.assert_close(a, b)
        assert any(not torch.allclose(a, b) for a, b in zip(base_w, w, strict=True))
