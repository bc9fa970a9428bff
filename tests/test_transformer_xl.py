"""Transformer-XL (enwik8 LM): exact size, memory semantics, causality, relative shift, MAC counts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

from pruning import PruneLabError
from pruning.models import transformer_xl as txl
from tests.conftest import CONF_DIR

VOCAB = 29


def tiny_spec(**overrides) -> dict:
    kw = dict(num_classes=VOCAB, n_layer=2, d_model=16, n_head=2, d_head=8, d_inner=32, dropout=0.0, tgt_len=6)
    kw.update(overrides)
    return txl.default_spec(**kw)


def tiny_model(seed: int = 0, **overrides) -> txl.TransformerXL:
    torch.manual_seed(seed)
    model = txl.build(tiny_spec(**overrides))
    with torch.no_grad():  # larger weights than the 0.02 init so that every term matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


# ---- size -----------------------------------------------------------------------------------------
def test_enwik8_base_has_exactly_41_055_436_parameters() -> None:
    spec = txl.default_spec()  # run_enwik8_base.sh, V = 204
    assert (spec["n_layer"], spec["d_model"], spec["n_head"], spec["d_head"], spec["d_inner"]) == (12, 512, 8, 64, 2048)
    with torch.device("meta"):
        model = txl.build(spec)
    assert sum(p.numel() for p in model.parameters()) == txl.num_params(spec) == 41_055_436
    assert sum(p.numel() for p in model.layers.parameters()) == 40_949_760  # official "#non emb params"


def test_tied_output_weight_is_the_embedding_and_counts_once() -> None:
    spec = tiny_spec()
    model = txl.build(spec)
    assert model.out_layer.weight is model.word_emb.weight
    assert sum(p.numel() for p in model.parameters()) == txl.num_params(spec)
    untied_spec = tiny_spec(tie_weight=False)
    untied = txl.build(untied_spec)
    assert untied.out_layer.weight is not untied.word_emb.weight
    assert txl.num_params(untied_spec) == sum(p.numel() for p in untied.parameters())
    assert txl.num_params(untied_spec) - txl.num_params(spec) == VOCAB * 16


def test_init_follows_official_train_py() -> None:
    torch.manual_seed(0)
    model = txl.build(txl.default_spec(num_classes=64, n_layer=1, d_model=256, n_head=4, d_head=64, d_inner=512))
    layer = model.layers[0]
    for w in (layer.attn.qkv_net.weight, layer.ff.fc1.weight, model.word_emb.weight, model.r_w_bias, model.r_r_bias):
        assert abs(w.mean().item()) < 0.005 and abs(w.std().item() - 0.02) < 0.003
    ln = layer.attn.layer_norm
    assert abs(ln.weight.mean().item() - 1.0) < 0.01 and abs(ln.weight.std().item() - 0.02) < 0.005
    for b in (ln.bias, layer.ff.fc1.bias, layer.ff.fc2.bias, model.out_layer.bias):
        assert torch.count_nonzero(b) == 0
    for linear in (layer.attn.qkv_net, layer.attn.r_net, layer.attn.o_net):
        assert linear.bias is None


# ---- memory ---------------------------------------------------------------------------------------
def test_two_windows_with_memory_equal_one_pass_over_the_concatenation() -> None:
    """With the memory covering the whole past (and no same_length / clamp), window 2 attends to the
    cached states of window 1 at the right relative distances, so its logits are those of a single
    pass over both windows. A wrong rel_shift, memory of the wrong layer, or absolute positions fail."""
    model = tiny_model(mem_len=8).eval()
    x = tokens(3, 10)
    with torch.no_grad():
        full = model(x).view(3, 10, VOCAB)
        model.reset_state()
        first = model(x[:, :4]).view(3, 4, VOCAB)
        second = model(x[:, 4:]).view(3, 6, VOCAB)
    torch.testing.assert_close(first, full[:, :4], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(second, full[:, 4:], atol=1e-5, rtol=1e-5)
    assert (second - model.eval()(x[:, 4:]).view(3, 6, VOCAB)).abs().max() > 1e-3  # memory was used


def test_memory_keeps_the_last_mem_len_states_of_every_layer_input() -> None:
    model = tiny_model(mem_len=5).train()
    x = tokens(2, 7)
    model(x[:, :3])
    model(x[:, 3:])
    memory = model._memory[True]
    assert len(memory) == model.n_layer + 1 and all(m.shape == (5, 2, 16) for m in memory)
    assert not any(m.requires_grad for m in memory)
    emb = model.word_emb(x.t()) * model.emb_scale  # dropout 0: layer 0's memory is the scaled embedding
    torch.testing.assert_close(memory[0], emb[-5:].detach())
    assert "_memory" not in str(list(model.state_dict()))


def test_reset_state_and_batch_size_change_restart_from_empty_memory() -> None:
    model = tiny_model().eval()
    x = tokens(2, 5)
    with torch.no_grad():
        fresh = model(x)
        with_memory = model(x)
        assert (fresh - with_memory).abs().max() > 1e-3
        model.reset_state()
        torch.testing.assert_close(model(x), fresh)
        model(x)
        after_batch_2 = model(tokens(3, 5, seed=2))  # batch 3 after batch 2: the memory is reset
        model.reset_state()
        torch.testing.assert_close(after_batch_2, model(tokens(3, 5, seed=2)))


def test_entering_eval_clears_eval_memory_but_keeps_training_memory() -> None:
    model = tiny_model().train()
    x = tokens(2, 5)
    model(x)
    train_memory = model._memory[True]
    model.eval()
    with torch.no_grad():
        first_eval = model(x)
        model(x)
    model.train()
    assert model._memory[True] is train_memory  # official train() keeps its mems across evaluate()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), first_eval)  # evaluate() starts from empty mems


def test_eval_settings_are_used_when_not_training() -> None:
    spec = tiny_spec(mem_len=4, eval_tgt_len=2, eval_mem_len=9, eval_clamp_len=3, eval_same_length=True)
    model = txl.build(spec)
    x = tokens(1, 6)
    model.train()(x)
    assert model._memory[True][0].size(0) == 4
    model.eval()
    with torch.no_grad():
        model(x)
        model(x)
    assert model._memory[False][0].size(0) == 9


def test_default_eval_settings_follow_train_py_validation_rule() -> None:
    spec = txl.default_spec(tgt_len=512, mem_len=512, eval_tgt_len=128)
    assert spec["eval_mem_len"] == 896 and spec["eval_clamp_len"] == -1 and not spec["eval_same_length"]
    assert txl.default_spec(in_channels=3, num_classes=256)["num_classes"] == 256
    with pytest.raises(PruneLabError):
        txl.default_spec(same_length=True, mem_len=0)


# ---- causality and layout ------------------------------------------------------------------------
@pytest.mark.parametrize("settings", [{}, {"same_length": True, "mem_len": 3, "clamp_len": 2}])
def test_logits_at_t_do_not_depend_on_later_tokens(settings: dict) -> None:
    model = tiny_model(**settings).train()  # train mode, dropout 0: the training settings apply
    x = tokens(2, 12)
    changed = x.clone()
    changed[:, 8:] = (changed[:, 8:] + 5) % VOCAB
    outputs = []
    for seq in (x, changed):
        model.reset_state()
        model(seq[:, :6])  # a first window fills the memory
        outputs.append(model(seq[:, 6:]).view(2, 6, VOCAB))
    torch.testing.assert_close(outputs[0][:, :2], outputs[1][:, :2], atol=1e-6, rtol=1e-6)
    assert (outputs[0][:, 2:] - outputs[1][:, 2:]).abs().max() > 1e-3


def test_logit_rows_are_batch_first_and_examples_independent() -> None:
    model = tiny_model().eval()
    x = tokens(3, 4)
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (12, VOCAB)
        for b in range(3):
            model.reset_state()
            torch.testing.assert_close(model(x[b : b + 1]), logits.view(3, 4, VOCAB)[b], atol=1e-5, rtol=1e-5)


# ---- relative attention ---------------------------------------------------------------------------
def test_rel_shift_reindexes_absolute_slots_to_distances() -> None:
    qlen, klen = 3, 7
    mlen = klen - qlen
    scores = torch.randn(2, qlen, klen)
    shifted = txl.rel_shift(scores)
    for i in range(qlen):
        for j in range(i + mlen + 1):
            assert shifted[:, i, j].equal(scores[:, i, j + qlen - 1 - i])


def test_attention_matches_slow_explicit_relative_scores() -> None:
    """score(i, j) = (q_i + u) . k_j + (q_i + v) . W_r R[distance mlen + i - j], causal softmax."""
    torch.manual_seed(0)
    d, heads, d_head, qlen, mlen, batch = 8, 2, 4, 3, 4, 2
    attn = txl.RelPartialLearnableAttention(d, heads, d_head, 0.0, 0.0).eval()
    u, v_bias = torch.randn(heads, d_head), torch.randn(heads, d_head)
    h, memory = torch.randn(qlen, batch, d), torch.randn(mlen, batch, d)
    klen = qlen + mlen
    pos_emb = txl.PositionalEmbedding(d)(torch.arange(klen - 1, -1, -1.0))  # row k: distance klen-1-k
    mask = txl.attention_mask(qlen, mlen, None)
    out = attn(h, pos_emb, u, v_bias, mask, memory)

    context = torch.cat([memory, h])
    q, k, v = (t.reshape(klen, batch, heads, d_head) for t in attn.qkv_net(context).chunk(3, dim=-1))
    q = q[-qlen:]  # queries of the current window only
    r = attn.r_net(pos_emb).view(klen, heads, d_head)
    expected = torch.zeros(qlen, batch, heads, d_head)
    for i in range(qlen):
        for b in range(batch):
            for n in range(heads):
                keys = range(mlen + i + 1)
                scores = torch.stack(
                    [
                        (q[i, b, n] + u[n]) @ k[j, b, n] + (q[i, b, n] + v_bias[n]) @ r[klen - 1 - (mlen + i - j), n]
                        for j in keys
                    ]
                )
                prob = torch.softmax(scores / math.sqrt(d_head), dim=0)
                expected[i, b, n] = sum(prob[j] * v[j, b, n] for j in keys)
    expected = attn.layer_norm(h + attn.o_net(expected.view(qlen, batch, heads * d_head)))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_same_length_mask_gives_every_query_mem_len_keys() -> None:
    mask = txl.attention_mask(qlen=4, mlen=5, window=5)
    assert ((~mask).sum(1) == 5).all()
    assert txl.attention_mask(qlen=4, mlen=0, window=5).equal(txl.attention_mask(4, 0, None))


# ---- MACs and FLOP interface ----------------------------------------------------------------------
def _hook_linear_macs(model: nn.Module, x: torch.Tensor) -> int:
    total = 0

    def hook(m: nn.Linear, inputs, _out):
        nonlocal total
        total += inputs[0].numel() // m.in_features * m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return total


def test_linear_macs_match_forward_hooks() -> None:
    spec = tiny_spec(mem_len=5)
    model = txl.build(spec).eval()
    one_token = torch.zeros(1, 1, dtype=txl.TransformerXL.input_dtype)
    assert _hook_linear_macs(model, one_token) == txl.macs_per_token(spec, 1)["linear"]
    model.reset_state()
    _hook_linear_macs(model, tokens(2, 4))  # memory: 4 steps
    assert _hook_linear_macs(model, tokens(2, 3)) == txl.macs_per_window(spec, batch=2, qlen=3, mlen=4)["linear"]
    base = txl.default_spec()
    assert txl.macs_per_token(base, 1024)["attention"] == 12 * 3 * 512 * 1024


def test_prunable_linears_are_every_linear_in_the_layers() -> None:
    model = txl.build(tiny_spec())
    named = model.prunable_linears()
    assert len(named) == 5 * 2 and all(isinstance(m, nn.Linear) for _, m in named)
    assert named[0][0] == "layers.0.attn.qkv_net"
    modules = dict(model.named_modules())
    assert all(modules[name] is m for name, m in named)
    assert txl.channel_groups(tiny_spec()) == []


def test_trains_one_step_and_loss_is_near_uniform_at_init() -> None:
    model = txl.build(tiny_spec(dropout=0.1)).train()
    x, y = tokens(2, 6), tokens(2, 6, seed=3)
    loss = F.cross_entropy(model(x), y.reshape(-1))
    assert abs(loss.item() - math.log(VOCAB)) < 0.2
    loss.backward()
    assert model.word_emb.weight.grad is not None and model.r_r_bias.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["transformer_xl", "transformer_xl_small"])
def test_model_configs_build_the_documented_specs(name: str) -> None:
    cfg = yaml.safe_load((CONF_DIR / "model" / f"{name}.yaml").read_text())
    assert cfg["arch"] == "transformer_xl"
    spec = txl.default_spec(**{k: v for k, v in cfg.items() if k not in ("name", "arch")})
    if name == "transformer_xl":
        expected = txl.default_spec(eval_tgt_len=80, eval_mem_len=2100, eval_clamp_len=820, eval_same_length=True)
        assert spec == expected and txl.num_params(spec) == 41_055_436
    else:
        model = txl.build(spec)
        assert sum(p.numel() for p in model.parameters()) == txl.num_params(spec) < 2_000_000


def test_the_paper_rows_read_enwik8_as_the_official_code_does() -> None:
    """The Transformer-XL rows of experiment flop_enwik8 follow kimiyoung/transformer-xl's enwik8
    protocol (prep_enwik8.py, then data_utils.py with add_eos=False: newline bytes dropped, 204
    symbols), which gives the 12-layer model its 41,055,436 parameters (counted from the spec, no
    allocation); the SRU rows keep every byte as FLOP's read_corpus does (205 symbols)."""
    from pathlib import Path

    from pruning.config import model_spec
    from tests.conftest import plain_cfg

    cfg = plain_cfg(["experiment=flop_enwik8", "table_row=flop_txl_80"], Path("unused"))  # as composed
    assert (cfg["data"]["kind"], cfg["data"]["newlines"], cfg["data"]["num_classes"]) == ("enwik8", "drop", 204)
    assert txl.num_params(model_spec(cfg["model"], cfg["data"])) == 41_055_436
    enwik8 = yaml.safe_load((CONF_DIR / "data" / "enwik8.yaml").read_text())
    assert (enwik8["newlines"], enwik8["num_classes"]) == ("keep", 205)  # FLOP's SRU loader
    sweep = yaml.safe_load((CONF_DIR / "experiment" / "flop_enwik8.yaml").read_text())
    for row in sweep["hydra"]["sweeper"]["params"]["table_row"].split(","):
        text = (CONF_DIR / "table_row" / f"{row}.yaml").read_text()
        data = yaml.safe_load(text).get("data") or {}
        if "override /model: transformer_xl" in text:
            assert data == {"newlines": "drop", "num_classes": 204}, row
        else:
            assert "newlines" not in data and "num_classes" not in data, row
