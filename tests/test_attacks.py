"""Attacks, robustness evaluation and adversarial training (issue 12 items 1-2)."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pruning import PruneLabError
from pruning.attacks import (
    AttackSpec,
    PixelModel,
    capture,
    feature_sites,
    from_pixels,
    perturb,
    robust_evaluate,
    to_pixels,
    vulnerability,
)
from pruning.models import build, default_spec
from tests.conftest import QUICK_DIGITS, plain_cfg, prune_exp, run_path, run_pipeline

MEAN, STD = (0.1307,), (0.3081,)


def _official_pgd(model, x, y, eps, step, steps, start):
    """The ANP-VS official PGD (src/model/attacks.py), written out from its description:
    x + U(-eps, eps) (here: the given start noise), clip [0, 1]; per step x += step * sign(grad CE),
    clip to x_nat +- eps, clip [0, 1]."""
    adv = (x + start).clamp(0, 1)
    for _ in range(steps):
        adv = adv.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(adv), y), adv)
        adv = adv.detach() + step * grad.sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
    return adv.detach()


def _lenet_batch(n=16, seed=0):
    torch.manual_seed(seed)
    model = build(default_spec("lenet")).eval()
    x01 = torch.rand(n, 1, 28, 28)
    y = torch.randint(0, 10, (n,))
    return model, x01, y


def test_pgd_is_the_official_algorithm():
    model, x01, y = _lenet_batch()
    spec = AttackSpec("pgd", eps=0.3, step=0.01, steps=7)
    torch.manual_seed(123)
    ours = to_pixels(perturb(model, from_pixels(x01, MEAN, STD), y, spec, MEAN, STD), MEAN, STD)
    torch.manual_seed(123)
    start = torch.empty_like(x01).uniform_(-0.3, 0.3)  # torchattacks draws its start exactly so
    reference = _official_pgd(PixelModel(model, MEAN, STD), x01, y, 0.3, 0.01, 7, start)
    assert torch.allclose(ours, reference, atol=1e-5)


def test_official_clip_is_the_official_pgd_on_the_normalised_input():
    """robustness.official_clip: the ANP-VS CIFAR attack (standardised input, clipped to [0, 1]
    in standardised units), step for step; the default attack is unchanged and keeps its name."""
    model, x01, y = _lenet_batch()
    x = from_pixels(x01, MEAN, STD)  # normalised: ~ -0.42 .. 2.82, most values outside [0, 1]
    spec = AttackSpec("pgd", eps=0.03, step=0.007, steps=5, official_clip=True)
    torch.manual_seed(7)
    ours = perturb(model, x, y, spec, MEAN, STD)
    torch.manual_seed(7)
    start = torch.empty_like(x).uniform_(-0.03, 0.03)
    reference = _official_pgd(model, x, y, 0.03, 0.007, 5, start)
    assert torch.allclose(ours, reference, atol=1e-6)
    assert ours.min() >= 0 and ours.max() <= 1  # clipped in normalised units
    outside = ((x < 0) | (x > 1)).float().mean()
    assert (ours - x).abs().mean() > 0.3 * outside  # far more than eps: the clip moves most values
    assert spec.name == "pgd5_official_clip" and spec.describe()["official_clip"] is True
    plain = AttackSpec("pgd", eps=0.03, step=0.007, steps=5)
    assert plain.name == "pgd5" and "official_clip" not in plain.describe()  # recorded settings unchanged
    parsed = AttackSpec.from_config({"eps": 0.03, "step": 0.007, "steps": 40, "official_clip": True})
    assert parsed.official_clip and parsed.name == "pgd40_official_clip"
    with pytest.raises(PruneLabError, match="robustness.official_clip"):
        AttackSpec.from_config({"eps": 0.03, "official_clip": "maybe"})
    with pytest.raises(PruneLabError, match="PGD only"):
        AttackSpec("fgsm", eps=0.03, official_clip=True)


def test_official_clip_evaluation_records_how_much_the_clip_moves_the_inputs():
    from pruning.data import ImageData, Split

    model, _, _ = _lenet_batch()
    g = torch.Generator().manual_seed(0)
    test = Split((torch.rand(32, 1, 28, 28, generator=g) * 255).to(torch.uint8), torch.randint(0, 10, (32,)))
    data = ImageData("mnist", test, test, 10, MEAN, STD, False)
    spec = AttackSpec("pgd", eps=0.03, step=0.007, steps=2, official_clip=True)
    result = robust_evaluate(model, data, spec, batch_size=16)
    assert result["n"] == 32 and result["attack"]["official_clip"] is True
    assert 0.5 < result["input_outside_0_1"] < 1.0 and result["mean_abs_change"] > 0.1
    assert "input_outside_0_1" not in robust_evaluate(model, data, AttackSpec("pgd", 0.03, 0.007, 2), batch_size=16)


def test_perturbation_stays_in_the_ball_and_the_pixel_range():
    model, x01, y = _lenet_batch()
    adv = perturb(model, from_pixels(x01, MEAN, STD), y, AttackSpec("pgd", 0.1, 0.05, 5), MEAN, STD)
    adv = to_pixels(adv, MEAN, STD)
    assert (adv - x01).abs().max() <= 0.1 + 1e-5
    assert adv.min() >= 0 and adv.max() <= 1
    fgsm = perturb(model, from_pixels(x01, MEAN, STD), y, AttackSpec("fgsm", eps=0.1), MEAN, STD)
    delta = (to_pixels(fgsm, MEAN, STD) - x01).abs()
    assert delta.max() <= 0.1 + 1e-5 and delta.max() > 0.09


def test_attack_hurts_and_leaves_the_model_as_it_was():
    model, x01, y = _lenet_batch(64)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = from_pixels(x01, MEAN, STD)
    y = model.eval()(x).argmax(1)  # labels the model gets right
    model.train()
    adv = perturb(model, x, y, AttackSpec("pgd", 0.3, 0.05, 10), MEAN, STD)
    assert model.training  # mode restored
    model.eval()
    perturb(model, x, y, AttackSpec("pgd", 0.3, 0.05, 2), MEAN, STD)
    assert not any(m.training for m in model.modules())  # an eval model stays in eval mode (BN stats untouched)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert (model.eval()(adv).argmax(1) == y).float().mean() < 0.5


def test_feature_sites_are_the_official_latent_features():
    lenet = build(default_spec("lenet")).eval()
    with capture(lenet, feature_sites(lenet)) as feats:
        lenet(torch.zeros(2, 1, 28, 28))
    assert [tuple(f.shape[1:]) for f in feats] == [(20, 24, 24), (50, 8, 8), (500,)]
    vgg = build(default_spec("vgg_anp")).eval()
    with capture(vgg, feature_sites(vgg)) as feats:
        vgg(torch.zeros(2, 3, 32, 32))
    assert len(feats) == 15 and tuple(feats[-2].shape) == (2, 512) and tuple(feats[-1].shape) == (2, 512)
    resnet = build(default_spec("resnet_cifar", depth=20))  # any model: the inputs of every layer but the first
    with capture(resnet, feature_sites(resnet)) as feats:
        resnet(torch.zeros(1, 3, 32, 32))
    assert len(feats) == 19  # 18 block convs + the fc
    assert tuple(feats[0].shape) == (1, 16, 32, 32) and tuple(feats[-1].shape) == (1, 64)


def test_vulnerability_is_the_mean_over_layers_of_mean_absolute_distortion():
    clean = [torch.zeros(2, 3), torch.ones(4)]
    adv = [torch.full((2, 3), 0.5), torch.tensor([1.0, 1.0, 3.0, 1.0])]
    assert vulnerability(clean, adv).item() == pytest.approx((0.5 + 0.5) / 2)
    with pytest.raises(PruneLabError):
        vulnerability(clean, adv[:1])


def test_attack_settings_are_checked():
    with pytest.raises(PruneLabError, match="robustness.eps"):
        AttackSpec.from_config({"eps": 2}, "robustness")
    with pytest.raises(PruneLabError, match="adv_train.steps"):
        AttackSpec.from_config({"eps": 0.1, "step": 0.01, "steps": "x"}, "adv_train")
    assert AttackSpec.from_config({"eps": 0.3, "step": 0.01, "steps": 40}).name == "pgd40"


class _Digits:
    """A tiny in-memory test set with the data protocol's pieces robust_evaluate uses."""

    mean, std, device = MEAN, STD, torch.device("cpu")

    def __init__(self, n=40):
        g = torch.Generator().manual_seed(0)
        self.x = from_pixels(torch.rand(n, 1, 28, 28, generator=g), MEAN, STD)
        self.y = torch.randint(0, 10, (n,), generator=g)

    def test_batches(self, batch_size):
        for i in range(0, len(self.y), batch_size):
            yield self.x[i : i + batch_size], self.y[i : i + batch_size]


def test_robust_evaluate_is_seeded_and_black_box_uses_the_source():
    torch.manual_seed(0)
    model, source, data = build(default_spec("lenet")), build(default_spec("lenet")), _Digits()
    spec = AttackSpec("pgd", 0.3, 0.05, 3)
    a = robust_evaluate(model, data, spec, batch_size=16, seed=5)
    b = robust_evaluate(model, data, spec, batch_size=16, seed=5)
    assert a == b and a["n"] == 40 and a["box"] == "white" and a["feature_tensors"] == 3
    bb = robust_evaluate(model, data, spec, batch_size=16, source=source, limit=20, seed=5)
    assert bb["box"] == "black" and bb["n"] == 20 and bb["top1"] >= 0
    assert a["top1"] <= a["clean_top1"]


# ----------------------------------------------------------------------------- pipeline integration
@pytest.mark.integration  # two pipeline runs + attacks (~15 s): the slower tier
def test_robustness_recorded_and_added_to_a_finished_run(tmp_path):
    cfg = plain_cfg([*QUICK_DIGITS, "robustness=pgd", "robustness.steps=3", "robustness.black_box=false"], tmp_path)
    m = run_pipeline(cfg)
    ev = m["evaluations"]
    assert set(ev) == {"pgd3", "fgsm"} and ev["pgd3"]["n"] == 360
    assert ev["pgd3"]["top1"] <= ev["pgd3"]["clean_top1"]
    assert ev["pgd3"]["clean_top1"] == pytest.approx(m["final"]["top1"], abs=0.01)  # the final network, eval mode
    # the finished run asked for more: evaluated from final.pt, not retrained
    cfg2 = plain_cfg([*QUICK_DIGITS, "robustness=pgd", "robustness.steps=3", "robustness.test_subset=50"], tmp_path)
    m2 = run_pipeline(cfg2)
    assert m2["stages"] == m["stages"] and m2["final"] == m["final"]
    assert set(m2["evaluations"]) == {"pgd3", "fgsm", "pgd3_bb"}
    assert m2["evaluations"]["pgd3_bb"]["n"] == 50 and m2["budget"]["black_box_source"]["seed"] == 1000
    assert m2["evaluations"]["pgd3"]["n"] == 50  # settings changed (subset): re-measured


@pytest.mark.integration  # three adversarially trained pipeline runs: the slower tier
def test_adversarial_training_dense_and_second_stage(tmp_path):
    at = run_pipeline(plain_cfg([*QUICK_DIGITS, "method=none", "adv_train=pgd", "adv_train.steps=2"], tmp_path))
    std = run_pipeline(plain_cfg([*QUICK_DIGITS, "method=none"], tmp_path))
    assert at["key"]["adv_train"] == "pgd" and std["key"]["adv_train"] == "none"
    assert at["run_dir"] != std["run_dir"] and "none+pgd" in at["run_dir"]
    assert at["stages"]["pretrain"]["baseline_id"] != std["stages"]["pretrain"]["baseline_id"]
    # PGD-AT costs 1 + steps passes per sample
    assert at["stages"]["pretrain"]["macs_per_sample"] == 3 * std["stages"]["pretrain"]["macs_per_sample"]
    assert at["stages"]["pretrain"]["train_macs"] == 3 * std["stages"]["pretrain"]["train_macs"]
    second = run_pipeline(plain_cfg([*QUICK_DIGITS, "adv_train=pgd_second", "adv_train.steps=2"], tmp_path))
    assert second["stages"]["pretrain"]["baseline_id"] == std["stages"]["pretrain"]["baseline_id"]  # standard dense
    assert second["stages"]["finetune"]["macs_per_sample"] == 3 * second["flops_pruned"]


def test_finetune_none_keeps_the_pruned_network(tmp_path):
    m = run_pipeline(plain_cfg([*QUICK_DIGITS, "finetune=none"], tmp_path))
    assert m["key"]["finetune"] == "none" and "none" not in m["stages"]
    assert m["final"]["top1"] == m["stages"]["prune"]["top1"] and m["budget"]["stage_epochs"] == 0


BAD_SETTINGS = [
    (["robustness=pgd", "robustness.eps=2"], "robustness.eps=2"),
    (["robustness=pgd", "robustness.source=nope.pt"], "robustness.source='nope.pt'"),
    (["adv_train=pgd_second", "finetune=none"], "finetune=none has no second stage"),
    (["adv_train=pgd", "adv_train.steps=0"], "adv_train.steps=0"),
    (["adv_train=trades", "adv_train.beta=-1"], "adv_train.beta=-1"),
]


def test_bad_robustness_and_adversarial_settings_are_refused(tmp_path):
    from pruning.config import validate

    for args, message in BAD_SETTINGS:
        with pytest.raises(PruneLabError) as e:
            validate(plain_cfg(args, tmp_path))
        assert message in str(e.value), (args, str(e.value))


@pytest.mark.integration
def test_bad_robustness_and_adversarial_settings_exit_2(tmp_path):
    for args, message in BAD_SETTINGS:
        r = prune_exp([*args, "quiet=true"], tmp_path)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    assert not list(tmp_path.rglob("metrics.json"))


def test_old_records_read_as_standard_training(tmp_path):
    from pruning.results import RunMetrics

    old = {"schema": 2, "key": {"data": "d", "model": "m", "method": "none", "seed": 0}, "status": "done"}
    assert RunMetrics.from_dict(json.loads(json.dumps(old))).key.adv_train == "none"


def test_pixel_model_normalises():
    inner = nn.Identity()
    out = PixelModel(inner, MEAN, STD)(torch.full((1, 1, 2, 2), 0.1307))
    assert torch.allclose(out, torch.zeros(1, 1, 2, 2), atol=1e-6)


# ----------------------------------------------------------------------------- ANP-VS end to end
def test_anp_through_the_pipeline_and_its_paper_table(tmp_path):
    from pruning.report import build_tables, load_runs, load_specs, render_markdown
    from tests.conftest import write_fake_mnist

    root = write_fake_mnist(tmp_path / "mnist", n_train=60, n_test=20)
    common = [
        "data=mnist",
        f"data.root={root}",
        "data.strict_sizes=false",
        "model=lenet5_caffe",
        "schedule=anp_lenet",
        "schedule.epochs=2",
        "robustness=pgd",
        "robustness.steps=2",
        "latency.cpu_batch_sizes=[1]",
        "latency.repeats=2",
    ]
    anp = run_pipeline(plain_cfg([*common, "method=anp", "method.epochs=1", "method.attack.steps=2"], tmp_path))
    assert anp["status"] == "done" and anp["key"]["variant"] == "anp_vs" and anp["key"]["finetune"] == "none"
    assert "anp" in anp["stages"] and anp["final"]["top1"] == anp["stages"]["prune"]["top1"]
    assert anp["stages"]["anp"]["macs_per_sample"] == 4 * anp["flops_dense"]  # clean + adversarial + 2 PGD steps
    assert {"paper_unit_sparsity", "paper_memory_pct", "paper_flops_speedup", "masked_top1"} <= set(anp["extras"])
    assert set(anp["evaluations"]) == {"pgd2", "fgsm", "pgd2_bb"}
    assert (run_path(anp, tmp_path) / "final.pt").exists()
    std = run_pipeline(plain_cfg([*common, "method=none"], tmp_path))
    at = run_pipeline(plain_cfg([*common, "method=none", "adv_train=pgd", "adv_train.steps=2"], tmp_path))
    assert at["evaluations"]["pgd2"]["n"] == std["evaluations"]["pgd2"]["n"] == 20

    spec = load_specs()["anp_mnist"]
    table = build_tables(spec, load_runs(tmp_path))[0]  # the runs' budget (the paper-budget table follows)
    text = render_markdown(table)
    flat = " ".join(text.split())  # the caption and footnotes are wrapped at 120 columns
    rows = table.by_row()
    assert rows["Standard"]["n"] == rows["AT (PGD, Madry)"]["n"] == rows["ANP-VS"]["n"] == "1"
    bp = rows["BP (Bayesian pruning, no AT)"]["Clean"]  # not run: "[cN] (paper)", command N below the table
    number = int(bp.split("]")[0].removeprefix("[c"))
    assert table.commands[number - 1].startswith("prune-exp -m table_row=anp_mnist_bp")
    assert f"- c{number}: `prune-exp -m table_row=anp_mnist_bp" in text
    assert rows["ADMM"]["Clean"].startswith("n/i") and "Ye et al. 2019" in flat
    assert "L∞ PGD-2 eps 0.3 step 0.01" in flat  # the attack is in the caption
    record = table.records.set_index("pruned_model").loc["Standard"]
    assert record["memory_ours_mean"] == 100.0 and record["wb_ours_mean"] == pytest.approx(
        std["evaluations"]["pgd2"]["top1"], abs=1e-3
    )


def test_attack_presets_and_robustness_leave_run_directories_unchanged(tmp_path):
    """The data's `adversarial` block and robustness=... change no run directory (existing
    commands still resume / skip their runs); adversarial training does."""
    from pruning.config import run_subdir

    base = plain_cfg(["data=cifar10", "model=resnet20"], tmp_path)
    evaluated = plain_cfg(["data=cifar10", "model=resnet20", "robustness=pgd"], tmp_path)
    no_preset = plain_cfg(["data=cifar10", "model=resnet20"], tmp_path)
    del no_preset["data"]["adversarial"]
    trained = plain_cfg(["data=cifar10", "model=resnet20", "adv_train=pgd"], tmp_path)
    elsewhere = plain_cfg(["data=cifar10", "model=resnet20", "data.root=/another/folder"], tmp_path)
    assert run_subdir(base) == run_subdir(evaluated) == run_subdir(no_preset) == run_subdir(elsewhere)
    assert run_subdir(trained) != run_subdir(base) and "+pgd/" in run_subdir(trained)


def test_sweep_tables_show_robust_accuracy_of_evaluated_runs(tmp_path):
    from pruning.report import build_tables, load_runs, load_specs, render_markdown

    evaluated = ["robustness=pgd", "robustness.steps=2", "robustness.black_box=false"]
    run_pipeline(plain_cfg([*QUICK_DIGITS, *evaluated], tmp_path))
    run_pipeline(plain_cfg([*QUICK_DIGITS, "method.ratio=0.3"], tmp_path))  # not evaluated: "—"
    (table,) = build_tables(load_specs()["sweep"], load_runs(tmp_path))
    text = " ".join(render_markdown(table).split())  # the caption is wrapped at 120 columns
    assert "WB PGD top-1" in table.headers and "BB PGD top-1" not in table.headers
    assert "L∞ PGD-2 eps 0.1 step 0.01" in text
    cells = {row[3]: row[-1] for row in table.rows}  # ratio -> WB PGD cell
    assert cells["0.3"] == "—" and re.fullmatch(r"\d+\.\d\d", cells["0.5"])
