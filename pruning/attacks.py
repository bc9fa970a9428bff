"""Adversarial attacks and robustness measures, usable on any run's network.

Attacks work in [0, 1] pixel space, with the data's normalisation inside the attacked model
(``PixelModel``): epsilon and the step size are in pixel units whatever the dataset's mean/std.
PGD and FGSM are torchattacks' (3.5.1), whose L-infinity PGD is step for step the ANP-VS official
one (github:divyam3897/ANP_VS src/model/attacks.py): start at x + U(-eps, eps) clipped to [0, 1];
each step x += step * sign(grad CE), then clip to x_nat +- eps, then to [0, 1]. torchattacks puts
the network in eval mode while it attacks (BN running stats, dropout off, ANP's deterministic
test-time masks), as the official attack graph (``train=False``) does, and restores the mode.

    spec = AttackSpec("pgd", eps=0.3, step=0.01, steps=40)
    adv = perturb(model, images, labels, spec, data.mean, data.std)      # normalised, like images

``official_clip`` (PGD only; ``robustness.official_clip=true``): the ANP-VS official CIFAR attack
instead, for measuring that deviation. The official CIFAR pipeline feeds the network standardised
images (``tf.image.per_image_standardization``) and runs the PGD above on them unchanged: eps and
the step are in standardised units and every iterate is clipped to [0, 1] *in those units*, which
moves all the standardised values outside [0, 1] (most of them) onto 0 or 1, far more than eps. With
``official_clip`` the same PGD runs on the network's own (normalised) input, eps / step in those
units, clipped to [0, 1] there. Ours normalises per channel (the data's mean / std), the official
code per image: the same kind of clipping, not bit-identical inputs.
    with capture(model, feature_sites(model)) as feats: model(x)          # latent features

``vulnerability`` is the ANP-VS measure (official ``net.py vulnerability``): per feature tensor
the mean absolute difference between clean and adversarial activations over the batch and all
feature dimensions, averaged over the tensors (layers).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from pruning import PruneLabError

ATTACKS = ("pgd", "fgsm", "tpgd")  # tpgd: TRADES' KL-divergence PGD (adversarial training only)


@dataclass(frozen=True)
class AttackSpec:
    """An L-infinity attack in [0, 1] pixel units. ``steps``/``random_start`` apply to PGD."""

    kind: str = "pgd"
    eps: float = 8 / 255
    step: float = 2 / 255
    steps: int = 10
    random_start: bool = True
    official_clip: bool = False  # PGD in the network's normalised input, clipped to [0, 1] there (ANP-VS code)

    def __post_init__(self) -> None:
        if self.kind not in ATTACKS:
            raise PruneLabError(f"attack {self.kind!r} is not one of {', '.join(ATTACKS)}")
        if not 0.0 < float(self.eps) <= 1.0:
            raise PruneLabError(f"eps={self.eps!r} must be in (0, 1] (pixel units; e.g. 0.03 = ~8/255)")
        if self.kind in ("pgd", "tpgd"):
            if not 0.0 < float(self.step) <= 1.0:
                raise PruneLabError(f"step={self.step!r} must be in (0, 1] (pixel units, e.g. 0.007)")
            if int(self.steps) < 1:
                raise PruneLabError(f"steps={self.steps!r} must be >= 1 (the paper evaluates with 40)")
        if self.official_clip and self.kind != "pgd":
            raise PruneLabError(f"official_clip applies to PGD only, not {self.kind!r}")

    @classmethod
    def from_config(cls, cfg: dict, what: str = "robustness") -> AttackSpec:
        """From a config block (``eps``, ``step``, ``steps``, ``attack``); a bad value is a
        PruneLabError naming ``<what>.<key>``."""
        from pruning.validation import as_float, as_int

        eps = as_float(cfg.get("eps"), f"{what}.eps", 0.0, exclusive=True, maximum=1.0, hint="e.g. 0.03 (~8/255)")
        step = cfg.get("step")
        try:
            return cls(
                kind=str(cfg.get("attack", cfg.get("kind", "pgd"))),
                eps=eps,
                step=eps if step is None else as_float(step, f"{what}.step", 0.0, exclusive=True, maximum=1.0),
                steps=1 if cfg.get("steps") is None else as_int(cfg["steps"], f"{what}.steps", 1),
                random_start=bool(cfg.get("random_start", True)),
                official_clip=_flag(cfg.get("official_clip", False), f"{what}.official_clip"),
            )
        except PruneLabError as e:
            text = str(e)
            raise PruneLabError(text if text.startswith(f"{what}.") else f"{what}.{text}") from None

    @property
    def name(self) -> str:
        """Column-friendly name: pgd40, fgsm, pgd40_official_clip."""
        base = f"{self.kind}{self.steps}" if self.kind != "fgsm" else "fgsm"
        return base + ("_official_clip" if self.official_clip else "")

    def describe(self) -> dict:
        out = asdict(self)
        if not self.official_clip:  # absent unless set: evaluations recorded before it keep their settings
            out.pop("official_clip")
        if self.kind == "fgsm":
            out.pop("steps"), out.pop("step"), out.pop("random_start")
        return out


def _flag(value, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise PruneLabError(f"{what}={value!r} must be true or false")


class PixelModel(nn.Module):
    """``model`` taking [0, 1] pixels: normalises with the data's per-channel mean/std first."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model((pixels - self.mean) / self.std)


def _stats(mean, std, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m = torch.tensor(mean, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
    return m, s


def to_pixels(images: torch.Tensor, mean, std) -> torch.Tensor:
    """Normalised images -> [0, 1] pixels (clamped: float round-off only)."""
    m, s = _stats(mean, std, images)
    return (images * s + m).clamp_(0.0, 1.0)


def from_pixels(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    m, s = _stats(mean, std, pixels)
    return (pixels - m) / s


def _attack(spec: AttackSpec, model: nn.Module):
    import torchattacks  # imported here: only runs that attack need it

    if spec.kind == "pgd":
        return torchattacks.PGD(
            model, eps=float(spec.eps), alpha=float(spec.step), steps=int(spec.steps), random_start=spec.random_start
        )
    if spec.kind == "tpgd":  # TRADES (Zhang et al. 2019): start x + 0.001 N(0, 1), ascend KL(f(x) || f(x_adv))
        return torchattacks.TPGD(model, eps=float(spec.eps), alpha=float(spec.step), steps=int(spec.steps))
    return torchattacks.FGSM(model, eps=float(spec.eps))


def official_clip_pgd(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, spec: AttackSpec) -> torch.Tensor:
    """The ANP-VS official PGD (src/model/attacks.py ``PGDAttack.perturb``) applied to the network's
    own input ``images`` as they are (here: normalised): x = clip(x_nat + U(-eps, eps), 0, 1); each
    step x += step * sign(grad CE), clip to x_nat +- eps, clip to [0, 1]. Eval mode (the official
    attack graph has ``train=False``)."""
    model.eval()
    x_nat = images.detach()
    eps, step = float(spec.eps), float(spec.step)
    x = x_nat.clone()
    if spec.random_start:
        x = x + torch.empty_like(x).uniform_(-eps, eps)
    x = x.clamp(0.0, 1.0)
    for _ in range(int(spec.steps)):
        x.requires_grad_(True)
        loss = nn.functional.cross_entropy(model(x), labels)
        (grad,) = torch.autograd.grad(loss, x)
        x = x.detach() + step * grad.sign()
        x = torch.min(torch.max(x, x_nat - eps), x_nat + eps).clamp(0.0, 1.0)
    return x.detach()


def perturb(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, spec: AttackSpec, mean, std) -> torch.Tensor:
    """Adversarial versions of normalised ``images`` (returned normalised), crafted on ``model``
    in pixel space (``spec.official_clip``: in the normalised space, see the module docstring).
    The model's train/eval mode is restored afterwards; its gradients untouched."""
    was_training = model.training
    pixel_model = PixelModel(model, mean, std).to(images.device)
    pixel_model.train(was_training)  # a new module is in train mode; torchattacks restores *its* mode
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():  # no parameter gradients while attacking (speed; grads untouched)
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            if spec.official_clip:
                return official_clip_pgd(model, images, labels, spec)
            adv = _attack(spec, pixel_model)(to_pixels(images.detach(), mean, std), labels)
    finally:
        for p, r in zip(model.parameters(), requires, strict=True):
            p.requires_grad_(r)
        model.train(was_training)
    return from_pixels(adv, mean, std)


# --------------------------------------------------------------------------- latent features
def feature_sites(model: nn.Module) -> list[str]:
    """The latent features the vulnerability is measured on, as module names (the module's
    output) or ``name:input`` (its input): the model's own ``vulnerability_sites()`` when it has
    one (the ANP-VS models list the official ones); otherwise the input of every conv / linear
    layer after the first, i.e. every post-activation feature map some layer consumes (models
    that call ``F.relu`` have no ReLU modules to hook)."""
    own = getattr(model, "vulnerability_sites", None)
    if callable(own):
        return list(own())
    layers = [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if len(layers) < 2:
        raise PruneLabError(
            f"{type(model).__name__} has fewer than 2 conv/linear layers and no vulnerability_sites(): "
            "the vulnerability measure does not know its latent features"
        )
    return [f"{name}:input" for name in layers[1:]]


@contextlib.contextmanager
def capture(model: nn.Module, sites: list[str]) -> Iterator[list[torch.Tensor]]:
    """Collect the outputs (``name``) or inputs (``name:input``) of the named modules, in call
    order, while the block runs, with their graph (usable in a loss). Cloned, so a later in-place
    op cannot alter them."""
    modules = dict(model.named_modules())
    names = [s.removesuffix(":input") for s in sites]
    missing = [n for n in names if n not in modules]
    if missing:
        raise PruneLabError(f"feature sites {missing} are not modules of {type(model).__name__}")
    out: list[torch.Tensor] = []
    handles = []
    for site, name in zip(sites, names, strict=True):
        if site.endswith(":input"):
            handles.append(modules[name].register_forward_pre_hook(lambda _m, args: out.append(args[0].clone())))
        else:
            handles.append(modules[name].register_forward_hook(lambda _m, _i, o: out.append(o.clone())))
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


def vulnerability(clean: list[torch.Tensor], adv: list[torch.Tensor]) -> torch.Tensor:
    """ANP-VS: mean over layers of mean |z_clean - z_adv| (over batch and feature dims)."""
    if len(clean) != len(adv) or not clean:
        raise PruneLabError(f"vulnerability needs matching feature lists, got {len(clean)} and {len(adv)}")
    return torch.stack([(c - a).abs().mean() for c, a in zip(clean, adv, strict=True)]).mean()


# --------------------------------------------------------------------------- evaluation
def robust_evaluate(
    model: nn.Module,
    data,
    spec: AttackSpec,
    batch_size: int = 256,
    source: nn.Module | None = None,
    limit: int | None = None,
    seed: int = 0,
    quiet: bool = True,
    say: Callable[[str], None] | None = None,
) -> dict:
    """Robust top-1 (%) of ``model`` on the test set under ``spec``, with the vulnerability of its
    latent features. White-box when ``source`` is None; black-box (transfer) when the adversarial
    examples are crafted on ``source``, a separately trained network. ``limit``: the first N test
    images only (recorded as ``n``). The random starts are seeded (``seed``): a re-run gives the
    same number. Unless ``quiet``, a progress bar over the batches with an ETA (``say``: its
    plain status lines where the console is not a terminal)."""
    from pruning.progress import StageProgress

    model.eval()
    attacker = source if source is not None else model
    attacker.eval()
    sites = feature_sites(model)
    device = data.device
    gen_state = torch.random.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    torch.manual_seed(seed)
    correct = clean_correct = seen = 0
    vuln_sum, tensors = 0.0, 0
    outside, values, moved = 0, 0, 0.0  # official_clip: how much the [0, 1] clip moves the inputs
    test_size = len(data.test) if hasattr(data, "test") else (limit or batch_size)  # any object with test_batches
    images_total = test_size if limit is None else min(int(limit), test_size)
    progress = StageProgress(
        f"{spec.kind.upper()} ({'black' if source is not None else 'white'}-box)",
        steps_per_epoch=max(1, math.ceil(images_total / batch_size)),
        quiet=quiet,
        say=say,
        unit="batches",
    )
    try:
        with progress:
            for images, labels in data.test_batches(batch_size):
                if limit is not None and seen >= limit:
                    break
                if limit is not None:
                    images, labels = images[: limit - seen], labels[: limit - seen]
                images, labels = images.to(device), labels.to(device)
                adv = perturb(attacker, images, labels, spec, data.mean, data.std)
                if spec.official_clip:
                    outside += int(((images < 0) | (images > 1)).sum())
                    values += images.numel()
                    moved += float((adv - images).abs().sum())
                with torch.no_grad():
                    with capture(model, sites) as z_clean:
                        clean_logits = model(images)
                    with capture(model, sites) as z_adv:
                        adv_logits = model(adv)
                n = labels.shape[0]
                correct += int((adv_logits.argmax(1) == labels).sum())
                clean_correct += int((clean_logits.argmax(1) == labels).sum())
                vuln_sum += float(vulnerability(z_clean, z_adv)) * n
                tensors = len(z_clean)
                seen += n
                progress.step()
    finally:
        torch.random.set_rng_state(gen_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)
    if seen == 0:
        raise PruneLabError("robustness evaluation saw no test images (robustness.test_subset must be >= 1)")
    return {
        "top1": 100.0 * correct / seen,
        "clean_top1": 100.0 * clean_correct / seen,
        "vulnerability": vuln_sum / seen,
        "n": seen,
        "attack": spec.describe(),
        "box": "black" if source is not None else "white",
        "feature_tensors": tensors,
        **(
            {
                # share of the clean (normalised) input values outside [0, 1]: clipped by the attack
                "input_outside_0_1": outside / max(1, values),
                "mean_abs_change": moved / max(1, values),  # mean |x_adv - x| in normalised units
            }
            if spec.official_clip
            else {}
        ),
    }
