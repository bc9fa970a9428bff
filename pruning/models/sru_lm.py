"""SRU character-level language model of FLOP's enwik8 experiments.

Wang, Wohlwend & Lei, "Structured Pruning of Large Language Models", EMNLP 2020. Checked line by
line against the official code (bare mirrors, HEAD):

- github:asappresearch/flop (bdfc184) examples/enwik8/train_enwik8.py: ``Model``, ``CustomLinear``,
  ``init_weights``, the argparse defaults; flop/linear.py: ``ProjectedLinear``;
- github:asappresearch/sru 2.6.0 (9ddc8da) sru/modules.py: ``SRUCell``, ``SRU``; sru/ops.py:
  ``elementwise_recurrence_naive`` (the recurrence), csrc/sru_cpu_impl.cpp and
  csrc/sru_cuda_kernel.cu (same formula, same dropout placement).

Architecture (``Model.__init__`` / ``Model.forward``), time-major inside::

    x (T, B) ids -> Embedding(V, n_e) -> Dropout(p)                        emb (T, B, n_e)
    layer 1: U = Linear(n_e, 4 n_d, bias=False)(emb)      (CustomLinear)   U (T, B, n_d, 4)
    layer l: U = Linear(n_proj, 3 n_d, bias=False)(Linear(n_d, n_proj, bias=False)(h))
                                                           (flop.ProjectedLinear, bias=False)
    -> Dropout(p) on the last layer's h -> Linear(n_d, V) (with bias)      logits

Each layer's U is laid out (d, k)-interleaved (``U.view(T, B, d, k)`` in ops.py): column j*k+m of
the Linear output is sub-matrix m of unit j. The recurrence (ops.py, activation 'none',
has_skip_term True; f = forget gate, r = highway/"reset" gate, v = weight_c, b = bias)::

    f_t = sigmoid(U1_t + v_f * c_{t-1} + b_f)
    r_t = sigmoid(U2_t + v_r * c_{t-1} + b_r)
    c_t = U0_t + (c_{t-1} - U0_t) * f_t
    h_t = x'_t + (c_t - x'_t) * mask_c * r_t

x' is the layer input times scale_x when k == 3 (n_in == n_d), else U3 (layer 1: n_e != n_d).
(With n_e == n_d, i.e. V >= n_d, layer 1 has k = 3 here, as SRUCell.num_matrices says; the
official Model would then fail, its CustomLinear always giving 4 n_d outputs.)
``rescale`` is a store_true flag left off in train_enwik8.py, and SRU.forward passes scale_x only
``if self.rescale``, so x' is unscaled in FLOP. mask_c is the variational dropout mask of the
layer, (B, n_d), Bernoulli(1-p)/(1-p), drawn once per forward call (before U) and shared over
time; SRU gives it to every layer but the last (``dropout if i + 1 != num_layers else 0``). It
multiplies the highway term exactly as written above (also in the CUDA kernel:
``h = (cur - x) * mask * g2 + x``). ``layer_norm`` is another store_true flag left off and is not
implemented here.

c_{t-1} sits inside the sigmoids, so the forward pass is a loop over time (3 ops per step). The
backward pass is hand-written (``SRURecurrence``): given every c_t, the gates are recomputed for
all t at once and the gradient w.r.t. c is a *linear* backward scan
``G_t = a_t + G_{t+1} * dc_{t+1}/dc_t`` (1 op per step); everything else is vectorised over time.

Initialisation, in the official order of random draws, so that under the same seed this model's
parameters equal the official ones exactly: Embedding (normal), the CustomLinear and every
ProjectedLinear's two Linears (PyTorch's default Linear init), then per layer
SRUCell.reset_parameters: bias = [0]*n_d (forget) + [highway_bias]*n_d (highway), the
CustomLinear re-initialised by ``custom_m.reset_parameters()`` (layer 1 only: ProjectedLinear has
no reset_parameters, SRU warns and keeps its construction init), weight_c ~ U(-sqrt 3, sqrt 3) *
sqrt(0.5); then the output Linear; finally Model.init_weights: embedding and output weights
U(-sqrt(3/size(0)), sqrt(3/size(0))) (size(0) = V for both), output bias 0.

Not a linear recurrence: f_t depends on c_{t-1} (through ``weight_c``), so the forward pass
cannot be an associative (parallel) scan over time. Trained models also remember far back: started
from a zero state 4,096 characters early, the c of some small pydocs SRUs (sru_small, 3 epochs)
still differs from the stream's by up to 0.6 (|c| up to 14), so a stream cannot be cut into
independent lanes with a burn-in either; evaluation walks it whole, in long windows (the result
does not depend on them). The backward recurrence is linear, but at the training shapes (16 lanes x
64-256 characters, n_d 256, CPU) a log-depth Hillis-Steele scan measured 3x slower than this
loop (T log T work against T), so the loop stays.

The model is stateful like the official BPTT loop (``hidden.detach_()`` between windows): the last
c (depth, B, n_d) of a call is kept, detached, and is the next call's initial state. It is a plain
attribute (not in state_dict); ``reset_state()`` zeroes it, and a change of batch size, device or
dtype resets it.

FLOP's config (train_enwik8.py defaults; byte-level enwik8 has V = 205): 34,541,414 parameters =
embedding 42,025 + SRU 33,872,704 + output 626,685; the prunable Linear weights inside the SRU
(``prunable_linears()``; ``transforms()`` lists the per-layer U modules that FLOP's
``make_hard_concrete`` replaces) hold 33,799,360.

Channel groups: none. FLOP prunes ranks of factorised matrices (and layer 1's inputs), not channels
coupled through BN/convs, so structured CNN methods do not apply; ``channel_groups`` returns [].
A pruned network is expressed by the spec: a per-layer ``n_proj`` list (ranks of layers 2..depth)
and ``n_e`` (inputs of layer 1 = embedding width). FLOP's mask over layer 1's inputs removes
embedding columns together with the U-projection's columns: layer 1's skip term is U3 (k = 4,
n_e != n_d), so the embedding feeds nothing else and slicing both is exact. The optional key
``layer1_matrices`` (3 or 4) keeps k = 4 when a pruned n_e happens to equal n_d; absent, k follows
SRUCell.num_matrices (4 if n_e != n_d else 3).

    {"arch": "sru_lm", "num_classes": 205, "n_e": 205, "n_d": 3056, "depth": 6,
     "n_proj": [512, 512, 512, 512, 512], "dropout": 0.1, "highway_bias": -3.0, "rescale": false}
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.autograd.function import once_differentiable

from pruning import PruneLabError
from pruning.models import ChannelGroup

TASK = "language_model"  # input: token ids (B, T); output: next-token logits (B*T, V)


def default_spec(
    num_classes: int = 205,
    depth: int = 6,
    n_d: int = 3056,
    n_proj: int | list | None = 512,
    n_e: int | None = 0,
    dropout: float = 0.1,
    highway_bias: float = -3.0,
    rescale: bool = False,
    in_channels: int | None = None,  # passed by the config layer for image data; unused here
) -> dict:
    """The dense spec; defaults are train_enwik8.py's argparse defaults. ``num_classes`` is the
    vocabulary size V; ``n_e`` 0/None means ``V if V < n_d else n_d`` (as Model.__init__)."""
    num_classes, depth, n_d = int(num_classes), int(depth), int(n_d)
    if depth < 1 or n_d < 1 or num_classes < 1:
        raise PruneLabError("sru_lm needs depth >= 1, n_d >= 1 and a vocabulary of >= 1 symbols")
    if not n_e:
        n_e = num_classes if num_classes < n_d else n_d
    if isinstance(n_proj, (list, tuple)):
        ranks = [int(r) for r in n_proj]
    else:
        ranks = [int(n_proj if n_proj is not None else n_d * 3 * n_d // (n_d + 3 * n_d))] * (depth - 1)
    if len(ranks) != depth - 1 or min(ranks, default=0) < 0:
        raise PruneLabError(f"sru_lm n_proj needs depth - 1 = {depth - 1} ranks >= 0, got {ranks}")
    if not 0.0 <= float(dropout) < 1.0:
        raise PruneLabError(f"sru_lm dropout must be in [0, 1), got {dropout}")
    return {
        "arch": "sru_lm",
        "num_classes": num_classes,
        "n_e": int(n_e),
        "n_d": n_d,
        "depth": depth,
        "n_proj": ranks,
        "dropout": float(dropout),
        "highway_bias": float(highway_bias),
        "rescale": bool(rescale),
    }


def _num_matrices(n_in: int, n_d: int) -> int:
    """SRUCell.num_matrices: 4 (an extra U3 for the skip term) when input and output sizes differ."""
    return 4 if n_in != n_d else 3


def layer1_matrices(spec: dict) -> int:
    """k of layer 1: the spec's ``layer1_matrices`` (a pruned n_e that equals n_d keeps its U3 skip
    term), else SRUCell's rule. k = 3 (identity skip) needs n_e == n_d."""
    k = spec.get("layer1_matrices")
    if k is None:
        return _num_matrices(spec["n_e"], spec["n_d"])
    if k not in (3, 4) or (k == 3 and spec["n_e"] != spec["n_d"]):
        raise PruneLabError(f"sru_lm layer1_matrices={k!r}: use 4, or 3 when n_e == n_d (identity skip term)")
    return int(k)


def macs_per_token(spec: dict) -> int:
    """Multiply-accumulates per character of every Linear (1 per weight; biases, the elementwise
    recurrence and the embedding lookup are free): layer 1 n_e*k*n_d, layer l n_d*r + r*3*n_d,
    output n_d*V."""
    n_d, n_e = spec["n_d"], spec["n_e"]
    macs = n_e * layer1_matrices(spec) * n_d
    macs += sum(n_d * r + r * 3 * n_d for r in spec["n_proj"])
    return int(macs + n_d * spec["num_classes"])


class SRURecurrence(torch.autograd.Function):
    """The SRU elementwise recurrence (sru/ops.py ``elementwise_recurrence_naive``, one direction,
    activation 'none', skip term on, no padding) with a hand-written backward.

    U (T, B, d, k); skip (T, B, d), the scaled layer input when k == 3, None when k == 4 (x' = U3);
    weight_c, bias (2d,) = [forget | highway]; c0 (B, d); mask_c (B, d) or None.
    Returns h (T, B, d) and c_T (B, d). Saves U, the states c_0..c_T and the gates f, r.
    """

    @staticmethod
    def forward(ctx, U, skip, weight_c, bias, c0, mask_c):
        length, batch, d, _ = U.shape
        v_f, v_r = weight_c[:d], weight_c[d:]
        b_f, b_r = bias[:d], bias[d:]
        states = U.new_empty(length + 1, batch, d)  # c_0 .. c_T
        states[0] = c0
        f = U.new_empty(length, batch, d)
        u1 = U[..., 1] + b_f  # (T, B, d)
        u0, u1, f_, c_ = U[..., 0].unbind(0), u1.unbind(0), f.unbind(0), states.unbind(0)  # per-step views
        for t in range(length):
            torch.addcmul(u1[t], c_[t], v_f, out=f_[t]).sigmoid_()  # f_t = sigmoid(U1 + b_f + v_f c_{t-1})
            torch.lerp(u0[t], c_[t], f_[t], out=c_[t + 1])  # c_t = U0 + (c_{t-1} - U0) * f_t
        c_before, c = states[:-1], states[1:]
        r = torch.addcmul(U[..., 2] + b_r, c_before, v_r).sigmoid_()  # (T, B, d), needs no loop
        x_skip = U[..., 3] if skip is None else skip
        gate = r if mask_c is None else r * mask_c
        h = torch.addcmul(x_skip, c - x_skip, gate)  # x' + (c - x') * mask_c * r
        ctx.save_for_backward(U, skip, weight_c, mask_c, states, f, r)
        return h, states[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h, grad_c_last):
        U, skip, weight_c, mask_c, states, f, r = ctx.saved_tensors
        d = U.size(2)
        v_f, v_r = weight_c[:d], weight_c[d:]
        c_before, c = states[:-1], states[1:]
        x_skip = U[..., 3] if skip is None else skip
        gate = r if mask_c is None else r * mask_c
        grad_U = torch.empty_like(U)
        grad_c = grad_h * gate  # dh_t/dc_t; G_t accumulates in place below
        grad_x_skip = grad_U[..., 3] if skip is None else torch.empty_like(skip)
        torch.sub(grad_h, grad_c, out=grad_x_skip)  # dh/dx' = 1 - mask_c * r
        grad_r_pre = torch.mul(grad_h, c - x_skip, out=grad_U[..., 2])  # through r's sigmoid -> U2
        if mask_c is not None:
            grad_r_pre.mul_(mask_c)
        grad_r_pre.mul_(r - r * r)
        c_slope = (c_before - U[..., 0]) * (f - f * f)  # df-path factor (c_{t-1} - U0) f (1 - f)
        carry = torch.addcmul(f, c_slope, v_f)  # dc_t/dc_{t-1}, directly and through f_t
        # G_t = dh_t/dc_t + grad_r_pre_{t+1} v_r + G_{t+1} carry_{t+1}  (G_T gets grad_c_last)
        grad_c[:-1].addcmul_(grad_r_pre[1:], v_r)
        grad_c[-1] += grad_c_last
        for t in range(grad_c.size(0) - 2, -1, -1):
            grad_c[t].addcmul_(grad_c[t + 1], carry[t + 1])
        grad_f_pre = torch.mul(grad_c, c_slope, out=grad_U[..., 1])
        torch.sub(grad_c, grad_c * f, out=grad_U[..., 0])  # dc_t/dU0 = 1 - f_t
        grad_bias = torch.cat([grad_f_pre.sum((0, 1)), grad_r_pre.sum((0, 1))])
        grad_weight_c = torch.cat([(grad_f_pre * c_before).sum((0, 1)), (grad_r_pre * c_before).sum((0, 1))])
        grad_c0 = None
        if ctx.needs_input_grad[4]:
            grad_c0 = torch.addcmul(grad_r_pre[0] * v_r, grad_c[0], carry[0])
        return grad_U, (grad_x_skip if skip is not None else None), grad_weight_c, grad_bias, grad_c0, None


class ProjectedLinear(nn.Module):
    """flop.ProjectedLinear as train_enwik8.py uses it: ``linear2(linear1(x))``, linear1 n_in -> r
    without bias, linear2 r -> n_out with ``bias=False`` (passed by Model). No reset_parameters, as
    in flop/linear.py (so SRUCell.reset_parameters leaves its default Linear init alone)."""

    def __init__(self, in_features: int, out_features: int, proj_features: int):
        super().__init__()
        self.linear1 = nn.Linear(in_features, proj_features, bias=False)
        self.linear2 = nn.Linear(proj_features, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.linear1(x))


class SRULayer(nn.Module):
    """One SRUCell (sru/modules.py) with a custom U module ``transform`` (official ``custom_m``)."""

    def __init__(
        self,
        transform: nn.Module,
        n_in: int,
        n_d: int,
        dropout: float,
        highway_bias: float,
        scale_x: float,
        k: int | None = None,
    ):
        super().__init__()
        self.transform = transform
        self.n_in, self.n_d = n_in, n_d
        self.k = _num_matrices(n_in, n_d) if k is None else k  # k: a pruned layer 1 keeps its U3 skip term
        self.dropout = dropout
        self.highway_bias = highway_bias
        self.scale_x = scale_x  # 1.0 unless rescale; used only when k == 3 (ops.py)
        self.weight_c = nn.Parameter(torch.empty(2 * n_d))  # [v_f | v_r]
        self.bias = nn.Parameter(torch.empty(2 * n_d))  # [b_f | b_r]

    def reset_parameters(self) -> None:
        """SRUCell.reset_parameters with custom_m, v1 False, weight_c_init None."""
        with torch.no_grad():
            self.bias.zero_()
            self.bias[self.n_d :] = self.highway_bias
            if hasattr(self.transform, "reset_parameters"):  # the CustomLinear (an nn.Linear)
                self.transform.reset_parameters()
            self.weight_c.uniform_(-(3.0**0.5), 3.0**0.5)
            self.weight_c.mul_(0.5**0.5)

    def forward(self, x: torch.Tensor, c0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        length, batch = x.shape[:2]
        mask_c = None
        if self.training and self.dropout > 0:  # SRUCell.get_dropout_mask_, drawn before U
            mask_c = self.bias.new_empty(batch, self.n_d).bernoulli_(1 - self.dropout).div_(1 - self.dropout)
        U = self.transform(x).view(length, batch, self.n_d, self.k)  # (T, B, d, k)
        # the recurrence runs in the parameters' dtype (float32 under bf16/fp16 autocast, as the
        # official GPU path casts U, x, c0 to float)
        dtype = self.weight_c.dtype
        skip = None
        if self.k == 3:
            skip = (x * self.scale_x if self.scale_x != 1.0 else x).to(dtype)
        return SRURecurrence.apply(U.to(dtype), skip, self.weight_c, self.bias, c0.to(dtype), mask_c)


class SRULanguageModel(nn.Module):
    input_dtype = torch.long  # token ids
    # Evaluation (pruning.text_data.evaluate_streams): the whole state (every layer's c) is carried
    # exactly from call to call, so a stream gives the same result however it is cut into windows.
    # It cannot be cut into lanes: the forget gate sees c_{t-1} (weight_c), so the recurrence is not
    # linear (no parallel scan computes it) and its memory is not bounded (no burn-in recovers it).
    stream_window_independent = True

    def __init__(self, spec: dict):
        super().__init__()
        vocab, n_e, n_d, depth = spec["num_classes"], spec["n_e"], spec["n_d"], spec["depth"]
        p = spec["dropout"]
        self.n_d, self.depth = n_d, depth
        scale_x = (1 + math.exp(spec["highway_bias"]) * 2) ** 0.5 if spec["rescale"] else 1.0
        # construction order = the official order of random draws (see the module docstring)
        self.drop = nn.Dropout(p)
        self.embedding = nn.Embedding(vocab, n_e)
        k1 = layer1_matrices(spec)
        transforms = [nn.Linear(n_e, n_d * k1, bias=False)]  # CustomLinear
        transforms += [ProjectedLinear(n_d, n_d * 3, r) for r in spec["n_proj"]]
        self.layers = nn.ModuleList(
            SRULayer(
                m,
                n_e if i == 0 else n_d,
                n_d,
                p if i + 1 != depth else 0.0,
                spec["highway_bias"],
                scale_x,
                k1 if i == 0 else None,
            )
            for i, m in enumerate(transforms)
        )
        for layer in self.layers:
            layer.reset_parameters()
        self.output = nn.Linear(n_d, vocab)
        self.init_weights()
        self._state: torch.Tensor | None = None

    def init_weights(self) -> None:
        """Model.init_weights (reinit_rnn False): embedding and output layer only."""
        with torch.no_grad():
            for p in (self.embedding.weight, self.output.weight, self.output.bias):
                if p.dim() > 1:
                    bound = (3.0 / p.size(0)) ** 0.5
                    p.uniform_(-bound, bound)
                else:
                    p.zero_()

    def reset_state(self) -> None:
        self._state = None

    def prunable_linears(self) -> list[tuple[str, nn.Linear]]:
        """Every nn.Linear inside the SRU layers (layer 1's U Linear, each ProjectedLinear's linear1
        and linear2), by module path: FLOP's prunable weights; embedding and output stay dense."""
        return [(f"layers.{name}", m) for name, m in self.layers.named_modules() if isinstance(m, nn.Linear)]

    def transforms(self) -> list[tuple[str, nn.Module]]:
        """Each layer's U module (official custom_m: layer 1 an nn.Linear, the others a
        ProjectedLinear), the unit FLOP's make_hard_concrete replaces; replace one with
        ``model.layers[i].transform = new_module`` (it must map (T, B, n_in) -> (T, B, k * n_d))."""
        return [(f"layers.{i}.transform", layer.transform) for i, layer in enumerate(self.layers)]

    def _initial_state(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        s = self._state
        if s is None or s.size(1) != batch or s.device != like.device or s.dtype != like.dtype:
            s = like.new_zeros(self.depth, batch, self.n_d)
        return s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T) token ids -> logits (B*T, V), rows in (b, t) order."""
        batch, length = x.shape
        emb = self.drop(self.embedding(x.t()))  # (T, B, n_e), time-major as the official
        state = self._initial_state(batch, emb)  # (depth, B, n_d)
        h, last = emb, []
        for layer, c0 in zip(self.layers, state.unbind(0), strict=True):
            h, c_last = layer(h, c0)  # (T, B, n_d), (B, n_d)
            last.append(c_last)
        self._state = torch.stack(last).detach()
        h = self.drop(h)  # the same Dropout module as the embedding's (Model.forward)
        h = h.transpose(0, 1).reshape(batch * length, self.n_d)  # (B*T, n_d), (b, t) row order
        return self.output(h)  # (B*T, V)


def build(spec: dict) -> nn.Module:
    return SRULanguageModel(spec)


def channel_groups(spec: dict) -> list[ChannelGroup]:
    """No structured channel groups: see the module docstring."""
    return []
