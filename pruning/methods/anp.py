"""ANP-VS: Adversarial Neural Pruning with Vulnerability Suppression.

Madaan, Shin & Hwang, "Adversarial Neural Pruning with Latent Vulnerability Suppression", ICML 2020;
official code github:divyam3897/ANP_VS (HEAD 32c5e86, TF1), read for: src/model/bbdropout.py (the
mask layer), vgg.py / lenet.py (mask placement), net.py (vulnerability, KL sum), layers.py (log / logit
helpers), src/experiments/run.py (``adv_train_model`` / ``train_model``: losses, optimisers, learning
rates), memory/utils.py and flops/utils.py (the paper's memory and FLOPs numbers). Re-implemented here.

1. A beta-Bernoulli mask per mask site of the model (``mask_sites(spec)``): VGG-16 13 conv outputs
   (before BN, a_uc init 2.0) + the inputs of dense14 and dense15 (a_uc -1.0); LeNet-5-Caffe conv1 /
   conv2 outputs, fc1's 800 and fc2's 500 inputs (a_uc -1.0). b_uc 0.5413 (b = 1). Training: one
   Kumaraswamy pi per step shared by the batch, a relaxed Bernoulli per sample at temperature 0.1.
   Test: z = E[pi], entries <= 1e-3 set to 0 (kept units are scaled by E[pi]).
2. Starting from the pipeline's dense model, every step (``adv_train_model``): x_adv = PGD on the
   masked network in eval mode (E[pi] masks, BN running stats); the clean and adversarial forward
   passes in train mode draw independent masks;
     masks   (Adam, lr):       CE(x_adv) + beta KL / N_train
     weights (Adam, 0.1 lr):   (CE(x) + w CE(x_adv)) / (1 + w) + beta KL / N_train
                               + weight_decay sum(w^2) / 2 + lambda V
   with V the vulnerability (mean over the latent feature tensors of mean |z_clean - z_adv|). The
   learning rates drop x0.1 at 50% / 80% (VGG) or 50% / 70% (LeNet) of the steps. The VGG head
   dropouts are off (official 'bbd' mode); the conv-block dropouts stay on.
   Ablations: ``vs=false`` (lambda = 0: ANP without VS); ``adversarial=false`` ("BP", Bayesian
   pruning: ``train_model``, both parameter sets on CE(x) + beta KL / N_train + weight decay).
3. After training: units with E[pi] <= threshold are removed. E[pi] of the kept units is folded
   into the weights and the network is physically shrunk (``pruning.surgery.shrink``) to a
   smaller dense net of the same family (``fold_masks``); the official convention (masks applied,
   nothing removed) is measured too (``masked_top1``), with the paper's memory / FLOPs / sparsity
   numbers (``paper_numbers``).

Departures from the official code (each on purpose):
* The vulnerability uses the features of the same two train-mode passes as the CE terms; the
  official graph runs two more train-mode passes (own mask samples) for it, so BN running
  statistics are updated twice per step here instead of four times.
* The l2 term of the mask loss is dropped: it has no gradient with respect to the masks.
* BP with ``beta: null`` uses beta = 1: the official ``train_model`` has no beta weight on the KL.
* Resuming restores the masks and both optimisers (the official restore reloads only the weights).
* PGD runs in [0, 1] pixel space with the normalisation inside the attacked model
  (``pruning.attacks``): a true eps = 0.03 (~8/255) L-inf attack. The official CIFAR pipeline
  standardises each image and then clips the standardised values to [0, 1] inside PGD, so its
  "adversarial" CIFAR inputs differ from the clean ones by far more than eps (CIFAR-10 test set:
  68% of the per-image standardised values lie outside [0, 1]; 75% with our per-channel
  normalisation, where ``official_clip`` clips them). That attack is
  available for measuring the deviation: ``robustness.official_clip=true`` (evaluation, recorded as
  ``pgd40_official_clip``), and for training ``attack={..., "official_clip": True}`` (from Python or
  a method YAML that adds the key: conf/method/anp.yaml leaves it out so that existing runs keep
  their directories). MNIST inputs are in [0, 1]: there both agree.
* The pruned network is physically smaller (the official code keeps the masks). For VGG a
  removed conv channel is constant after BN + ReLU; that constant is absorbed into the consumer's
  bias, exactly for dense14 and for a 3x3 padded conv except at the image border, so the removed
  network can differ slightly from the masked one (``border_effect_channels`` counts the channels
  involved; ``masked_top1`` and ``removed_top1`` are both recorded).
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from pruning import PruneLabError, rng
from pruning.attacks import AttackSpec, capture, feature_sites, perturb, vulnerability
from pruning.cache import cached, digest
from pruning.io import load_checkpoint, load_or_quarantine, save_checkpoint, write_json
from pruning.measure import count_macs
from pruning.methods.base import Method, PruneContext, PruneResult
from pruning.methods.targets import target_record
from pruning.models import channel_groups, family
from pruning.progress import StageProgress, counted_evaluation, eval_steps
from pruning.run_plots import (
    draw_safely,
    layer_figure_width,
    legend_outside,
    new_figure,
    save_figure,
    set_layer_ticks,
)
from pruning.surgery import shrink
from pruning.train import evaluate

EULER = 0.577215664901532
SUPPORTED = "model=lenet5_caffe (MNIST / Fashion-MNIST) or model=vgg16_anp (CIFAR-10 / CIFAR-100)"
# beta (KL weight) and lambda (VS weight) of the official README commands
PER_DATA: dict[str, dict[str, Any]] = {
    "cifar10": {"beta": 2.0, "lam": 1e-4},
    "cifar100": {"beta": 1.0, "lam": 0.1},
    "mnist": {"beta": 4.0, "lam": 1e-3},
    "fashion_mnist": {
        "beta": 4.0,
        "lam": 1e-3,
        "note": "MNIST's beta / lambda: not a paper value (ANP-VS has no Fashion-MNIST runs)",
    },
}
# learning-rate drops (x0.1 each) as fractions of the total steps (run.py)
PER_MODEL_BOUNDARIES = {"vgg_anp": [0.5, 0.8], "lenet": [0.5, 0.7]}
VARIANTS = ("anp_vs", "anp", "bp")


# ----------------------------------------------------------------------------- the mask layer
def _log(x: torch.Tensor) -> torch.Tensor:
    return torch.log(x + 1e-20)  # layers.py: log(x + 1e-20)


def _logit(x: torch.Tensor) -> torch.Tensor:
    return _log(x) - _log(1.0 - x)


def _broadcast(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """z (B or 1, units) shaped to multiply x: features (B, units), channels (B, units, H, W) or
    the flattened features of a map (B, C, H, W) with C*H*W = units (LeNet's fc1 input)."""
    units = z.shape[1]
    if x.dim() == 2 and x.shape[1] == units:
        return z
    if x.dim() == 4 and x.shape[1] == units:
        return z.view(z.shape[0], units, 1, 1)
    if x.dim() >= 2 and x[0].numel() == units:
        return z.view(z.shape[0], *x.shape[1:])
    raise PruneLabError(f"a mask of {units} units cannot multiply activations of shape {tuple(x.shape)}")


class BetaBernoulliMask(nn.Module):
    """The official ``BBDropout``: pi ~ Kumaraswamy(a, b) per unit, z ~ Bernoulli(pi) relaxed at
    temperature 0.1 per sample while training; z = E[pi] (<= threshold: 0) at test time; the prior
    on pi is Beta(alpha, 1)."""

    def __init__(
        self,
        units: int,
        a_uc_init: float = -1.0,
        alpha: float = 1e-4,
        threshold: float = 1e-3,
        temperature: float = 0.1,
    ):
        super().__init__()
        self.units, self.alpha, self.threshold, self.temperature = (
            int(units),
            float(alpha),
            float(threshold),
            temperature,
        )
        self.a_uc = nn.Parameter(torch.full((self.units,), float(a_uc_init)))
        self.b_uc = nn.Parameter(torch.full((self.units,), 0.5413))

    def a(self) -> torch.Tensor:
        return F.softplus(self.a_uc.clamp(min=-10.0))

    def b(self) -> torch.Tensor:
        return F.softplus(self.b_uc.clamp(-10.0, 50.0))

    def expected_pi(self) -> torch.Tensor:
        """E[pi] = b B(1 + 1/a, b) of Kumaraswamy(a, b), (units,)."""
        a, b = self.a(), self.b()
        return b * torch.exp(torch.lgamma(1 + 1 / a) + torch.lgamma(b) - torch.lgamma(1 + 1 / a + b))

    def kl(self) -> torch.Tensor:
        """KL(Kumaraswamy(a, b) || Beta(alpha, 1)), summed over the units."""
        a, b = self.a(), self.b()
        kl = (1 - self.alpha / a) * (-EULER - torch.digamma(b) - 1 / b) + _log(a * b / self.alpha) - (b - 1) / b
        return kl.sum()

    def sample_pi(self) -> torch.Tensor:
        """One Kumaraswamy draw per unit (units,), shared by the whole batch."""
        u = torch.rand(self.units, device=self.a_uc.device) * (1 - 2e-10) + 1e-10  # U(1e-10, 1 - 1e-10)
        return (1 - u.pow(1 / self.b())).pow(1 / self.a())

    def sample(self, n: int) -> torch.Tensor:
        """Training masks (n, units): a relaxed Bernoulli(pi) per sample, temperature 0.1."""
        pi = self.sample_pi()
        u = torch.rand(n, self.units, device=pi.device)
        return torch.sigmoid((_logit(u) + _logit(pi)) / self.temperature)

    def test_z(self) -> torch.Tensor:
        e = self.expected_pi()
        return torch.where(e > self.threshold, e, torch.zeros_like(e))

    def n_active(self) -> int:
        return int((self.expected_pi() > self.threshold).sum())

    def forward(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        z = self.sample(x.shape[0]) if training else self.test_z().unsqueeze(0)
        return x * _broadcast(z, x)


def a_uc_init(spec: dict, kind: str) -> float:
    """2.0 for the VGG conv masks (vgg.py ``a_uc_init=2.0``), the class default -1.0 elsewhere."""
    return 2.0 if spec["arch"] == "vgg_anp" and kind == "output" else -1.0


class MaskSet:
    """The masks of one model, attached at its ``mask_sites`` by forward hooks ("output") or forward
    pre-hooks ("input"). A mask samples when its host module is in train mode, so ``model.eval()``
    (the attack, ``evaluate``) switches every mask to E[pi]. The masks are not submodules of the
    model: its state dict and ``shrink`` see the plain network."""

    def __init__(self, model: nn.Module, alpha: float = 1e-4, threshold: float = 1e-3):
        spec = model.spec
        fam = family(spec)
        if not hasattr(fam, "mask_sites"):
            raise PruneLabError(f"arch {spec['arch']!r} has no ANP mask sites; ANP supports {SUPPORTED}")
        self.model = model
        self.sites = [(str(n), str(k), int(u)) for n, k, u in fam.mask_sites(spec)]
        self.masks = nn.ModuleList(
            BetaBernoulliMask(units, a_uc_init(spec, kind), alpha, threshold) for _, kind, units in self.sites
        )
        self.handles: list = []

    def attach(self) -> MaskSet:
        self.detach()
        modules = dict(self.model.named_modules())
        for (name, kind, _), mask in zip(self.sites, self.masks, strict=True):
            if name not in modules:
                raise PruneLabError(f"mask site {name!r} is not a module of {type(self.model).__name__}")
            if kind == "output":
                self.handles.append(modules[name].register_forward_hook(_output_hook(mask)))
            elif kind == "input":
                self.handles.append(modules[name].register_forward_pre_hook(_input_hook(mask)))
            else:
                raise PruneLabError(f"mask site {name!r}: kind {kind!r} is not 'output' or 'input'")
        return self

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def parameters(self) -> list[nn.Parameter]:
        return list(self.masks.parameters())

    def kl(self) -> torch.Tensor:
        return torch.stack([m.kl() for m in self.masks]).sum()

    @torch.no_grad()
    def expected(self) -> list[torch.Tensor]:
        return [m.expected_pi().detach() for m in self.masks]

    def n_active(self) -> list[int]:
        with torch.no_grad():
            return [m.n_active() for m in self.masks]

    def to(self, device) -> MaskSet:
        self.masks.to(device)
        return self


def _output_hook(mask: BetaBernoulliMask):
    def hook(module: nn.Module, _inputs, out: torch.Tensor) -> torch.Tensor:
        return mask(out, module.training)

    return hook


def _input_hook(mask: BetaBernoulliMask):
    def hook(module: nn.Module, args: tuple) -> tuple:
        return (mask(args[0], module.training), *args[1:])

    return hook


def head_dropouts(model: nn.Module) -> list[nn.Module]:
    """Dropouts that the official 'bbd' mode switches off: VGG's two head dropouts (vgg.py applies
    them in 'base' mode only); the conv-block dropouts stay on."""
    if model.spec["arch"] == "vgg_anp":
        return [model.classifier[0], model.classifier[4]]
    return []


def train_mode(model: nn.Module) -> None:
    model.train()
    for m in head_dropouts(model):
        m.eval()


# ----------------------------------------------------------------------------- folding / removal
def _kept(alive: torch.Tensor, score: torch.Tensor) -> list[int]:
    """Indices of the alive units; none alive: the one with the largest score (a layer keeps >= 1)."""
    idx = alive.nonzero().flatten().tolist()
    return idx if idx else [int(torch.argmax(score))]


@torch.no_grad()
def fold_masks(model: nn.Module, expected: list[torch.Tensor], threshold: float = 1e-3):
    """(folded, keep, info): ``folded`` is a copy of ``model`` (no masks attached) whose weights carry
    the test-time masks z = E[pi] (0 where <= threshold), so that it computes what the masked
    network computes in eval mode; ``keep`` are the channel-group indices that survive (for
    ``shrink``), and ``folded``'s biases already absorb what the removed units contributed.

    LeNet: removal is exact (a removed unit outputs 0 after ReLU, or all its consumer's columns are
    masked). VGG: a conv channel masked before BN outputs the constant relu(BN(0)); it is absorbed
    into dense14's bias (exact) or the next conv's bias (exact except where the 3x3 window overlaps
    the zero padding; ``info['border_effect_channels']`` counts such channels with a non-zero constant)."""
    folded = copy.deepcopy(model).eval()
    expected = [e.detach().to(next(model.parameters()).device).float() for e in expected]
    z = [torch.where(e > threshold, e, torch.zeros_like(e)) for e in expected]
    arch = model.spec["arch"]
    if arch == "lenet":
        keep, info = _fold_lenet(folded, z, expected)
    elif arch == "vgg_anp":
        keep, info = _fold_vgg(folded, z, expected)
    else:
        raise PruneLabError(f"arch {arch!r}: no ANP folding rule; ANP supports {SUPPORTED}")
    names = [g.name for g in channel_groups(model.spec)]
    if sorted(keep) != sorted(names):
        raise RuntimeError(f"ANP keep covers {sorted(keep)}, channel groups are {sorted(names)}")
    return folded, keep, info


def _fold_lenet(net: nn.Module, z: list[torch.Tensor], e: list[torch.Tensor]):
    m1, m2, m3, m4 = z
    c2 = net.conv2.out_channels
    m3c = m3.view(c2, -1)  # (C2, 16): conv2 channel c owns flattened features [16c, 16c + 16)
    keep = {
        "conv1": _kept(m1 > 0, e[0]),
        "conv2": _kept((m2 > 0) & (m3c > 0).any(1), e[1] * e[2].view(c2, -1).max(1).values),
        "fc1": _kept(m4 > 0, e[3]),
    }
    for conv, m in ((net.conv1, m1), (net.conv2, m2)):  # mask on the conv output, before ReLU
        conv.weight.mul_(m.view(-1, 1, 1, 1))
        conv.bias.mul_(m)
    net.fc1.weight.mul_(m3c.unsqueeze(0))  # (H, C2, 16) x (1, C2, 16): fc1's input mask
    net.fc2.weight.mul_(m4.view(1, -1))  # fc2's input mask
    return keep, {"border_effect_channels": 0, "absorbed_channels": 0}


def _fold_vgg(net: nn.Module, z: list[torch.Tensor], e: list[torch.Tensor]):
    modules = dict(net.named_modules())
    sites = family(net.spec).mask_sites(net.spec)
    convs = [name for name, kind, _ in sites if kind == "output"]
    n = len(convs)
    m, m14, m15 = z[:n], z[n], z[n + 1]
    dense14, dense15 = net.classifier[1], net.classifier[5]
    keep: dict[str, list[int]] = {}
    for k, name in enumerate(convs):
        alive, score = m[k] > 0, e[k]
        if k == n - 1:  # conv13's only consumer is dense14, whose input mask may remove the channel
            alive, score = alive & (m14 > 0), e[k] * e[n]
        keep[name] = _kept(alive, score)
    keep["classifier.fc0"] = _kept(m15 > 0, e[n + 1])
    border = absorbed = 0
    for k, name in enumerate(convs):  # removed channels masked before BN: relu(BN(0)) is a constant
        removed = torch.ones_like(m[k], dtype=torch.bool)
        removed[keep[name]] = False
        removed &= m[k] == 0
        if not removed.any():
            continue
        bn = modules[f"features.{int(name.split('.')[1]) + 1}"]
        t = bn.bias - bn.weight * bn.running_mean / torch.sqrt(bn.running_var + bn.eps)
        r = torch.relu(t) * removed  # (C,), 0 for the kept channels
        absorbed += int((r != 0).sum())
        if k + 1 < n:  # next conv (unscaled weights: its own mask scales the absorbed bias below)
            nxt = modules[convs[k + 1]]
            nxt.bias.add_(nxt.weight.sum((2, 3)) @ r)  # exact away from the zero-padded border
            border += int((r != 0).sum())
        else:  # dense14, through its input mask
            dense14.bias.add_(dense14.weight @ (r * m14))
    for k, name in enumerate(convs):  # mask on the conv output before BN: scales weight and bias
        conv = modules[name]
        conv.weight.mul_(m[k].view(-1, 1, 1, 1))
        conv.bias.mul_(m[k])
    dense14.weight.mul_(m14.view(1, -1))
    dense15.weight.mul_(m15.view(1, -1))
    return keep, {"border_effect_channels": border, "absorbed_channels": absorbed}


def remove_units(model: nn.Module, expected: list[torch.Tensor], threshold: float = 1e-3):
    """(the physically smaller network, keep, info): ``fold_masks`` then ``shrink``."""
    folded, keep, info = fold_masks(model, expected, threshold)
    return shrink(folded, keep), keep, info


# ----------------------------------------------------------------------------- paper numbers
# Re-implementations of the official experiments/memory/utils.py and flops/utils.py counts, driven by
# n_active = #{E[pi] > threshold} per mask site (run.py test_model).
def _out(h: float, k: int, pad: int, stride: int = 1) -> float:
    return (h - k + 2 * pad) / stride + 1  # true division, as the official Python 3 code


def _mem_conv(h: float, c_in: int, c_out: int, k: int, pad: int = 0, bn: bool = False) -> float:
    n = k * k * c_in
    o = _out(h, k, pad)
    return n * o * o + n * c_out + (2 * c_out if bn else 0)  # patch matrix + kernel (+ BN gamma, beta)


def _mem_dense(n_in: int, n_out: int, bn: bool = False) -> float:
    return n_in * n_out + n_out + (2 * n_in if bn else 0)


def _flops_conv(h: float, c_in: int, c_out: int, k: int, pad: int = 0) -> float:
    o = _out(h, k, pad)
    per_channel = o * o * (2 * k * k * c_in - 1)
    return c_out * per_channel + 2 * c_out * o * o  # + bias + activation, one each per output


def _flops_pool(h: float, c: int, k: int = 2) -> float:
    o = _out(h, k, 0, stride=k)
    return c * o * o * k * k


def _flops_dense(n_in: int, n_out: int, activation: bool = True) -> float:
    return (2 * n_in - 1) * n_out + n_out + (n_out if activation else 0)


def lenet_memory(units: list[int], num_classes: int = 10, side: int = 28) -> float:
    h1 = _out(side, 5, 0)
    return (
        _mem_conv(side, 1, units[0], 5)
        + _mem_conv(h1 / 2, units[0], units[1], 5)
        + _mem_dense(units[2], units[3])
        + _mem_dense(units[3], num_classes)
    )


def lenet_flops(units: list[int], num_classes: int = 10, side: int = 28) -> float:
    h1 = _out(side, 5, 0)
    h2 = _out(h1 / 2, 5, 0)
    return (
        _flops_conv(side, 1, units[0], 5)
        + _flops_pool(h1, units[0])
        + _flops_conv(h1 / 2, units[0], units[1], 5)
        + _flops_pool(h2, units[1])
        + _flops_dense(units[2], units[3])
        + _flops_dense(units[3], num_classes, activation=False)  # no activation term on the logits
    )


def _vgg_layout(cfg: list, side: int) -> tuple[list[float], list[bool]]:
    """Input side of every conv and whether a 2x2 pool follows it (32x32: 32,32,16,16,8,8,8,4,...)."""
    sides, pooled, h = [], [], float(side)
    for v in cfg:
        if v == "M":
            pooled[-1] = True
            h /= 2
        else:
            sides.append(h)
            pooled.append(False)
    return sides, pooled


def vgg_memory(units: list[int], num_classes: int, cfg: list, side: int = 32) -> float:
    """Official ``vgg_memory``, QUIRK INCLUDED: its two dense-layer terms sit inside the loop over
    the 13 convs, so they are added once per conv (13 times); reproduced so that the numbers are
    comparable with the paper's Memory column."""
    sides, _ = _vgg_layout(cfg, side)
    n = len(sides)
    c = [3, *units]
    mem = 0.0
    for i in range(n):
        mem += _mem_conv(sides[i], c[i], c[i + 1], 3, pad=1, bn=True)
        mem += _mem_dense(units[n], units[n + 1], bn=True)  # the quirk: inside the conv loop
        mem += _mem_dense(units[n + 1], num_classes)
    return mem


def vgg_flops(units: list[int], num_classes: int, cfg: list, side: int = 32) -> float:
    sides, pooled = _vgg_layout(cfg, side)
    n = len(sides)
    c = [3, *units]
    flops = 0.0
    for i in range(n):
        flops += _flops_conv(sides[i], c[i], c[i + 1], 3, pad=1)
        if pooled[i]:
            flops += _flops_pool(sides[i], c[i + 1])
    return flops + _flops_dense(units[n], units[n + 1]) + _flops_dense(units[n + 1], num_classes)


def paper_numbers(spec: dict, n_active: list[int], side: int | None = None) -> dict[str, float]:
    """The paper's Sparsity % (pruned units at the mask sites), Memory % and FLOPs speed-up x
    (run.py ``test_model``), from the active units per mask site."""
    dense = [int(u) for _, _, u in family(spec).mask_sites(spec)]
    if len(n_active) != len(dense):
        raise PruneLabError(f"{len(n_active)} active-unit counts for {len(dense)} mask sites")
    if spec["arch"] == "lenet":
        side = 28 if side is None else side
        mem_p, mem_d = (lenet_memory(u, spec["num_classes"], side) for u in (n_active, dense))
        flops_p, flops_d = (lenet_flops(u, spec["num_classes"], side) for u in (n_active, dense))
    elif spec["arch"] == "vgg_anp":
        side = 32 if side is None else side
        mem_p, mem_d = (vgg_memory(u, spec["num_classes"], spec["cfg"], side) for u in (n_active, dense))
        flops_p, flops_d = (vgg_flops(u, spec["num_classes"], spec["cfg"], side) for u in (n_active, dense))
    else:
        raise PruneLabError(f"arch {spec['arch']!r}: no paper memory / FLOPs formula; ANP supports {SUPPORTED}")
    return {
        "paper_unit_sparsity": 100.0 - 100.0 * sum(n_active) / sum(dense),
        "paper_memory_pct": 100.0 * mem_p / mem_d,
        "paper_flops_speedup": flops_d / flops_p if flops_p > 0 else None,  # None: every unit pruned
        "paper_units_dense": sum(dense),
    }


# ----------------------------------------------------------------------------- the picture
def masks_title(variant: str, arch: Any, data: Any, masked_top1: float | None, removed_top1: float | None) -> str:
    """The title of ``anp_masks.png`` (also used by ``scripts/replot_run_figures.py``)."""
    top1 = [f"masked top-1 {masked_top1:.2f}%" if masked_top1 is not None else None]
    top1.append(f"after removal {removed_top1:.2f}%" if removed_top1 is not None else None)
    return f"ANP ({variant}) {arch} on {data}" + "".join(f", {s}" for s in top1 if s)


def plot_masks(record: dict, path: Path, title: str, threshold: float | None = None) -> Any:
    """``anp_masks.png`` from an ``anp_masks.json`` record: per mask site (named on the x axis) the
    units kept (E[pi] > threshold) against the dense count, the distribution of E[pi] on a log scale
    with the removal threshold, and (when recorded) the unit sparsity and masked top-1 per epoch.
    Returns the Figure."""
    import numpy as np

    threshold = float(record.get("threshold", 1e-3) if threshold is None else threshold)
    sites = [tuple(s) for s in record["sites"]]
    expected = [np.asarray(e, dtype=float) for e in record["expected_pi"]]
    names = [f"{module} ({kind})" for module, kind, _ in sites]
    dense = np.array([int(units) for _, _, units in sites])
    kept = np.array([int((e > threshold).sum()) for e in expected])
    history = record.get("history") or []
    n_rows = 3 if history else 2
    figure = new_figure(layer_figure_width(len(sites), per_layer=0.5, lo=8.0), 10.0 if history else 7.0)
    axes = figure.subplots(n_rows, 1, gridspec_kw={"height_ratios": [2, 2.4, 1.6][:n_rows]})
    top, mid = axes[0], axes[1]
    xs = np.arange(len(sites))
    top.bar(xs, np.ones(len(sites)), color="lightgray", label="dense (100%)")
    top.bar(xs, kept / dense, color="C0", label=f"kept: E[π] > {threshold:g}")
    for x, (k, d) in enumerate(zip(kept, dense, strict=True)):
        top.annotate(
            f"{k}/{d}\n({100 * (1 - k / d):.1f}% pruned)",
            (x, 1.0),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            fontsize=8 if len(sites) <= 12 else 6,
        )
    top.set_ylim(0, 1.3)
    top.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    top.set_ylabel("kept fraction of units")
    set_layer_ticks(top, names)
    total = 100 * (1 - kept.sum() / dense.sum())
    top.set_title(
        f"units kept per mask site: {kept.sum()}/{dense.sum()} in all ({total:.1f}% of the units pruned)", fontsize=9
    )
    legend_outside(top)

    floor = max(1e-8, min(threshold / 10, min((float(e.min()) for e in expected if e.size), default=1.0) / 2))
    rng = np.random.default_rng(0)
    mid.boxplot(
        [np.clip(e, floor, None) for e in expected],
        positions=xs,
        widths=0.6,
        showfliers=False,
        medianprops={"color": "C1"},
    )
    for x, e in zip(xs, expected, strict=True):
        show = e if e.size <= 2000 else rng.choice(e, 2000, replace=False)
        mid.scatter(
            x + rng.uniform(-0.25, 0.25, show.size),
            np.clip(show, floor, None),
            s=3,
            alpha=0.3,
            color="C0",
            linewidths=0,
        )
    mid.axhline(threshold, color="C3", ls="--", lw=1.0, label=f"removal threshold {threshold:g}")
    mid.plot([], [], color="C1", label="median")
    mid.scatter([], [], s=12, color="C0", alpha=0.6, label="one unit")
    mid.set_yscale("log")
    mid.set_ylim(floor / 1.5, 1.5)
    mid.set_ylabel("E[π] (test-time mask)")
    set_layer_ticks(mid, names)
    mid.set_xlabel("mask site (module, masked side)")
    near = sum(int(((e > threshold) & (e <= 5 * threshold)).sum()) for e in expected)
    mid.set_title(
        f"E[π] per unit (units at or below the threshold are removed; {near} kept units lie within 5x of it)",
        fontsize=9,
    )
    legend_outside(mid)

    if history:
        bottom = axes[2]
        epochs = [h["epoch"] for h in history]
        if all("units_active" in h for h in history):
            sparsity = [100 * (1 - sum(h["units_active"]) / dense.sum()) for h in history]
            bottom.plot(epochs, sparsity, "o-", color="C0", label="units pruned (%)")
            upper = max(1.0, 1.15 * max(sparsity))
            bottom.set_ylim(-0.04 * upper, upper)
        bottom.set_ylabel("units pruned (%)")
        bottom.set_xlabel("epoch")
        bottom.set_xticks(epochs if len(epochs) <= 20 else epochs[:: -(-len(epochs) // 20)])
        lines, labels = bottom.get_legend_handles_labels()
        if all("masked_top1" in h for h in history):
            twin = bottom.twinx()
            twin.plot(epochs, [h["masked_top1"] for h in history], "s--", color="C2", label="masked top-1 (%)")
            twin.set_ylabel("masked top-1 (%)")
            more = twin.get_legend_handles_labels()
            lines, labels = lines + more[0], labels + more[1]
        bottom.set_title("per training epoch", fontsize=9)
        bottom.legend(
            lines, labels, loc="upper left", bbox_to_anchor=(1.12, 1.0), borderaxespad=0.0, fontsize=8, frameon=False
        )
    figure.suptitle(title, fontsize=10)
    save_figure(figure, path)
    return figure


# ----------------------------------------------------------------------------- the method
def _fraction_list(value: Any, what: str) -> list[float]:
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        raise PruneLabError(f"{what}={value!r} is not a list of numbers; e.g. {what}=[0.5,0.8]") from None
    if not out or any(not 0.0 < v <= 1.0 for v in out) or out != sorted(out):
        raise PruneLabError(f"{what}={value!r}: increasing fractions of the total steps in (0, 1], e.g. [0.5,0.8]")
    return out


class ANP(Method):
    name = "anp"
    needs_pretrained = True  # starts from the standard dense model (official: results/<net>/<data>/default/base)

    def __init__(
        self,
        adversarial: bool = True,
        vs: bool = True,
        beta: float | None = None,
        lam: float | None = None,
        data_name: str | None = None,
        epochs: int = 200,
        batch_size: int = 64,
        lr: float = 0.01,
        boundaries: list | None = None,
        adv_weight: float = 2.0,
        weight_decay: float = 1e-4,
        attack: dict | None = None,
        threshold: float = 1e-3,
        alpha: float = 1e-4,
        per_data: dict | None = None,
        kl_n: int | None = None,
        **_: Any,
    ):
        self.adversarial, self.vs = bool(adversarial), bool(vs) and bool(adversarial)
        self.data_name = None if data_name is None else str(data_name)
        self.per_data = {**copy.deepcopy(PER_DATA), **copy.deepcopy(dict(per_data or {}))}
        self._beta_cfg, self._lam_cfg = beta, lam
        self.beta = self.lam = None
        self.per_data_note = None
        for what, v in (("method.beta", beta), ("method.lam", lam)):
            if v is not None:
                try:
                    ok = float(v) >= 0 and math.isfinite(float(v))
                except (TypeError, ValueError):
                    ok = False
                if not ok:
                    raise PruneLabError(f"{what}={v!r} must be a number >= 0 (or null: the per-data paper value)")
        checks = (
            ("method.epochs", epochs, int, lambda v: v >= 1, ">= 1 (official: 200)"),
            ("method.batch_size", batch_size, int, lambda v: v >= 1, ">= 1 (official: 64)"),
            ("method.lr", lr, float, lambda v: v > 0, "> 0 (official init_lr 0.01)"),
            ("method.adv_weight", adv_weight, float, lambda v: v >= 0, ">= 0 (official: 2)"),
            ("method.weight_decay", weight_decay, float, lambda v: v >= 0, ">= 0 (official: 1e-4)"),
            ("method.threshold", threshold, float, lambda v: 0 < v < 1, "in (0, 1) (official: 1e-3)"),
            ("method.alpha", alpha, float, lambda v: v > 0, "> 0 (official prior Beta(1e-4, 1))"),
        )
        values = {}
        for what, v, cast, ok, hint in checks:
            try:
                x = cast(v)
                good = ok(x) and (cast is int and float(v) == x or cast is float and math.isfinite(x))
            except (TypeError, ValueError):
                good = False
            if not good:
                raise PruneLabError(f"{what}={v!r} must be {hint}")
            values[what.split(".")[1]] = x
        self.epochs, self.batch_size, self.lr = values["epochs"], values["batch_size"], values["lr"]
        self.adv_weight, self.weight_decay = values["adv_weight"], values["weight_decay"]
        self.threshold, self.alpha = values["threshold"], values["alpha"]
        self.boundaries = None if boundaries is None else _fraction_list(boundaries, "method.boundaries")
        self.kl_n = None
        if kl_n is not None:
            try:
                self.kl_n = int(kl_n)
                bad = self.kl_n < 1 or float(kl_n) != self.kl_n
            except (TypeError, ValueError):
                bad = True
            if bad:
                raise PruneLabError(
                    f"method.kl_n={kl_n!r} must be an integer >= 1 (the N of beta*KL/N; null: the training set size)"
                )
        self.attack: AttackSpec | None = None
        if self.adversarial:
            if attack is None:
                raise PruneLabError(
                    "method.attack is required for adversarial ANP: e.g. method.attack.eps=0.03 "
                    "method.attack.step=0.007 method.attack.steps=10 (or method.adversarial=false for BP)"
                )
            try:
                self.attack = AttackSpec(
                    "pgd",
                    eps=float(attack["eps"]),
                    step=float(attack["step"]),
                    steps=int(attack["steps"]),
                    # the official CIFAR attack (pruning/attacks.py); absent from the YAML: false
                    official_clip=attack.get("official_clip", False) is True,
                )
            except PruneLabError as e:
                raise PruneLabError(f"method.attack: {e}") from None
            except (KeyError, TypeError, ValueError):
                raise PruneLabError(
                    f"method.attack={attack!r} needs numbers eps, step, steps; e.g. method.attack.eps=0.03 "
                    "method.attack.step=0.007 method.attack.steps=10"
                ) from None
        if self.data_name is not None:
            self.resolve(self.data_name)

    # ------------------------------------------------------------------ identity
    @property
    def variant(self) -> str:
        if not self.adversarial:
            return "bp"
        return "anp_vs" if self.vs else "anp"

    def resolve(self, data_name: str) -> None:
        """beta / lambda from the per-data table where the config leaves them null."""
        row = self.per_data.get(data_name) or {}
        beta, lam = self._beta_cfg, self._lam_cfg
        if beta is None:
            if not self.adversarial:
                beta = 1.0  # official train_model: CE + KL / N_train + l2 (no beta weight)
            elif "beta" in row:
                beta = row["beta"]
            else:
                raise PruneLabError(
                    f"method=anp has no paper beta for data={data_name} (known: {', '.join(sorted(self.per_data))}); "
                    "set method.beta=... and method.lam=... (e.g. CIFAR-10's method.beta=2 method.lam=1e-4)"
                )
        if lam is None:
            if not self.vs:
                lam = 0.0
            elif "lam" in row:
                lam = row["lam"]
            else:
                raise PruneLabError(
                    f"method=anp has no paper lambda for data={data_name} (known: {', '.join(sorted(self.per_data))}); "
                    "set method.lam=... (e.g. CIFAR-10's method.lam=1e-4)"
                )
        self.beta, self.lam = float(beta), float(lam) if self.vs else 0.0
        self.per_data_note = row.get("note") if (self._beta_cfg is None or self._lam_cfg is None) else None
        self.data_name = data_name

    def key(self) -> dict[str, Any]:
        return {"variant": self.variant, "ratio": None}

    def tag(self) -> str:
        return self.variant

    def settings(self) -> dict[str, Any]:
        return {
            "beta": self.beta,
            "lam": self.lam,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "boundaries": self.boundaries,
            "adv_weight": self.adv_weight if self.adversarial else None,
            "weight_decay": self.weight_decay,
            "attack": self.attack.describe() if self.attack is not None else None,
            "threshold": self.threshold,
            "alpha": self.alpha,
            **({"kl_n": self.kl_n} if self.kl_n is not None else {}),
        }

    def validate(self, model_name: str, spec: dict) -> None:
        arch = spec.get("arch")
        try:
            fam = family(spec)
        except PruneLabError:
            fam = None
        if fam is None or not hasattr(fam, "mask_sites") or arch not in PER_MODEL_BOUNDARIES:
            raise PruneLabError(
                f"method=anp does not support model={model_name} (arch {arch!r}: no beta-Bernoulli mask sites); "
                f"use {SUPPORTED}"
            )
        if self.boundaries is None:
            self.boundaries = list(PER_MODEL_BOUNDARIES[arch])

    # ------------------------------------------------------------------ prune
    def prune(self, model: nn.Module, ctx: PruneContext) -> PruneResult:
        if ctx.data is None:
            raise PruneLabError("ANP trains its masks on data: PruneContext.data is required")
        if self.beta is None or self.lam is None:
            self.resolve(self.data_name or ctx.data.name)
        if self.boundaries is None:
            self.validate(model.spec["arch"], model.spec)
        device = torch.device(ctx.device)
        dense = copy.deepcopy(model).to(device)
        masks = MaskSet(dense, self.alpha, self.threshold).to(device)
        learnt = self.cached_training(dense, masks, ctx)
        expected = masks.expected()
        n_active = masks.n_active()
        pruned, keep, info = remove_units(dense, expected, self.threshold)
        with counted_evaluation("ANP evaluation (units removed)", ctx.data, 256, quiet=ctx.quiet, say=ctx.say) as data:
            removed_top1 = evaluate(pruned, data, 256, device=device)["top1"]
        side = int(ctx.input_shape[-1])
        units = sum(u for _, _, u in masks.sites)
        pruned_fraction = 1.0 - sum(n_active) / units if units else 0.0
        # ANP-VS asks for no amount: its masks decide. What it must do is remove something.
        target = target_record(
            "pruned_units", None, pruned_fraction, sum(n_active) < units, "achieved > 0 (some unit removed)"
        )
        if not target["met"]:
            ctx.say(
                f"warning: ANP ({self.variant}): 0 of {units} units pruned (no E[pi] <= {self.threshold:g}): "
                "the network is not pruned (more epochs, or a stronger KL: a larger method.beta or a smaller "
                "method.kl_n, may help)"
            )
        extras: dict[str, Any] = {
            "target": target,
            "variant": self.variant,
            "beta": self.beta,
            "lam": self.lam,
            **({"per_data_note": self.per_data_note} if self.per_data_note else {}),
            "mask_sites": [name for name, _, _ in masks.sites],
            "units_dense": [u for _, _, u in masks.sites],
            "units_active": n_active,
            "kept_per_group": {name: len(idx) for name, idx in keep.items()},
            **paper_numbers(dense.spec, n_active, side),
            "masked_top1": learnt["masked_top1"],
            "removed_top1": removed_top1,
            "removal_gap": learnt["masked_top1"] - removed_top1,
            **info,
            "kl": learnt.get("kl"),
            "anp_cached": learnt["cached"],
        }
        if ctx.work_dir is not None:
            record = {
                "variant": self.variant,
                "threshold": self.threshold,
                "sites": [list(s) for s in masks.sites],
                "expected_pi": [[round(float(v), 6) for v in e] for e in expected],
                "history": learnt["history"],
            }
            write_json(Path(ctx.work_dir) / "anp_masks.json", record)
            draw_safely(
                plot_masks,
                record,
                Path(ctx.work_dir) / "anp_masks.png",
                masks_title(self.variant, model.spec.get("arch"), ctx.data.name, learnt["masked_top1"], removed_top1),
                say=ctx.say,
                what="anp_masks.png",
            )
        # Training cost: forward MACs of the (dense, masked) network times the forward passes per
        # training sample: clean + adversarial + one per PGD step (ANP), 1 (BP). Backward passes are
        # not counted, as for every other stage (samples x forward MACs).
        passes = 2 + self.attack.steps if self.adversarial else 1
        own_stage = {
            "name": "anp",
            "epochs": self.epochs,
            "samples": learnt["samples"],
            "macs_per_sample": count_macs(model, tuple(ctx.input_shape)) * passes,
            "forward_passes_per_sample": passes,
            "wall_s": learnt["wall_s"],
            "top1": learnt["masked_top1"],
            "cached": bool(learnt["cached"]),
        }
        return PruneResult(model=pruned, spec=pruned.spec, keep=keep, extras=extras, own_stage=own_stage)

    # ------------------------------------------------------------------ training (cached)
    def identity(self, model: nn.Module, ctx: PruneContext) -> dict[str, Any]:
        data = ctx.data
        return {
            "source": ctx.source_id,
            "seed": ctx.seed,
            "input_shape": list(ctx.input_shape),
            "spec": model.spec,
            "data": {"name": data.name, "train_size": len(data.train)},
            "variant": self.variant,
            "settings": self.settings(),
        }

    def cached_training(self, model: nn.Module, masks: MaskSet, ctx: PruneContext) -> dict:
        """Train (or load from ``<cache_dir>/anp/<source>-<digest>``) the weights and masks, which are
        loaded into ``model`` and ``masks``. Checkpointed every epoch in the run directory."""
        work = Path(ctx.work_dir) if ctx.work_dir is not None else None
        if ctx.cache_dir is None or ctx.source_id is None:
            return {**self.train(model, masks, ctx, work), "cached": False}
        entry_dir = Path(ctx.cache_dir) / "anp" / f"{ctx.source_id}-{self.variant}-{digest(self.identity(model, ctx))}"

        def load(entry: Path) -> dict:
            state = load_checkpoint(entry / "anp.pt", map_location=ctx.device)
            model.load_state_dict(state["model"])
            masks.masks.load_state_dict(state["masks"])
            return {**state["result"], "cached": entry.name}

        def build(entry: Path) -> dict:
            result = self.train(model, masks, ctx, work if work is not None else entry)
            save_checkpoint(
                entry / "anp.pt", {"model": model.state_dict(), "masks": masks.masks.state_dict(), "result": result}
            )
            write_json(entry / "identity.json", self.identity(model, ctx))
            return {**result, "cached": False}

        result, hit = cached(entry_dir, load=load, build=build, files=("anp.pt",), say=ctx.say, what="cached ANP")
        if hit and not ctx.quiet:
            ctx.say(f"ANP: cached ({entry_dir.name})")
        return result

    def train(self, model: nn.Module, masks: MaskSet, ctx: PruneContext, work: Path | None) -> dict:
        """The official ``adv_train_model`` (BP: ``train_model``) on ``model`` with ``masks``,
        checkpointed every epoch in ``work`` (resumed when a checkpoint of the same run is there)."""
        data, device = ctx.data, torch.device(ctx.device)
        model.to(device)
        masks.to(device)
        masks.attach()
        weights = list(model.parameters())
        mask_params = masks.parameters()
        opt_mask = torch.optim.Adam(mask_params, lr=self.lr)
        opt_w = torch.optim.Adam(weights, lr=0.1 * self.lr)
        n_train = len(data.train)
        steps_per_epoch = max(1, n_train // self.batch_size)  # official n_train_batches = N // batch
        bounds = [int(steps_per_epoch * self.epochs * r) for r in self.boundaries or PER_MODEL_BOUNDARIES["lenet"]]
        sites = feature_sites(model) if self.vs else []
        ckpt = work / "ckpt_anp.pt" if work is not None else None
        tag = digest(self.identity(model, ctx))
        state = load_or_quarantine(ckpt, ctx.say, map_location=device, what="ANP checkpoint") if ckpt else None
        if state is not None and state.get("identity") != tag:
            ctx.say("ANP: ignoring a checkpoint of different settings in the run directory")
            state = None
        history: list[dict] = []
        start, step, seen, wall_before = 0, 0, 0, 0.0
        if state is not None:
            model.load_state_dict(state["model"])
            masks.masks.load_state_dict(state["masks"])
            opt_mask.load_state_dict(state["opt_mask"])
            opt_w.load_state_dict(state["opt_w"])
            history, start, step = state["history"], state["epoch"], state["step"]
            seen, wall_before = state["seen"], state["wall_s"]
            rng.restore(state, ctx.say, what=f"ANP checkpoint {ckpt}")
            if not ctx.quiet:
                ctx.say(f"ANP: resumed after epoch {start}/{self.epochs}")
        else:
            torch.manual_seed(ctx.seed)
        n_norm = float(self.kl_n or n_train)  # official: NUM_TRAIN, the training set's size
        passes = 2 + self.attack.steps if self.adversarial else 1  # forward passes per step (as own_stage counts)
        t0 = time.perf_counter()
        try:
            progress = StageProgress(
                f"ANP ({self.variant})",
                epochs=self.epochs,
                steps_per_epoch=steps_per_epoch,
                quiet=ctx.quiet,
                start_epoch=start,
                eval_steps=eval_steps(len(data.test), self.batch_size, passes),
                evals_per_epoch=1,
                say=ctx.say,
            )
            with progress:
                for epoch in range(start, self.epochs):
                    t_epoch = time.perf_counter()
                    generator = torch.Generator().manual_seed(ctx.seed * 1_000_003 + epoch)
                    sums = torch.zeros(6, device=device)  # ce clean, ce adv, correct clean, correct adv, V, count
                    for i, (images, labels) in enumerate(data.train_batches(self.batch_size, generator)):
                        if i >= steps_per_epoch:  # the last partial batch is dropped, as officially
                            break
                        images, labels = images.to(device), labels.to(device)
                        factor = 0.1 ** sum(step > b for b in bounds)  # tf piecewise_constant on the step
                        for group in opt_mask.param_groups:
                            group["lr"] = self.lr * factor
                        for group in opt_w.param_groups:
                            group["lr"] = 0.1 * self.lr * factor
                        self._step(
                            model,
                            masks,
                            weights,
                            mask_params,
                            opt_mask,
                            opt_w,
                            images,
                            labels,
                            sites,
                            n_norm,
                            sums,
                            data.mean,
                            data.std,
                        )
                        step += 1
                        seen += int(labels.shape[0])
                        progress.step()
                    with progress.evaluating():
                        masked = evaluate(model, data, 256, device=device)["top1"]
                    train_mode(model)
                    s = sums.tolist()
                    count = max(1.0, s[5])
                    active = masks.n_active()
                    row = {
                        "epoch": epoch + 1,
                        "lr": self.lr * 0.1 ** sum(step - 1 > b for b in bounds),
                        "ce_clean": s[0] / count,
                        "train_top1": 100.0 * s[2] / count,
                        **(
                            {"ce_adv": s[1] / count, "train_adv_top1": 100.0 * s[3] / count} if self.adversarial else {}
                        ),
                        **({"vulnerability": s[4] / count} if self.vs else {}),
                        "kl": float(masks.kl().detach()),
                        "units_active": active,
                        "paper_unit_sparsity": 100.0 - 100.0 * sum(active) / sum(u for _, _, u in masks.sites),
                        "masked_top1": masked,
                        "epoch_s": round(time.perf_counter() - t_epoch, 2),
                    }
                    history.append(row)
                    progress.end_epoch(
                        f"CE {row['ce_clean']:.3f} sparsity {row['paper_unit_sparsity']:.1f}% masked {masked:.2f}%"
                    )
                    if ckpt is not None:
                        save_checkpoint(
                            ckpt,
                            {
                                "identity": tag,
                                "model": model.state_dict(),
                                "masks": masks.masks.state_dict(),
                                "opt_mask": opt_mask.state_dict(),
                                "opt_w": opt_w.state_dict(),
                                "history": history,
                                "epoch": epoch + 1,
                                "step": step,
                                "seen": seen,
                                "wall_s": wall_before + time.perf_counter() - t0,
                                rng.RNG_KEY: rng.capture(),
                            },
                        )
                    if not ctx.quiet:
                        adv = f" adv CE {row['ce_adv']:.3f} ({row['train_adv_top1']:.1f}%)" if self.adversarial else ""
                        vul = f" V {row['vulnerability']:.4f}" if self.vs else ""
                        ctx.say(
                            f"ANP ({self.variant}): epoch {epoch + 1}/{self.epochs} CE {row['ce_clean']:.3f}{adv}{vul} "
                            f"KL {row['kl']:.1f} sparsity {row['paper_unit_sparsity']:.1f}% test (masked) {masked:.2f}%"
                        )
            masked_top1 = history[-1]["masked_top1"] if history else evaluate(model, data, 256, device=device)["top1"]
        finally:
            model.eval()
        if ckpt is not None:
            ckpt.unlink(missing_ok=True)
        masks.detach()
        return {
            "history": history,
            "epochs": self.epochs,
            "samples": seen,
            "wall_s": round(wall_before + time.perf_counter() - t0, 2),
            "masked_top1": masked_top1,
            "kl": history[-1]["kl"] if history else None,
        }

    def _step(
        self, model, masks, weights, mask_params, opt_mask, opt_w, images, labels, sites, n_norm, sums, mean, std
    ) -> None:
        """One official training step (module docstring, 2)."""
        l2 = torch.stack([p.pow(2).sum() for p in weights]).sum() / 2  # tf.nn.l2_loss over all base params
        if not self.adversarial:  # BP (train_model): both sets on CE + beta KL / N + l2
            train_mode(model)
            logits = model(images)
            ce = F.cross_entropy(logits, labels)
            loss = ce + self.beta * masks.kl() / n_norm + self.weight_decay * l2
            grads = torch.autograd.grad(loss, mask_params + weights, allow_unused=True)
            g_mask, g_w = grads[: len(mask_params)], grads[len(mask_params) :]
            with torch.no_grad():
                n = float(labels.shape[0])
                zero = ce.new_zeros(())
                correct = (logits.argmax(1) == labels).sum().float()
                sums += torch.stack([ce.detach() * n, zero, correct, zero, zero, ce.new_tensor(n)])
        else:
            for p in mask_params:  # the attack needs no mask gradients
                p.requires_grad_(False)
            try:
                adv = perturb(model, images, labels, self.attack, mean, std)  # eval mode: E[pi] masks
            finally:
                for p in mask_params:
                    p.requires_grad_(True)
            train_mode(model)  # torchattacks restores model.train(): the head dropouts go off again
            with capture(model, sites) as z_clean:
                logits = model(images)
            with capture(model, sites) as z_adv:
                logits_adv = model(adv)
            ce = F.cross_entropy(logits, labels)
            ce_adv = F.cross_entropy(logits_adv, labels)
            kl = self.beta * masks.kl() / n_norm
            adv_loss = ce_adv + kl  # + weight_decay * l2: no gradient w.r.t. the masks
            loss_mix = (ce + self.adv_weight * ce_adv) / (1 + self.adv_weight) + kl + self.weight_decay * l2
            v = vulnerability(z_clean, z_adv) if self.vs else ce.new_zeros(())
            if self.vs:
                loss_mix = loss_mix + self.lam * v
            g_mask = torch.autograd.grad(adv_loss, mask_params, retain_graph=True, allow_unused=True)
            g_w = torch.autograd.grad(loss_mix, weights, allow_unused=True)
            with torch.no_grad():
                n = float(labels.shape[0])
                sums += torch.stack(
                    [
                        ce.detach() * n,
                        ce_adv.detach() * n,
                        (logits.argmax(1) == labels).sum().float(),
                        (logits_adv.argmax(1) == labels).sum().float(),
                        v.detach() * n,
                        ce.new_tensor(n),
                    ]
                )
        for p, g in zip(mask_params, g_mask, strict=True):
            p.grad = g
        for p, g in zip(weights, g_w, strict=True):
            p.grad = g
        opt_mask.step()
        opt_w.step()
        opt_mask.zero_grad(set_to_none=True)
        opt_w.zero_grad(set_to_none=True)
