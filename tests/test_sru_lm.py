"""The SRU character LM of FLOP's enwik8 experiments (pruning/models/sru_lm.py): exact sizes,
the recurrence and its hand-written backward, the stateful BPTT interface, and (integration tier)
agreement with the official ``sru`` 2.6.0 package wired as FLOP's train_enwik8.py wires it."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pruning import PruneLabError
from pruning.models import sru_lm
from pruning.models.sru_lm import SRURecurrence

FLOP = dict(num_classes=205)  # train_enwik8.py defaults; byte-level enwik8 has 205 symbols
SMALL = dict(num_classes=13, depth=3, n_d=16, n_proj=5, dropout=0.0)


def small_model(seed: int = 0, **kw) -> sru_lm.SRULanguageModel:
    torch.manual_seed(seed)
    return sru_lm.build(sru_lm.default_spec(**{**SMALL, **kw}))


def tokens(batch: int, length: int, vocab: int = 13, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- spec and sizes
def test_flop_config_has_the_official_parameter_counts() -> None:
    spec = sru_lm.default_spec(**FLOP)
    assert spec["n_e"] == 205 and spec["n_d"] == 3056 and spec["depth"] == 6 and spec["n_proj"] == [512] * 5
    assert spec["dropout"] == 0.1 and spec["highway_bias"] == -3.0 and spec["rescale"] is False
    model = sru_lm.build(spec)  # a real 34.5M-parameter module (~1 s)
    assert numel(model) == 34_541_414
    assert numel(model.embedding) == 42_025
    assert numel(model.layers) == 33_872_704
    assert numel(model.output) == 626_685
    assert sum(numel(m) for _, m in model.prunable_linears()) == 33_799_360
    assert sum(numel(m) for _, m in model.transforms()) == 33_799_360
    assert [n for n, _ in model.transforms()] == [f"layers.{i}.transform" for i in range(6)]
    names = [n for n, _ in model.prunable_linears()]
    assert names[:3] == ["layers.0.transform", "layers.1.transform.linear1", "layers.1.transform.linear2"]
    params = dict(model.named_parameters())
    assert all(params[f"{n}.weight"] is m.weight for n, m in model.prunable_linears())  # names are module paths
    assert isinstance(model.layers[0].transform, nn.Linear) and model.layers[0].transform.bias is None
    assert model.layers[0].transform.weight.shape == (4 * 3056, 205)
    for layer in model.layers[1:]:
        assert layer.transform.linear1.weight.shape == (512, 3056) and layer.transform.linear1.bias is None
        assert layer.transform.linear2.weight.shape == (3 * 3056, 512) and layer.transform.linear2.bias is None


def test_macs_per_token_matches_a_hand_count_for_flop() -> None:
    layer1 = 205 * 4 * 3056  # CustomLinear n_e -> 4 n_d
    projected = 5 * (3056 * 512 + 512 * 3 * 3056)  # layers 2..6: n_d -> 512 -> 3 n_d
    output = 3056 * 205
    assert sru_lm.macs_per_token(sru_lm.default_spec(**FLOP)) == layer1 + projected + output == 34_425_840


@pytest.mark.parametrize("kw", [SMALL, dict(SMALL, n_proj=[4, 0], n_e=7), dict(SMALL, n_d=13)])
def test_forward_hooks_on_one_token_count_macs_per_token(kw: dict) -> None:
    spec = sru_lm.default_spec(**kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a rank-0 Linear warns that its init is a no-op
        model = sru_lm.build(spec).eval()
    total = 0

    def hook(m: nn.Linear, _inp, _out) -> None:
        nonlocal total
        total += m.in_features * m.out_features

    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, 1, dtype=model.input_dtype))
    assert total == sru_lm.macs_per_token(spec)


def test_default_spec_vocabulary_embedding_width_and_ranks() -> None:
    assert sru_lm.default_spec(num_classes=50, n_d=32, depth=2)["n_e"] == 32  # V >= n_d: n_e = n_d
    assert sru_lm.default_spec(num_classes=20, n_d=32, depth=2)["n_e"] == 20  # V < n_d: n_e = V
    assert sru_lm.default_spec(num_classes=20, n_d=32, n_e=8)["n_e"] == 8
    assert sru_lm.default_spec(num_classes=20, depth=3, n_proj=[3, 4], in_channels=1)["n_proj"] == [3, 4]
    assert sru_lm.default_spec(num_classes=20, depth=3, n_d=8, n_proj=None)["n_proj"] == [6, 6]  # in*out/(in+out)
    with pytest.raises(PruneLabError):
        sru_lm.default_spec(num_classes=20, depth=3, n_proj=[3])
    assert sru_lm.channel_groups(sru_lm.default_spec(**SMALL)) == []


def test_initialisation_follows_the_official_constants() -> None:
    model = small_model(n_d=40, highway_bias=-3.0)
    vocab_bound = (3.0 / 13) ** 0.5  # Model.init_weights: U(-sqrt(3/size(0)), ..) for both matrices
    assert model.embedding.weight.abs().max() <= vocab_bound
    assert model.output.weight.abs().max() <= vocab_bound and model.output.weight.abs().max() > 0.8 * vocab_bound
    assert torch.all(model.output.bias == 0)
    for layer in model.layers:
        assert torch.all(layer.bias[:40] == 0) and torch.all(layer.bias[40:] == -3.0)  # forget 0, highway -3
        bound = (3.0**0.5) * (0.5**0.5)  # weight_c ~ U(-sqrt 3, sqrt 3) * sqrt(0.5)
        assert layer.weight_c.abs().max() <= bound and layer.weight_c.abs().max() > 0.8 * bound
    first = model.layers[0].transform.weight  # nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert first.abs().max() <= 13**-0.5 and first.abs().max() > 0.8 * 13**-0.5
    assert [layer.dropout for layer in small_model(dropout=0.25).layers] == [0.25, 0.25, 0.0]  # not the last


# ----------------------------------------------------------------------------- the recurrence
def reference_recurrence(U, skip, weight_c, bias, c0, mask_c):
    """sru/ops.py elementwise_recurrence_naive, written out step by step (autograd does the rest)."""
    d = U.size(2)
    x_skip = U[..., 3] if skip is None else skip
    mask = 1 if mask_c is None else mask_c
    c, hs = c0, []
    for t in range(U.size(0)):
        f = (U[t, ..., 1] + bias[:d] + c * weight_c[:d]).sigmoid()
        r = (U[t, ..., 2] + bias[d:] + c * weight_c[d:]).sigmoid()
        c = U[t, ..., 0] + (c - U[t, ..., 0]) * f
        hs.append(x_skip[t] + (c - x_skip[t]) * mask * r)
    return torch.stack(hs), c


def recurrence_inputs(k: int, with_mask: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    T, B, d = 5, 3, 4

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()

    mask = (torch.rand(B, d, generator=g) > 0.3).double() / 0.7 if with_mask else None
    skip = rand(T, B, d) if k == 3 else None
    return rand(T, B, d, k), skip, rand(2 * d), rand(2 * d), rand(B, d), mask


@pytest.mark.parametrize("k", [3, 4])
@pytest.mark.parametrize("with_mask", [False, True])
def test_recurrence_backward_passes_gradcheck(k: int, with_mask: bool) -> None:
    assert torch.autograd.gradcheck(SRURecurrence.apply, recurrence_inputs(k, with_mask))


@pytest.mark.parametrize("k", [3, 4])
def test_recurrence_equals_the_step_by_step_formula(k: int) -> None:
    inputs = recurrence_inputs(k, with_mask=True, seed=3)
    h, c = SRURecurrence.apply(*inputs)
    h_ref, c_ref = reference_recurrence(*inputs)
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(c, c_ref)
    weights = torch.randn_like(h)
    leaves = [t for t in inputs if t is not None and t.requires_grad]
    grads = torch.autograd.grad((h * weights).sum() + c.sum(), leaves)
    grads_ref = torch.autograd.grad((h_ref * weights).sum() + c_ref.sum(), leaves)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref)


# ----------------------------------------------------------------------------- the LM interface
def test_logits_are_batch_first_rows_in_b_t_order() -> None:
    model = small_model().eval()
    x = tokens(2, 7)
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (2 * 7, 13)
        for b in range(2):
            model.reset_state()
            torch.testing.assert_close(logits[b * 7 : (b + 1) * 7], model(x[b : b + 1]))
    loss = F.cross_entropy(model(x), x.reshape(-1))  # the LM loss needs no reshaping
    assert loss.ndim == 0


def test_state_carries_across_calls_like_the_official_bptt_loop() -> None:
    model = small_model().eval()
    x = tokens(3, 12)
    with torch.no_grad():
        whole = model(x).view(3, 12, -1)
        model.reset_state()
        first = model(x[:, :5]).view(3, 5, -1)
        second = model(x[:, 5:]).view(3, 7, -1)
    torch.testing.assert_close(torch.cat([first, second], 1), whole)
    assert "_state" not in dict(model.state_dict()) and not any("state" in k for k in model.state_dict())


def test_reset_state_and_a_new_batch_size_start_from_zeros() -> None:
    model = small_model().eval()
    x = tokens(3, 6)
    with torch.no_grad():
        fresh = model(x)
        assert not torch.allclose(model(x), fresh)  # the carried state changes the output
        model.reset_state()
        torch.testing.assert_close(model(x), fresh)
        model(tokens(2, 6))  # batch 2 ...
        torch.testing.assert_close(model(x), fresh)  # ... then batch 3 again: reset automatically


def test_state_is_detached_between_training_windows() -> None:
    model = small_model(dropout=0.1).train()
    x = tokens(2, 6)
    F.cross_entropy(model(x), x.reshape(-1)).backward()
    assert not model._state.requires_grad
    F.cross_entropy(model(x), x.reshape(-1)).backward()  # would fail if graphs were chained


def test_without_dropout_train_and_eval_outputs_agree() -> None:
    model = small_model(dropout=0.0)
    x = tokens(2, 6)
    train_out = model.train()(x)
    model.reset_state()
    with torch.no_grad():
        torch.testing.assert_close(train_out.detach(), model.eval()(x))


# ----------------------------------------------------------------------------- official sru 2.6.0
class _CustomLinear(nn.Linear):
    """train_enwik8.py CustomLinear (an nn.Linear, bias=False)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__(in_features, out_features, bias=bias)

    def forward(self, data, **kwargs):
        return super().forward(data)


class _ProjectedLinear(nn.Module):
    """flop/linear.py ProjectedLinear (no activation; no reset_parameters method)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, proj_features: int | None = None):
        super().__init__()
        self.linear1 = nn.Linear(in_features, proj_features, bias=False)
        self.linear2 = nn.Linear(proj_features, out_features, bias=bias)

    def forward(self, data, **kwargs):
        return self.linear2(self.linear1(data))


class _OfficialModel(nn.Module):
    """train_enwik8.py Model, on the installed sru package."""

    def __init__(self, sru, vocab: int, n_d: int, n_proj: int, depth: int, dropout: float, bias: float, rescale: bool):
        super().__init__()
        self.n_e = vocab if vocab < n_d else n_d
        self.drop = nn.Dropout(dropout)
        self.embedding_layer = nn.Embedding(vocab, self.n_e)
        custom_m_list = [_CustomLinear(self.n_e, n_d * 4, bias=False)]
        for _ in range(depth - 1):
            custom_m_list.append(_ProjectedLinear(n_d, n_d * 3, proj_features=n_proj, bias=False))
        self.rnn = sru.SRU(
            self.n_e,
            n_d,
            depth,
            dropout=dropout,
            highway_bias=bias,
            layer_norm=False,
            rescale=rescale,
            custom_m=custom_m_list,
        )
        self.output_layer = nn.Linear(n_d, vocab)
        for p in list(self.embedding_layer.parameters()) + list(self.output_layer.parameters()):
            if p.dim() > 1:
                val = (3.0 / p.size(0)) ** 0.5
                p.data.uniform_(-val, val)
            else:
                p.data.zero_()

    def forward(self, x, hidden):
        emb = self.drop(self.embedding_layer(x))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        return self.output_layer(output.view(-1, output.size(2))), hidden


def _official_name(name: str) -> str:
    """Our parameter name -> the official Model's."""
    name = name.replace("embedding.", "embedding_layer.").replace("output.", "output_layer.")
    name = name.replace("layers.", "rnn.rnn_lst.").replace(".transform.", ".custom_m.")
    return name


@pytest.mark.integration
@pytest.mark.parametrize("rescale", [False, True])
def test_agrees_with_the_official_sru_package(rescale: bool) -> None:
    try:  # sru JIT-compiles a C++ extension at import (g++ + ninja): skip, with the reason, where it cannot
        import sru
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"the official sru package is not importable here: {type(e).__name__}: {e}")
    vocab, n_d, n_proj, depth, batch, length = 11, 24, 6, 3, 4, 9
    report = {}
    for dropout in (0.0, 0.1):
        torch.manual_seed(7)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sru warns that ProjectedLinear has no reset_parameters
            official = _OfficialModel(sru, vocab, n_d, n_proj, depth, dropout, -3.0, rescale)
        torch.manual_seed(7)
        spec = sru_lm.default_spec(vocab, depth, n_d, n_proj, dropout=dropout, highway_bias=-3.0, rescale=rescale)
        ours = sru_lm.build(spec)
        official_params = dict(official.named_parameters())
        for name, p in ours.named_parameters():  # same seed, same draws: identical initialisation
            assert torch.equal(p, official_params[_official_name(name)]), name
        assert len(official_params) == len(dict(ours.named_parameters()))

        x = tokens(batch, 2 * length, vocab, seed=5)  # (B, 2T): two BPTT windows
        eval_logits = []
        for mode in ("eval", "train"):
            official.train(mode == "train")
            ours.train(mode == "train")
            ours.reset_state()
            hidden = torch.zeros(depth, batch, n_d)
            for window in range(2):
                xw = x[:, window * length : (window + 1) * length]
                for p in list(ours.parameters()) + list(official.parameters()):
                    p.grad = None
                torch.manual_seed(100 + window)  # same dropout draws, in the official order
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "Running SRU on CPU with grad_enabled=True"
                    out_official, hidden = official(xw.t().contiguous(), hidden.detach())
                torch.manual_seed(100 + window)
                out_ours = ours(xw)
                out_official = out_official.view(length, batch, vocab).transpose(0, 1).reshape(-1, vocab)
                target = torch.randn_like(out_ours)
                (out_ours * target).sum().backward()
                (out_official * target).sum().backward()
                diffs = [(out_ours - out_official).abs().max().item()]
                diffs.append((ours._state - hidden).abs().max().item())
                for name, p in ours.named_parameters():
                    diffs.append((p.grad - official_params[_official_name(name)].grad).abs().max().item())
                key = f"dropout={dropout} {mode} window {window}"
                report[key] = (diffs[0], max(diffs[2:]))
                assert max(diffs[:2]) < 1e-5, key
                assert max(diffs[2:]) < 1e-4, key
                if mode == "eval":
                    eval_logits.append(out_ours.detach())
                elif dropout > 0:  # the dropout draws really happened (and matched)
                    assert not torch.allclose(out_ours, eval_logits[window])
            if mode == "eval":  # no-grad inference runs the package's C++ kernel
                ours.reset_state()
                with torch.no_grad():
                    out_cpp, _ = official(x[:, :length].t().contiguous(), torch.zeros(depth, batch, n_d))
                    out_cpp = out_cpp.view(length, batch, vocab).transpose(0, 1).reshape(-1, vocab)
                    report[f"dropout={dropout} C++ inference"] = ((ours(x[:, :length]) - out_cpp).abs().max().item(), 0)
                    assert report[f"dropout={dropout} C++ inference"][0] < 1e-5
    print(f"\nrescale={rescale}: max |logits diff|, max |grad diff|")
    for key, (d_out, d_grad) in report.items():
        print(f"  {key}: {d_out:.2e} {d_grad:.2e}")
