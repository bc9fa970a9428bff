"""Fast language-model evaluation (issue 23, item 4): ``pruning.text_data.evaluate_streams`` gives
the numbers of the reference walk (``pruning.train.evaluate_walk`` over ``test_batches``: each split in
``batch_size`` lanes, ``eval_bptt`` windows, from an empty state), computed batched: valid and test
side by side, an SRU in long windows, a Transformer-XL's stream cut into lanes that first read
``stream_burn_in`` tokens unscored. The cut is exact: every character gets the stream's logits."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from rich.console import Console

from pruning import text_data
from pruning.distributed import SINGLE, DistInfo
from pruning.models import sru_lm
from pruning.models import transformer_xl as txl
from pruning.text_data import TextData, TokenSplit, evaluate_streams, plan_lanes
from pruning.train import PLAIN, evaluate, evaluate_walk

VOCAB = 23


def split(n: int, seed: int) -> TokenSplit:
    """Random text in which every third token repeats the one 50 back, so the past matters."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (n,), generator=g, dtype=torch.uint8)
    for t in range(50, n, 3):
        ids[t] = ids[t - 50]
    return TokenSplit(ids)


def corpus(valid: int, test: int, eval_bptt: int) -> TextData:
    return TextData(
        name="random",
        train=split(64, 0),
        valid=split(valid, 1),
        test=split(test, 2),
        vocab=tuple(range(VOCAB)),
        bptt=eval_bptt,
        eval_bptt=eval_bptt,
    )


def small_sru(seed: int = 0) -> sru_lm.SRULanguageModel:
    torch.manual_seed(seed)
    model = sru_lm.build(sru_lm.default_spec(num_classes=VOCAB, depth=2, n_d=32, n_proj=16, n_e=16))
    with torch.no_grad():  # a forget bias near +2: units that remember far back
        for layer in model.layers:
            layer.bias[: model.n_d].add_(torch.randn(model.n_d) + 2.0)
    return model


def small_txl(seed: int = 0, **overrides) -> txl.TransformerXL:
    kw = dict(num_classes=VOCAB, n_layer=2, d_model=16, n_head=2, d_head=8, d_inner=32, dropout=0.1, tgt_len=8)
    kw.update(eval_tgt_len=8, eval_mem_len=16, eval_same_length=True)
    kw.update(overrides)
    torch.manual_seed(seed)
    model = txl.build(txl.default_spec(**kw))
    with torch.no_grad():  # larger weights than the 0.02 init so that every term matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def reference(model, data: TextData, batch: int) -> dict:
    return {name: evaluate_walk(model, data.with_eval_split(name), batch) for name in ("valid", "test")}


def fast(model, data: TextData, batch: int, **kw) -> dict:
    return evaluate_streams(model, {"valid": data.valid, "test": data.test}, batch, data.eval_bptt, **kw)


def stream_logits(model, ids: torch.Tensor, window: int) -> torch.Tensor:
    """Logits of one lane walked from an empty state in ``window``-token windows: (len(ids), V)."""
    model.eval()
    model.reset_state()
    with torch.no_grad():
        out = [model(ids[None, t : t + window]) for t in range(0, len(ids), window)]
    return torch.cat(out)


def assert_same_numbers(ref: dict, got: dict, bpc_tol: float) -> None:
    for name in ("valid", "test"):
        assert abs(got[name]["bpc"] - ref[name]["bpc"]) < bpc_tol, (name, got[name]["bpc"], ref[name]["bpc"])
        assert got[name]["top1"] == pytest.approx(ref[name]["top1"], abs=1e-9)
        assert got[name]["top5"] == pytest.approx(ref[name]["top5"], abs=1e-9)


# ---- the plan ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("lengths", "burn_in", "window", "max_lanes"),
    [
        ([5000, 4000], 32, 8, 32),
        ([5000], 0, 8, 7),
        ([301, 300, 299], 64, 16, 64),
        ([100], 64, 16, 64),  # shorter than a lane's burn-in: one lane
        ([1000, 1000], None, 8, 64),  # a stream that cannot be cut: one lane each
        ([1000, 1000], 16, 8, 2),  # no lanes to spare
    ],
)
def test_lanes_score_every_position_once_from_window_boundaries(lengths, burn_in, window, max_lanes):
    plan = plan_lanes(lengths, burn_in, window, max_lanes)
    assert len(plan) <= max(max_lanes, len(lengths))
    for i, n in enumerate(lengths):
        mine = sorted((lane for lane in plan if lane.stream == i), key=lambda lane: lane.start)
        assert mine[0].start == 0 and mine[0].burn_in == 0  # the stream starts empty, so does its first lane
        covered = 0
        for lane in mine:
            assert lane.start % window == 0  # windows line up with the stream's
            assert lane.burn_in in (0, burn_in) and lane.start + lane.length <= n
            assert lane.start + lane.burn_in == covered  # adjacent, disjoint scored ranges
            covered = lane.start + lane.length
        assert covered == n
        if burn_in is None or max_lanes <= len(lengths):
            assert len(mine) == 1


# ---- SRU: window-independent, walked whole in long windows -----------------------------------------
def test_sru_result_does_not_depend_on_the_window():
    """The basis of SRU's long windows: its whole state is carried from window to window, so in
    float64 windows of 7 and of 1000 give the same logits (float32: the same up to rounding)."""
    model = small_sru().double()
    ids = split(2000, 1).ids.long()
    assert (stream_logits(model, ids, 7) - stream_logits(model, ids, 1000)).abs().max() < 1e-12


@pytest.mark.parametrize("batch", [1, 3])
def test_sru_fast_evaluation_gives_the_reference_numbers(batch):
    model, data = small_sru(), corpus(3000, 2500, 16)
    ref = reference(model, data, batch)
    reports: list[tuple[int, int]] = []
    got = fast(model, data, batch, on_window=lambda done, total: reports.append((done, total)))
    assert_same_numbers(ref, got, 1e-5)
    assert got["valid"]["chars"] == (3000 - 1) // batch * batch and got["test"]["chars"] == (2500 - 1) // batch * batch
    total = reports[-1][1]
    assert reports[-1][0] == total and total < (2999 // batch + 15) // 16  # fewer, longer windows than the walk's
    # no inference-mode tensor is left in the model: it trains on at once
    model.train()
    x = data.valid.ids[: 2 * 16].long().view(2, 16)
    F.cross_entropy(model(x), x.reshape(-1)).backward()


# ---- Transformer-XL: a stream cut into lanes with a burn-in -----------------------------------------
@pytest.mark.parametrize(
    "settings",
    [
        dict(eval_same_length=True),
        dict(eval_same_length=False),
        dict(eval_same_length=False, eval_mem_len=12, eval_clamp_len=5),
        dict(eval_same_length=True, eval_mem_len=6),  # memory shorter than a window
    ],
    ids=["same_length", "growing", "clamped", "short_memory"],
)
def test_txl_lanes_give_every_character_the_streams_logits(settings):
    """Exactness of the cut, in float64: each lane of plan_lanes, started empty at a window
    boundary and read through its burn-in, scores its characters with the single stream's
    logits; one window less of burn-in does not."""
    model = small_txl(**settings).double()
    window = 8
    ids = split(1200, 3).ids.long()
    whole = stream_logits(model, ids, window)
    burn_in = model.stream_burn_in(window)
    assert burn_in == 2 * -(-model._settings[False][0] // window) * window

    def worst(burn: int) -> float:
        plan = plan_lanes([len(ids)], burn, window, 8)
        assert len(plan) >= 3 and all(lane.burn_in == burn for lane in plan[1:])
        diff = 0.0
        for lane in plan:
            got = stream_logits(model, ids[lane.start : lane.start + lane.length], window)
            scored = slice(lane.burn_in, lane.length)
            want = whole[lane.start : lane.start + lane.length]
            diff = max(diff, (got[scored] - want[scored]).abs().max().item())
        return diff

    assert worst(burn_in) < 1e-10
    assert worst(burn_in - window) > 1e-6


@pytest.mark.parametrize("batch", [1, 2])
def test_txl_fast_evaluation_gives_the_reference_numbers(batch):
    model, data = small_txl(), corpus(2500, 2100, 8)
    ref = reference(model, data, batch)
    got = fast(model, data, batch, max_lanes=16, engine=PLAIN)
    assert_same_numbers(ref, got, 1e-5)


def test_lanes_are_shared_out_among_ranks(monkeypatch):
    """Under DDP each rank walks every world_size-th lane and the sums are added: rank 0's and rank
    1's parts make the whole number (the all-reduce replaced by the sum done here)."""
    monkeypatch.setattr(text_data, "all_reduce_sum", lambda tensor, dist: tensor)
    model, data = small_txl(), corpus(2500, 2100, 8)
    whole = fast(model, data, 1, max_lanes=16)
    parts = [fast(model, data, 1, max_lanes=16, dist=DistInfo(rank, 2)) for rank in (0, 1)]
    for name in ("valid", "test"):
        chars = sum(part[name]["chars"] for part in parts)
        loss = sum(part[name]["test_loss"] * part[name]["chars"] for part in parts) / chars
        assert chars == whole[name]["chars"] and loss == pytest.approx(whole[name]["test_loss"], rel=1e-12)


# ---- the pipeline's final evaluation ----------------------------------------------------------------
@pytest.mark.parametrize("quiet", [False, True])
def test_final_lm_eval_shows_a_progress_bar_unless_quiet(quiet, capsys):
    from pruning.pipeline import final_lm_eval
    from pruning.runtime import Runtime

    model, data = small_txl(), corpus(700, 600, 8)
    said = io.StringIO()
    rt = Runtime("cpu", SINGLE, PLAIN, Console(file=said, force_terminal=False, width=120), quiet=quiet)
    result = final_lm_eval(model, data, rt)
    ref = reference(model, data, 1)
    assert abs(result["bpc"] - ref["test"]["bpc"]) < 1e-5 and abs(result["bpc_valid"] - ref["valid"]["bpc"]) < 1e-5
    assert result["top1"] == pytest.approx(ref["test"]["top1"])
    assert ("final evaluation" in capsys.readouterr().out) is not quiet  # the bar: rich's own console
    assert "bits per character" in said.getvalue()


@pytest.mark.parametrize("make", [small_sru, small_txl], ids=["sru", "txl"])
def test_per_epoch_validation_takes_the_fast_path_with_the_walks_numbers(make):
    """``train.evaluate`` (each epoch's validation in run_stage) on a corpus: evaluate_streams,
    giving evaluate_walk's numbers (the split it walks, in ``batch_size`` lanes)."""
    model, data = make(), corpus(1500, 1200, 16)
    for split_name in ("valid", "test"):
        walk = evaluate_walk(model, data.with_eval_split(split_name), 4)
        got = evaluate(model, data.with_eval_split(split_name), 4)
        assert set(got) == set(walk) and got["top1"] == pytest.approx(walk["top1"], abs=1e-9)
        assert got["bpc"] == pytest.approx(walk["bpc"], abs=1e-5)
