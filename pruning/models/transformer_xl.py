"""Transformer-XL character-level language model (the enwik8 model that FLOP prunes).

Dai, Yang, Yang, Carbonell, Le & Salakhutdinov, "Transformer-XL: Attentive Language Models Beyond a
Fixed-Length Context", ACL 2019. Written from github:kimiyoung/transformer-xl (HEAD 44781ed)
pytorch/mem_transformer.py ``MemTransformerLM`` with ``attn_type=0`` (the same file as FLOP's
github:asappresearch/flop examples/enwik8_tf/mem_transformer.py), pytorch/train.py (init, tying)
and pytorch/run_enwik8_base.sh / eval.py (the enwik8 base configuration):

    tokens (T, B) -> Embedding(V, d) * sqrt(d) -> dropout                    = h_0
    layer l (post-LayerNorm, pre_lnorm=False):
        c = cat(mem_l, h_{l-1})                                              (M+T, B, d)
        q, k, v = qkv_net(c) (q: last T rows)          one Linear d -> 3*H*D, no bias
        r = r_net(dropout(sinusoid(M+T-1, ..., 1, 0)))  Linear d -> H*D, no bias, shared over B
        score = ((q + u) k^T + rel_shift((q + v') r^T)) / sqrt(D), causal mask  (u, v' = r_w_bias,
                r_r_bias: one (H, D) pair shared by all layers)
        a = LayerNorm(h + dropout(o_net(dropatt(softmax(score)) v)))         o_net: H*D -> d, no bias
        h_l = LayerNorm(a + dropout(fc2(dropout(relu(fc1(a))))))             fc1 d -> d_inner -> fc2 d
    logits = out_layer(dropout(h_L))           Linear d -> V with bias; weight tied to the embedding
    mem_l <- last mem_len rows of cat(mem_l, h_l), detached, for l = 0..L (L+1 tensors)

enwik8 has no adaptive softmax (cutoffs []), div_val 1 and d_embed = d_model, so the official
``AdaptiveEmbedding`` is a plain embedding scaled by sqrt(d_model) and ``ProjectedAdaptiveLogSoftmax``
is one ``Linear(d_model, n_token)`` with a bias, whose weight ``tie_weight`` (train.py default: True,
``--not_tied`` not passed for enwik8) shares with the embedding; the shared matrix counts once.

Init = train.py ``weights_init`` with ``--init normal``: every Linear weight and the embedding
N(0, 0.02), Linear biases 0, LayerNorm weight N(1, 0.02) and bias 0, r_w_bias / r_r_bias N(0, 0.02).
(proj_init_std and init_range belong to projections / the uniform init, unused here.)

enwik8 base (run_enwik8_base.sh): 12 layers, d 512, 8 heads of 64, d_inner 2048, dropout 0.1,
dropatt 0, windows of tgt_len 512 with mem_len 512; V = 204 (the distinct bytes of enwik8 less the
newline, which the awd-lstm-lm prep_enwik8.py turns into line breaks): 41,055,436 parameters.
Evaluation in eval.py: tgt_len 80, mem_len 2100, clamp_len 820, same_length. In this module the
``eval_*`` spec keys hold the settings used whenever ``not self.training``; left out, they follow
train.py's validation rule (eval_mem_len = mem_len + tgt_len - eval_tgt_len, same clamp / same_length).

Interface for the pipeline: ``forward(tokens)`` takes batch-first ids (B, T) and returns logits
(B*T, V) in (b, t) row-major order, so ``F.cross_entropy(logits, targets.reshape(-1))`` is the LM
loss. The model is stateful like the official training loop that threads ``mems`` through
consecutive windows: it keeps its memory (a plain attribute, not in state_dict) and uses it in the
next call. There is one memory per mode: the eval memory is cleared whenever the model enters eval
mode from training (the official ``evaluate`` starts from empty mems), the training memory survives
an evaluation (the official ``train`` keeps its ``mems`` across it); both reset when the batch size
or device changes and on ``reset_state()``. ``tgt_len`` / ``eval_tgt_len`` in the spec are the window
lengths the data pipeline should cut; the model itself accepts any T.

Every weight matrix multiply is an ``nn.Linear`` (MAC hooks see them; FLOP factorises the ones in
``prunable_linears()``). ``channel_groups`` is empty: the structured CNN methods do not apply.

A factorised (FLOP-pruned) network is the same spec plus ``ranks``: {linear name: r}, e.g.
``{"layers.0.attn.qkv_net": 97, ...}``; each named Linear(in, out) becomes ``FactorisedLinear``:
Linear(in, r, bias=False) -> Linear(r, out, bias as the original) (flop.ProjectedLinear; r = 0 leaves
the bias). Built fresh (scratch training), it is initialised as FLOP's train.py ``weights_init``
initialises a ProjectedLinear: linear1 N(0, 0.02), linear2 Xavier-uniform, bias 0.

    {"arch": "transformer_xl", "num_classes": 204, "n_layer": 12, "d_model": 512, "n_head": 8,
     "d_head": 64, "d_inner": 2048, "dropout": 0.1, "dropatt": 0.0, "tie_weight": true,
     "tgt_len": 512, "mem_len": 512, "clamp_len": -1, "same_length": false,
     "eval_tgt_len": 80, "eval_mem_len": 2100, "eval_clamp_len": 820, "eval_same_length": true}
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from pruning import PruneLabError
from pruning.models import ChannelGroup

TASK = "language_model"  # input: token ids (B, T); output: next-token logits (B*T, V)
INIT_STD = 0.02  # train.py --init_std (init 'normal')
ENWIK8_VOCAB = 204


def default_spec(
    num_classes: int = ENWIK8_VOCAB,
    n_layer: int = 12,
    d_model: int = 512,
    n_head: int = 8,
    d_head: int = 64,
    d_inner: int = 2048,
    dropout: float = 0.1,
    dropatt: float = 0.0,
    tie_weight: bool = True,
    tgt_len: int = 512,
    mem_len: int = 512,
    clamp_len: int = -1,
    same_length: bool = False,
    eval_tgt_len: int | None = None,
    eval_mem_len: int | None = None,
    eval_clamp_len: int | None = None,
    eval_same_length: bool | None = None,
    in_channels: int | None = None,  # passed by the pipeline for every family; tokens have none
) -> dict:
    """The enwik8 base model by default; ``num_classes`` is the vocabulary size (n_token)."""
    eval_tgt_len = tgt_len if eval_tgt_len is None else eval_tgt_len
    if eval_mem_len is None:  # train.py evaluate(): keep the total context tgt_len + mem_len
        eval_mem_len = mem_len + tgt_len - eval_tgt_len if mem_len > 0 else 0
    spec = {
        "arch": "transformer_xl",
        "num_classes": int(num_classes),
        "n_layer": int(n_layer),
        "d_model": int(d_model),
        "n_head": int(n_head),
        "d_head": int(d_head),
        "d_inner": int(d_inner),
        "dropout": float(dropout),
        "dropatt": float(dropatt),
        "tie_weight": bool(tie_weight),
        "tgt_len": int(tgt_len),
        "mem_len": int(mem_len),
        "clamp_len": int(clamp_len),
        "same_length": bool(same_length),
        "eval_tgt_len": int(eval_tgt_len),
        "eval_mem_len": int(eval_mem_len),
        "eval_clamp_len": int(clamp_len if eval_clamp_len is None else eval_clamp_len),
        "eval_same_length": bool(same_length if eval_same_length is None else eval_same_length),
    }
    _check(spec)
    return spec


def _check(spec: dict) -> None:
    for key in ("num_classes", "n_layer", "d_model", "n_head", "d_head", "d_inner", "tgt_len", "eval_tgt_len"):
        if spec[key] < 1:
            raise PruneLabError(f"transformer_xl: {key} must be >= 1, got {spec[key]}")
    if spec["d_model"] % 2:
        raise PruneLabError("transformer_xl: d_model must be even (sin and cos halves of the position embedding)")
    for prefix in ("", "eval_"):
        if spec[prefix + "mem_len"] < 0:
            raise PruneLabError(f"transformer_xl: {prefix}mem_len must be >= 0")
        if spec[prefix + "same_length"] and spec[prefix + "mem_len"] < 1:
            raise PruneLabError(
                f"transformer_xl: {prefix}same_length needs {prefix}mem_len >= 1 (window of mem_len keys)"
            )
    for key in ("dropout", "dropatt"):
        if not 0.0 <= spec[key] < 1.0:
            raise PruneLabError(f"transformer_xl: {key} must be in [0, 1)")
    shapes = linear_shapes(spec)
    for name, rank in (spec.get("ranks") or {}).items():
        if name not in shapes:
            raise PruneLabError(f"transformer_xl ranks: {name!r} is not a layer Linear (e.g. layers.0.attn.qkv_net)")
        if int(rank) != rank or rank < 0:
            raise PruneLabError(f"transformer_xl ranks[{name!r}] = {rank!r} must be an integer >= 0")


def linear_shapes(spec: dict) -> dict[str, tuple[int, int, bool]]:
    """(in_features, out_features, bias) of every Linear inside the layers, by module path."""
    d, hd, inner = spec["d_model"], spec["n_head"] * spec["d_head"], spec["d_inner"]
    one = {
        "attn.qkv_net": (d, 3 * hd, False),
        "attn.r_net": (d, hd, False),
        "attn.o_net": (hd, d, False),
        "ff.fc1": (d, inner, True),
        "ff.fc2": (inner, d, True),
    }
    return {f"layers.{i}.{name}": shape for i in range(spec["n_layer"]) for name, shape in one.items()}


def linear_weight_counts(spec: dict) -> dict[str, int]:
    """Weights (no biases) of every layer Linear: in*out, or (in + out)*r where ``ranks`` factorises it."""
    ranks = spec.get("ranks") or {}
    return {
        name: (i + o) * int(ranks[name]) if name in ranks else i * o for name, (i, o, _) in linear_shapes(spec).items()
    }


class FactorisedLinear(nn.Module):
    """Linear(in, out) as ``linear2(linear1(x))``: in -> rank without bias, rank -> out with the original's
    bias (flop.ProjectedLinear; the layout FLOP's pruned Transformer-XL keeps)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.linear1 = nn.Linear(in_features, rank, bias=False)
        self.linear2 = nn.Linear(rank, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.linear1(x))  # (..., in) -> (..., rank) -> (..., out)


def rel_shift(scores: torch.Tensor) -> torch.Tensor:
    """Re-index position scores from absolute slots to relative distances.

    ``scores[..., i, k]`` is query i against the embedding of distance ``klen - 1 - k`` (the
    position sequence runs klen-1 .. 0). The result ``out[..., i, j]`` is the score at distance
    ``mlen + i - j`` (mlen = klen - qlen), i.e. ``scores[..., i, j + qlen - 1 - i]``, for every
    unmasked j <= i + mlen; entries with j > i + mlen are junk that the causal mask removes.

    Padding one zero column on the right and reading the flattened (qlen, klen + 1) block from
    offset qlen - 1 does this in one copy-free slice: element (i, j) of the slice sits at flat
    offset i*(klen+1) + (j + qlen - 1 - i). (The official ``_rel_shift`` pads on the left and
    reshapes to (klen + 1, qlen); both give the same unmasked entries.)
    """
    qlen, klen = scores.shape[-2:]
    padded = F.pad(scores, (0, 1)).flatten(-2)  # (..., qlen * (klen + 1))
    return padded[..., qlen - 1 : qlen - 1 + qlen * klen].unflatten(-1, (qlen, klen))


def attention_mask(qlen: int, mlen: int, window: int | None, device: torch.device | None = None) -> torch.Tensor:
    """Boolean (qlen, klen) mask, True = blocked. Query i sits at key index mlen + i and may not see
    later keys; with ``window`` (official ``same_length``: window = mem_len) it also may not see keys
    ``window`` or more steps back, so every query attends the same number of keys once the memory
    is full (the official triu/tril pair, in distance form)."""
    query_pos = torch.arange(mlen, mlen + qlen, device=device)[:, None]
    key_pos = torch.arange(mlen + qlen, device=device)[None, :]
    distance = query_pos - key_pos  # (qlen, klen)
    blocked = distance < 0
    if window is not None:
        blocked |= distance >= window
    return blocked


class PositionalEmbedding(nn.Module):
    """Sinusoid of a (descending) position sequence: [sin(p * f), cos(p * f)], f = 10000^(-2i/d)."""

    def __init__(self, d_model: int):
        super().__init__()
        inv_freq = 1.0 / (10000 ** (torch.arange(0.0, d_model, 2.0) / d_model))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        angles = positions[:, None] * self.inv_freq[None, :]  # (klen, d/2)
        return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (klen, d)


class RelPartialLearnableAttention(nn.Module):
    """Multi-head attention with relative positions and the global content / position biases."""

    def __init__(self, d_model: int, n_head: int, d_head: int, dropout: float, dropatt: float):
        super().__init__()
        self.n_head, self.d_head = n_head, d_head
        self.qkv_net = nn.Linear(d_model, 3 * n_head * d_head, bias=False)
        self.r_net = nn.Linear(d_model, n_head * d_head, bias=False)
        self.o_net = nn.Linear(n_head * d_head, d_model, bias=False)
        self.drop = nn.Dropout(dropout)
        self.dropatt = nn.Dropout(dropatt)
        self.layer_norm = nn.LayerNorm(d_model)
        self.scale = 1.0 / math.sqrt(d_head)

    def forward(
        self,
        h: torch.Tensor,
        pos_emb: torch.Tensor,
        r_w_bias: torch.Tensor,
        r_r_bias: torch.Tensor,
        mask: torch.Tensor,
        memory: torch.Tensor | None,
    ) -> torch.Tensor:
        qlen, batch = h.shape[:2]
        context = h if memory is None else torch.cat([memory, h], dim=0)  # (klen, B, d)
        klen = context.size(0)
        q, k, v = self.qkv_net(context).chunk(3, dim=-1)  # each (klen, B, H*D): K/V of memory recomputed
        q = q[-qlen:].reshape(qlen, batch, self.n_head, self.d_head).permute(1, 2, 0, 3)  # (B, H, qlen, D)
        k = k.reshape(klen, batch, self.n_head, self.d_head).permute(1, 2, 3, 0)  # (B, H, D, klen)
        v = v.reshape(klen, batch, self.n_head, self.d_head).permute(1, 2, 0, 3)  # (B, H, klen, D)
        r = self.r_net(pos_emb).reshape(klen, self.n_head, self.d_head).permute(1, 2, 0)  # (H, D, klen)

        content = torch.matmul(q + r_w_bias[:, None, :], k)  # (B, H, qlen, klen)  term (a)+(c)
        position = rel_shift(torch.matmul(q + r_r_bias[:, None, :], r))  # (B, H, qlen, klen)  (b)+(d)
        score = (content + position) * self.scale
        score = score.float().masked_fill(mask, float("-inf"))
        prob = self.dropatt(F.softmax(score, dim=-1).type_as(v))
        attended = torch.matmul(prob, v)  # (B, H, qlen, D)
        attended = attended.permute(2, 0, 1, 3).reshape(qlen, batch, self.n_head * self.d_head)
        return self.layer_norm(h + self.drop(self.o_net(attended)))  # post-LN residual


class PositionwiseFF(nn.Module):
    def __init__(self, d_model: int, d_inner: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_inner)
        self.fc2 = nn.Linear(d_inner, d_model)
        self.drop = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(d_model)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        inner = self.drop(F.relu(self.fc1(h)))  # (T, B, d_inner)
        return self.layer_norm(h + self.drop(self.fc2(inner)))


class DecoderLayer(nn.Module):
    def __init__(self, spec: dict):
        super().__init__()
        d = spec["d_model"]
        self.attn = RelPartialLearnableAttention(d, spec["n_head"], spec["d_head"], spec["dropout"], spec["dropatt"])
        self.ff = PositionwiseFF(d, spec["d_inner"], spec["dropout"])

    def forward(self, h, pos_emb, r_w_bias, r_r_bias, mask, memory):
        return self.ff(self.attn(h, pos_emb, r_w_bias, r_r_bias, mask, memory))


class TransformerXL(nn.Module):
    input_dtype = torch.long  # the MAC counter feeds a (1, 1) tensor of token ids

    def __init__(self, spec: dict):
        super().__init__()
        _check(spec)
        d, vocab = spec["d_model"], spec["num_classes"]
        self.n_layer = spec["n_layer"]
        self.d_model = d
        self.word_emb = nn.Embedding(vocab, d)
        self.emb_scale = math.sqrt(d)
        self.pos_emb = PositionalEmbedding(d)
        self.r_w_bias = nn.Parameter(torch.empty(spec["n_head"], spec["d_head"]))  # shared by all layers
        self.r_r_bias = nn.Parameter(torch.empty(spec["n_head"], spec["d_head"]))
        self.drop = nn.Dropout(spec["dropout"])
        self.layers = nn.ModuleList(DecoderLayer(spec) for _ in range(self.n_layer))
        for name, rank in (spec.get("ranks") or {}).items():  # FLOP's factorised layers
            parent_name, _, child = name.rpartition(".")
            parent, dense = self.get_submodule(parent_name), self.get_submodule(name)
            setattr(
                parent,
                child,
                FactorisedLinear(dense.in_features, dense.out_features, int(rank), dense.bias is not None),
            )
        self.out_layer = nn.Linear(d, vocab)
        self._settings = {
            True: (spec["mem_len"], spec["clamp_len"], spec["same_length"]),
            False: (spec["eval_mem_len"], spec["eval_clamp_len"], spec["eval_same_length"]),
        }
        self._init_weights()
        if spec["tie_weight"]:
            self.out_layer.weight = self.word_emb.weight
        self._memory: dict[bool, list[torch.Tensor] | None] = {True: None, False: None}

    def _init_weights(self) -> None:
        factorised = [m for m in self.modules() if isinstance(m, FactorisedLinear)]
        inside = {id(c) for m in factorised for c in (m.linear1, m.linear2)}
        for m in self.modules():
            if id(m) in inside:
                continue
            if isinstance(m, FactorisedLinear):  # FLOP train.py weights_init for a ProjectedLinear
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # a rank-0 factor: "Initializing zero-element tensors"
                    nn.init.normal_(m.linear1.weight, 0.0, INIT_STD)
                    nn.init.xavier_uniform_(m.linear2.weight)
                if m.linear2.bias is not None:
                    nn.init.zeros_(m.linear2.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, INIT_STD)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.normal_(m.weight, 1.0, INIT_STD)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.word_emb.weight, 0.0, INIT_STD)
        nn.init.normal_(self.r_w_bias, 0.0, INIT_STD)
        nn.init.normal_(self.r_r_bias, 0.0, INIT_STD)

    # ---- memory -------------------------------------------------------------------------------
    def reset_state(self) -> None:
        """Forget the memory of both modes (start of a new text / epoch / evaluation)."""
        self._memory = {True: None, False: None}

    def train(self, mode: bool = True):
        if self.training and not mode:  # entering eval: the official evaluate() starts from empty mems
            self._memory[False] = None
        return super().train(mode)

    def _current_memory(self, batch: int, device: torch.device) -> list[torch.Tensor] | None:
        memory = self._memory[self.training]
        if memory is not None and (memory[0].size(1) != batch or memory[0].device != device):
            memory = self._memory[self.training] = None
        return memory

    @torch.no_grad()
    def _update_memory(self, hiddens: list[torch.Tensor], memory: list[torch.Tensor] | None, mem_len: int) -> None:
        """Keep the last mem_len steps of (old memory + this window) of every layer's input, detached."""
        if mem_len <= 0:
            self._memory[self.training] = None
            return
        if memory is None:
            new = [h[-mem_len:].detach() for h in hiddens]
        else:
            new = [torch.cat([m, h], dim=0)[-mem_len:].detach() for m, h in zip(memory, hiddens, strict=True)]
        self._memory[self.training] = new

    def stream_burn_in(self, window: int) -> int:
        """Tokens of preceding text after which an evaluation lane started with empty memory on a
        window boundary of a stream holds exactly the stream's memory (pruning.text_data's fast
        evaluation cuts a stream into lanes with it).

        In eval mode a window starting at s reads memory[l] = the layer-l inputs of positions
        [s - M, s) (M = eval_mem_len; fewer only when the text started later), and its queries see
        those keys and the window's own earlier ones: layer l + 1 at window s depends on layer l at
        [s - M, s + T). A lane that starts at a (a multiple of T from the stream's start) has
        layer 0 (the embeddings) right from a; layer 1 right from the first window with s - M >= a,
        i.e. s >= a + ceil(M / T) * T; by induction layer l right from a + l * ceil(M / T) * T. So
        n_layer * ceil(M / T) * T tokens suffice (same_length and clamp_len only narrow what a
        query sees; positions are relative distances, the same in lane and stream)."""
        mem_len = self._settings[False][0]
        return self.n_layer * math.ceil(mem_len / window) * window if mem_len > 0 else 0

    # ---- forward ------------------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, qlen = tokens.shape
        mem_len, clamp_len, same_length = self._settings[self.training]
        memory = self._current_memory(batch, tokens.device) if mem_len > 0 else None
        mlen = 0 if memory is None else memory[0].size(0)
        klen = mlen + qlen

        h = self.drop(self.word_emb(tokens.t()) * self.emb_scale)  # (T, B, d)
        positions = torch.arange(klen - 1, -1, -1, device=tokens.device, dtype=h.dtype)  # distances
        if clamp_len > 0:
            positions = positions.clamp(max=clamp_len)
        pos_emb = self.drop(self.pos_emb(positions))  # (klen, d), one dropout mask for the batch
        mask = attention_mask(qlen, mlen, mem_len if same_length else None, tokens.device)

        hiddens = [h]
        for i, layer in enumerate(self.layers):
            h = layer(h, pos_emb, self.r_w_bias, self.r_r_bias, mask, None if memory is None else memory[i])
            hiddens.append(h)
        self._update_memory(hiddens, memory, mem_len)

        h = self.drop(h).transpose(0, 1).reshape(batch * qlen, self.d_model)  # rows (b, t)
        return self.out_layer(h)  # (B*T, V)

    def prunable_linears(self) -> list[tuple[str, nn.Linear]]:
        """Every nn.Linear inside the layers (qkv_net, r_net, o_net, fc1, fc2 of each layer): what
        FLOP factorises (``make_projected_linear(model.layers)``); embedding and output stay dense."""
        return [(f"layers.{name}", m) for name, m in self.layers.named_modules() if isinstance(m, nn.Linear)]


def build(spec: dict) -> nn.Module:
    return TransformerXL(spec)


def channel_groups(spec: dict) -> list[ChannelGroup]:
    """None: the structured (filter / channel) methods do not apply to this family; FLOP prunes
    factor ranks of ``prunable_linears`` instead."""
    return []


# ---- counting -----------------------------------------------------------------------------------
def num_params(spec: dict) -> int:
    """Exact parameter count, the tied embedding / output matrix once (``ranks``: factorised Linears)."""
    d, hd, vocab = spec["d_model"], spec["n_head"] * spec["d_head"], spec["num_classes"]
    per_layer = spec["d_inner"] + d + 2 * 2 * d  # FF biases + 2 LayerNorms
    embeddings = vocab * d * (1 if spec["tie_weight"] else 2) + vocab  # + output bias
    linear = sum(linear_weight_counts(spec).values())
    return linear + spec["n_layer"] * per_layer + 2 * hd + embeddings  # + r_w_bias, r_r_bias


def macs_per_token(spec: dict, context_len: int) -> dict[str, int]:
    """Multiply-accumulates per predicted token.

    linear:    1 MAC per Linear weight (qkv, r, o, fc1, fc2 of every layer, and the output layer),
               what forward hooks count on a (1, 1) input with empty memory;
    attention: the products of the attention itself for ``context_len`` keys (memory + current):
               content scores, position scores and the weighted sum of values, 3 * H * D each key
               and layer (the dense computation scores every key; the causal mask saves nothing).
    The embedding lookup, biases, LayerNorm and softmax are not counted. ``macs_per_window`` gives
    what this implementation actually computes for a window, K/V of the memory recomputed."""
    linear = sum(linear_weight_counts(spec).values()) + spec["d_model"] * spec["num_classes"]
    attention = spec["n_layer"] * 3 * spec["n_head"] * spec["d_head"] * int(context_len)
    return {"linear": int(linear), "attention": int(attention), "total": int(linear + attention)}


def macs_per_window(spec: dict, batch: int, qlen: int, mlen: int) -> dict[str, int]:
    """Exact MACs of one forward over a (batch, qlen) window with mlen memory steps: qkv_net runs on
    all mlen + qlen rows (as in the official code), r_net once on mlen + qlen positions shared by the
    batch, o_net / FF / output on the qlen rows; attention as in ``macs_per_token``."""
    d, hd, klen = spec["d_model"], spec["n_head"] * spec["d_head"], mlen + qlen
    rows = {"attn.qkv_net": batch * klen, "attn.r_net": klen}  # the rest: batch * qlen rows
    linear = sum(
        rows.get(name.split(".", 2)[2], batch * qlen) * weights for name, weights in linear_weight_counts(spec).items()
    )
    linear += batch * qlen * d * spec["num_classes"]
    attention = spec["n_layer"] * batch * qlen * klen * 3 * hd
    return {"linear": int(linear), "attention": int(attention), "total": int(linear + attention)}
