"""SANP's gated network: a base CIFAR / ImageNet net with a Saliency-and-Pruning Module (SPM) per
prunable conv, deciding per sample which output channels of that conv are computed.

Chen, Zhu, Li & Zhao, "Self-Adaptive Network Pruning", ICONIP 2019 (arXiv 1910.08906). The paper
publishes no code; what it says (an SPM per conv layer predicting channel saliency from the layer's
input, decision 0 = the channel's convolution is skipped, joint training with a cost objective) is
filled in with DGNet's channel gate (Li et al., ICCV 2021, github:CAS-CLab/DGNet ``models/mask.py``
``Mask_c`` and ``GumbelSoftmax``, read, not copied). The method's docstring
(``pruning/methods/sanp.py``) lists every choice and its source.

    spec = {"arch": "sanp", "base": <resnet_cifar | vgg_cifar | resnet_imagenet (basic) spec>,
            "reduction": 4, "min_hidden": 4, "temperature": 0.66667,
            "relaxation": "gumbel_st", "gate_bias": 2.0}

Gated convs ("sites"): ResNet, the first conv of every basic block (its output = the block's mid
channels, so the residual add stays valid); VGG, every conv. The SPM of a site reads the site
conv's input: AdaptiveAvgPool(1) -> 1x1 conv C_in->h (no bias) -> BN -> ReLU -> 1x1 conv h->C_out
(bias) = one logit per output channel, h = max(min_hidden, C_in // reduction). The decision
multiplies the site's output after BN and ReLU (DGNet's placement: the same forward as masking
before the ReLU, but a closed channel still passes a gradient to its gate).

Forward passes
* train mode: Gumbel-sigmoid + straight-through (``gumbel_st``: hard = sigmoid((l + log u -
  log(1-u)) / T) >= 0.5, gradient of the soft value) or deterministic ``sigmoid_st`` (hard = l >= 0,
  gradient of sigmoid(l / T)); every channel is computed and masked.
* eval mode, batch > 1 (or ``skip_batch1 = False``): hard decisions l >= 0, computed densely and
  masked ("masked path").
* eval mode, batch 1: the **skipping path** computes only the kept channels: the site conv's
  weight and BN are sliced to the kept outputs, the consumer's weight (next conv / VGG's first
  classifier Linear) and, for VGG, the next SPM's first conv to the kept inputs, and F.conv2d runs
  on the slices. Same output as the masked path (up to float summation order).

Cost (``per_sample_macs``): MACs per sample counted exactly from each sample's hard decisions, with
``pruning.measure.count_macs``'s conventions (every Conv2d and Linear, one multiply-add = 1; BN,
ReLU, pooling, shortcuts free). A gated conv costs kept_out * kept_in * k*k * H*W (kept_in = the
producer's kept count where the producer is gated, else C_in); its consumer kept_in * C_out * ...;
each SPM kept_in * h + h * C_out (its input is the conv's input, sliced like the conv). With every
gate open the count is ``count_macs(base) + spm_macs``. ``count_macs`` on this model itself is not
the cost: at batch 1 the skipping path calls sliced weights, which its hooks do not see.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pruning import PruneLabError
from pruning.models import ChannelGroup

BASES = ("resnet_cifar", "vgg_cifar", "resnet_imagenet")
RELAXATIONS = ("gumbel_st", "sigmoid_st")


def default_spec(
    base: dict | str | None = None,
    reduction: int = 4,
    min_hidden: int = 4,
    temperature: float = 2.0 / 3.0,
    relaxation: str = "gumbel_st",
    gate_bias: float = 2.0,
    **base_kwargs,
) -> dict:
    """``base``: a base spec, or a base family name whose ``default_spec(**base_kwargs)`` is used
    (default: CIFAR ResNet-56)."""
    from pruning.models import default_spec as family_default

    if base is None:
        base = "resnet_cifar"
    if isinstance(base, str):
        base = family_default(base, **base_kwargs)
    spec = {
        "arch": "sanp",
        "base": dict(base),
        "reduction": int(reduction),
        "min_hidden": int(min_hidden),
        "temperature": float(temperature),
        "relaxation": str(relaxation),
        "gate_bias": float(gate_bias),
    }
    check_spec(spec)
    return spec


def check_spec(spec: dict) -> None:
    base = spec.get("base")
    if not isinstance(base, dict) or base.get("arch") not in BASES:
        got = base.get("arch") if isinstance(base, dict) else base
        raise PruneLabError(f"sanp: base arch {got!r} is not gated; supported bases: {', '.join(BASES)}")
    if base["arch"] == "resnet_imagenet" and base.get("block") != "basic":
        raise PruneLabError("sanp: ImageNet ResNets with basic blocks only (ResNet-18 / 34), not bottlenecks")
    if spec.get("relaxation", "gumbel_st") not in RELAXATIONS:
        raise PruneLabError(f"sanp: relaxation {spec.get('relaxation')!r}; use one of {', '.join(RELAXATIONS)}")
    if int(spec.get("reduction", 4)) < 1 or int(spec.get("min_hidden", 4)) < 1:
        raise PruneLabError("sanp: reduction and min_hidden must be >= 1")
    t = float(spec.get("temperature", 2.0 / 3.0))
    if not (t > 0 and math.isfinite(t)):
        raise PruneLabError(f"sanp: temperature {t} must be > 0")


# ----------------------------------------------------------------------------- the SPM
class SPM(nn.Module):
    """Saliency-and-Pruning Module: per-channel logits (B, C_out) from the pooled input (B, C_in, H, W)."""

    def __init__(self, c_in: int, c_out: int, hidden: int, bias: float = 2.0):
        super().__init__()
        self.c_in, self.c_out, self.hidden = c_in, c_out, hidden
        self.fc1 = nn.Conv2d(c_in, hidden, 1, bias=False)
        self.bn = nn.BatchNorm2d(hidden)
        self.fc2 = nn.Conv2d(hidden, c_out, 1, bias=True)
        for conv in (self.fc1, self.fc2):  # DGNet: every conv N(0, sqrt(2 / (k*k*out)))
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.constant_(self.fc2.bias, float(bias))  # DGNet --bias 2: gates start (mostly) open

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)  # (B, C_in, 1, 1)
        return torch.flatten(self.fc2(F.relu(self.bn(self.fc1(s)))), 1)  # (B, C_out)

    def logits_sliced(self, x: torch.Tensor, keep_in: torch.Tensor | None) -> torch.Tensor:
        """Eval-mode logits from a compact input holding only the channels ``keep_in`` (skipping path)."""
        w = _sel(self.fc1.weight, 1, keep_in)
        if x.shape[1] == 0:
            h = x.new_zeros(x.shape[0], self.hidden, 1, 1)
        else:
            h = F.conv2d(F.adaptive_avg_pool2d(x, 1), w)
        return torch.flatten(self.fc2(F.relu(self.bn(h))), 1)

    def macs(self, kept_in: int | None = None) -> int:
        return (self.c_in if kept_in is None else kept_in) * self.hidden + self.hidden * self.c_out


def gate_open(logits: torch.Tensor) -> torch.Tensor:
    """THE decision rule, used by every path (training, the masked path, the skipping path): a
    channel is open iff its logit is >= 0 (DGNet's test rule; a logit of exactly 0 is open).
    Returns 0/1 in ``logits``' dtype. The masked and skipping paths apply it to logits computed with
    different float summation orders (sliced convs, batch-size-dependent kernels), so a logit within
    a few ulps of 0 can still fall on different sides; ``skip_path_check`` measures how often."""
    return (logits >= 0).to(logits.dtype)


def relaxed_mask(logits: torch.Tensor, temperature: float, relaxation: str) -> torch.Tensor:
    """Training-time hard 0/1 mask with a straight-through gradient (B, C)."""
    if relaxation == "gumbel_st":  # DGNet GumbelSoftmax (a logistic = difference of two Gumbels)
        u = torch.rand_like(logits)
        noise = torch.log(u + 1e-8) - torch.log(1 - u + 1e-8)
        soft = torch.sigmoid((logits + noise) / temperature)
        # DGNet's soft >= 0.5, decided on the sign (float32 sigmoid rounds |x| < ~3e-8 to 0.5)
        hard = gate_open(logits + noise)
    elif relaxation == "sigmoid_st":  # deterministic: hard = test-time decision
        soft = torch.sigmoid(logits / temperature)
        hard = gate_open(logits)
    else:
        raise PruneLabError(f"sanp: relaxation {relaxation!r}; use one of {', '.join(RELAXATIONS)}")
    return hard + (soft - soft.detach())  # exactly 0/1 in value, the gradient of soft


# ----------------------------------------------------------------------------- sites and cost terms
@dataclass(frozen=True)
class Site:
    name: str  # the gated conv's module path in the base net
    c_in: int
    c_out: int
    in_gate: int | None  # the gate whose decisions thin this conv's input (VGG), else None


@dataclass(frozen=True)
class CostTerm:
    """MACs of one Conv2d / Linear for one sample = unit * kept(in_gate) * kept(out_gate), where a
    side with no gate contributes its full width (already folded into ``unit``)."""

    module: str
    unit: int
    in_gate: int | None
    out_gate: int | None


def sites(base_spec: dict) -> list[Site]:
    if base_spec["arch"] in ("resnet_cifar", "resnet_imagenet"):
        out, in_ch = [], base_spec["stem"]
        for s, stage in enumerate(base_spec["stages"]):
            for b, mid in enumerate(stage["mid"]):
                width = mid[0] if isinstance(mid, list) else mid
                out.append(Site(f"stages.{s}.{b}.conv1", in_ch, int(width), None))
                in_ch = stage["width"]
        return out
    out, in_ch, f = [], base_spec["in_channels"], 0
    for v in base_spec["cfg"]:
        if v == "M":
            f += 1
            continue
        out.append(Site(f"features.{f}", in_ch, int(v), len(out) - 1 if out else None))
        in_ch, f = int(v), f + 3
    return out


def _gating(base_spec: dict, site_list: list[Site]) -> dict[str, tuple[int | None, int | None]]:
    """(in_gate, out_gate) of every gated or gate-consuming Conv2d / Linear of the sanp model."""
    g: dict[str, tuple[int | None, int | None]] = {}
    for i, site in enumerate(site_list):
        g[f"base.{site.name}"] = (site.in_gate, i)
        g[f"gates.{i}.fc1"] = (site.in_gate, None)
    if base_spec["arch"] in ("resnet_cifar", "resnet_imagenet"):
        for i, site in enumerate(site_list):
            g["base." + site.name.replace("conv1", "conv2")] = (i, None)
    elif site_list:
        g["base.classifier.0"] = (len(site_list) - 1, None)
    return g


def _conv(x: torch.Tensor, weight: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """F.conv2d with ``conv``'s geometry; zeros when the input or output has no channels."""
    if x.shape[1] == 0 or weight.shape[0] == 0:
        (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
        h = (x.shape[2] + 2 * ph - kh) // sh + 1
        w = (x.shape[3] + 2 * pw - kw) // sw + 1
        return x.new_zeros(x.shape[0], weight.shape[0], h, w)
    return F.conv2d(x, weight, None, conv.stride, conv.padding, conv.dilation)


def _sel(t: torch.Tensor, dim: int, keep: torch.Tensor | None) -> torch.Tensor:
    """``t`` restricted to the indices ``keep`` along ``dim`` (None: every index, no copy)."""
    return t if keep is None else t.index_select(dim, keep)


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d, keep: torch.Tensor | None) -> torch.Tensor:
    """Eval-mode BN restricted to the channels ``keep`` (None: all)."""
    if x.shape[1] == 0:
        return x
    sel = [_sel(t, 0, keep) for t in (bn.running_mean, bn.running_var, bn.weight, bn.bias)]
    return F.batch_norm(x, sel[0], sel[1], sel[2], sel[3], False, 0.0, bn.eps)


# ----------------------------------------------------------------------------- the network
class SANPNet(nn.Module):
    def __init__(self, spec: dict):
        super().__init__()
        from pruning.models import build

        check_spec(spec)
        base_spec = spec["base"]
        self.kind = "vgg" if base_spec["arch"] == "vgg_cifar" else "resnet"
        self.base = build(base_spec)
        self.sites = sites(base_spec)
        reduction, min_hidden = int(spec.get("reduction", 4)), int(spec.get("min_hidden", 4))
        self.gates = nn.ModuleList(
            SPM(s.c_in, s.c_out, max(min_hidden, s.c_in // reduction), float(spec.get("gate_bias", 2.0)))
            for s in self.sites
        )
        self.temperature = float(spec.get("temperature", 2.0 / 3.0))
        self.relaxation = str(spec.get("relaxation", "gumbel_st"))
        self.gating = _gating(base_spec, self.sites)
        self.skip_batch1 = True  # eval at batch 1: compute only the kept channels
        self.force_open = False  # every gate open (dense + SPM cost): tests, the dense reference
        self.last_masks: list[torch.Tensor] = []  # per gate (B, C_out) of the last forward
        self._terms: dict[tuple[int, ...], list[CostTerm]] = {}

    # ---------------------------------------------------------------- decisions
    def decide(self, g: int, x: torch.Tensor) -> torch.Tensor:
        logits = self.gates[g](x)  # (B, C_out)
        if self.force_open:
            mask = torch.ones_like(logits)
        elif self.training:
            mask = relaxed_mask(logits, self.temperature, self.relaxation)
        else:
            mask = gate_open(logits)
        self.last_masks.append(mask)
        return mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.last_masks = []
        if not self.training and x.shape[0] == 1 and self.skip_batch1 and not self.force_open:
            return self.forward_skip(x)
        return self._forward_resnet(x) if self.kind == "resnet" else self._forward_vgg(x)

    def _forward_resnet(self, x: torch.Tensor) -> torch.Tensor:
        x = self.base.stem(x)
        g = 0
        for stage in self.base.stages:
            for block in stage:
                mask = self.decide(g, x)
                out = F.relu(block.bn1(block.conv1(x))) * mask[:, :, None, None]
                out = block.bn2(block.conv2(out))
                x = F.relu(out + block.shortcut(x))
                g += 1
        return self.base.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def _forward_vgg(self, x: torch.Tensor) -> torch.Tensor:
        feats, i, g = self.base.features, 0, 0
        while i < len(feats):
            if isinstance(feats[i], nn.Conv2d):
                mask = self.decide(g, x)
                x = F.relu(feats[i + 1](feats[i](x))) * mask[:, :, None, None]
                i, g = i + 3, g + 1
            else:
                x = feats[i](x)
                i += 1
        return self.base.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    # ---------------------------------------------------------------- the skipping path (eval, batch 1)
    def _keep(self, logits: torch.Tensor) -> torch.Tensor | None:
        """Kept channel indices of one sample; None when every channel is kept (no slicing needed)."""
        mask = gate_open(logits)  # (1, C_out)
        self.last_masks.append(mask)
        keep = mask[0].nonzero().flatten()
        return None if keep.numel() == mask.shape[1] else keep

    @torch.no_grad()
    def forward_skip(self, x: torch.Tensor) -> torch.Tensor:
        """Batch 1: only the kept channels are computed (module docstring)."""
        if x.shape[0] != 1:
            raise PruneLabError(f"the SANP skipping path runs one sample at a time, got batch {x.shape[0]}")
        self.last_masks = []
        if self.kind == "resnet":
            x = self.base.stem(x)
            g = 0
            for stage in self.base.stages:
                for block in stage:
                    keep = self._keep(self.gates[g](x))
                    y = F.relu(_bn(_conv(x, _sel(block.conv1.weight, 0, keep), block.conv1), block.bn1, keep))
                    out = block.bn2(_conv(y, _sel(block.conv2.weight, 1, keep), block.conv2))
                    x = F.relu(out + block.shortcut(x))
                    g += 1
            return self.base.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        feats, i, g, prev = self.base.features, 0, 0, None
        while i < len(feats):
            m = feats[i]
            if isinstance(m, nn.Conv2d):
                keep = self._keep(self.gates[g].logits_sliced(x, prev))
                w = _sel(_sel(m.weight, 0, keep), 1, prev)
                x = F.relu(_bn(_conv(x, w, m), feats[i + 1], keep))
                prev, i, g = keep, i + 3, g + 1
            elif x.shape[1] == 0:  # nothing kept: only the spatial size travels on
                x = x.new_zeros(1, 0, *m(x.new_zeros(1, 1, *x.shape[2:])).shape[2:])
                i += 1
            else:
                x = m(x)
                i += 1
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (1, kept)
        first = self.base.classifier[0]
        w = _sel(first.weight, 1, prev)
        x = F.linear(x, w, first.bias)
        for layer in list(self.base.classifier)[1:]:
            x = layer(x)
        return x

    # ---------------------------------------------------------------- cost
    @contextmanager
    def masked(self, open_gates: bool = False):
        """Force the masked path (and optionally every gate open) inside the block."""
        before = (self.skip_batch1, self.force_open)
        self.skip_batch1, self.force_open = False, open_gates
        try:
            yield self
        finally:
            self.skip_batch1, self.force_open = before

    def cost_terms(self, input_shape: tuple[int, ...]) -> list[CostTerm]:
        """The per-module cost units at this input shape (cached), found by one dense forward with
        count_macs's hooks; a gated side's width is divided out of the module's dense MACs."""
        key = tuple(int(v) for v in input_shape)
        if key in self._terms:
            return self._terms[key]
        names = {m: n for n, m in self.named_modules()}
        found: list[tuple[str, int, int, int]] = []  # module, dense MACs, in width, out width

        def conv_hook(m: nn.Conv2d, _inp, out):
            kh, kw = m.kernel_size
            found.append(
                (names[m], out[0].numel() * (m.in_channels // m.groups) * kh * kw, m.in_channels, m.out_channels)
            )

        def linear_hook(m: nn.Linear, _inp, out):
            found.append((names[m], m.in_features * m.out_features, m.in_features, m.out_features))

        handles = []
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                handles.append(m.register_forward_hook(conv_hook))
            elif isinstance(m, nn.Linear):
                handles.append(m.register_forward_hook(linear_hook))
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        try:
            with torch.no_grad(), self.masked(open_gates=True):
                self(torch.zeros(1, *key, device=device))
        finally:
            for h in handles:
                h.remove()
            self.train(was_training)
        terms = []
        for name, dense, c_in, c_out in found:
            in_g, out_g = self.gating.get(name, (None, None))
            unit = dense
            for gate, width in ((in_g, c_in), (out_g, c_out)):
                if gate is not None:
                    if unit % width:
                        raise RuntimeError(f"{name}: MACs {dense} not divisible by its gated width {width}")
                    unit //= width
            terms.append(CostTerm(name, unit, in_g, out_g))
        self._terms[key] = terms
        return terms

    def macs_from_masks(self, masks: list[torch.Tensor], terms: list[CostTerm]) -> torch.Tensor:
        """Per-sample MACs (B,) from per-gate masks (B, C_g): exact int64 for hard 0/1 integer
        counts (``kept`` long tensors), differentiable float when ``masks`` are ST masks."""
        kept = [m.sum(1) for m in masks]  # (B,) each
        total = None
        for t in terms:
            v = kept[0].new_full(kept[0].shape, t.unit)
            if t.in_gate is not None:
                v = v * kept[t.in_gate]
            if t.out_gate is not None:
                v = v * kept[t.out_gate]
            total = v if total is None else total + v
        return total

    def spm_macs(self) -> int:
        """The SPMs' MACs with every input channel present."""
        return int(sum(g.macs() for g in self.gates))


@torch.no_grad()
def decisions(model: SANPNet, images: torch.Tensor) -> list[torch.Tensor]:
    """Hard eval-mode decisions (B, C_g) per gate (masked path), as int64 0/1."""
    was_training = model.training
    model.eval()
    try:
        with model.masked(open_gates=model.force_open):
            model(images)
    finally:
        model.train(was_training)
    return [m.round().long() for m in model.last_masks]


@torch.no_grad()
def per_sample_macs(model: SANPNet, images: torch.Tensor) -> torch.Tensor:
    """Exact MACs of each sample's forward pass (B,) int64, from its hard decisions (SPMs included)."""
    masks = decisions(model, images)
    return model.macs_from_masks(masks, model.cost_terms(tuple(images.shape[1:])))


def build(spec: dict) -> nn.Module:
    return SANPNet(spec)


def channel_groups(spec: dict) -> list[ChannelGroup]:
    """Nothing static to prune: SANP's channels are skipped per sample."""
    return []
