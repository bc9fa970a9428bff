"""Counting: parameters, FLOPs as multiply-accumulates (the papers' convention), accuracy.

MACs count every Conv2d and Linear layer (one multiply-add = 1); BN, ReLU, pooling and the
option-A shortcut are free, as in Li et al. (2017) and "Rethinking" (ResNet-56: 125.49M).
"""

from __future__ import annotations

import torch
import torch.nn as nn


def count_params(model: nn.Module, masks: dict[str, torch.Tensor] | None = None) -> int:
    """Number of parameters; with unstructured ``masks``, minus the masked-out weights (a
    trained weight that merely happens to be 0, such as a fresh BN bias, still counts)."""
    total = int(sum(p.numel() for p in model.parameters()))
    if masks:
        total -= int(sum(int((m == 0).sum()) for m in masks.values()))
    return total


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: tuple[int, ...], nonzero: bool = False) -> int:
    """Multiply-accumulates of one forward pass on one input of shape (C, H, W), or of one token
    (shape (1,), a model with ``input_dtype = torch.long``: MACs per character). A Linear layer
    counts once per row it is applied to. With ``nonzero``, only multiplications by non-zero
    weights count (unstructured sparsity)."""
    total = 0

    def conv_hook(m: nn.Conv2d, _inp, out):
        nonlocal total
        out_h, out_w = out.shape[-2:]
        if nonzero:
            total += int((m.weight != 0).sum()) * out_h * out_w
        else:
            kh, kw = m.kernel_size
            total += out[0].numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, _inp, out):  # per row: a sequence model applies it to every token
        nonlocal total
        rows = out.numel() // m.out_features
        total += rows * (int((m.weight != 0).sum()) if nonzero else m.in_features * m.out_features)

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    reset = getattr(model, "reset_state", None)  # a language model: count one token with no carried state
    if callable(reset):
        reset()
    try:
        model(torch.zeros(1, *input_shape, device=device, dtype=getattr(model, "input_dtype", torch.float32)))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
        if callable(reset):
            reset()
    return int(total)


def reduction(dense: float, pruned: float) -> float:
    """Percentage removed: 100 * (1 - pruned / dense)."""
    return 100.0 * (1.0 - pruned / dense) if dense else 0.0


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> list[torch.Tensor]:
    """Number of samples whose label is among the top-k predictions, per k (device tensors)."""
    maxk = min(max(ks), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices  # (N, maxk)
    hit = pred.eq(labels[:, None])  # (N, maxk)
    return [hit[:, : min(k, maxk)].any(dim=1).sum() for k in ks]


@torch.no_grad()
def measure_latency_pair(
    dense: nn.Module,
    pruned: nn.Module,
    input_shape: tuple[int, ...],
    device: str | torch.device,
    batch_size: int,
    warmup: int = 3,
    repeats: int = 10,
    inputs: torch.Tensor | None = None,
) -> dict:
    """Dense vs pruned latency measured side by side: after ``warmup`` untimed passes of each,
    ``repeats`` rounds that time one dense and one pruned forward pass back to back (the order
    alternating), so load from other processes hits both alike and the ratio stays meaningful
    on a shared machine. Medians, minima and the speedup (dense median / pruned median).
    ``inputs``: real images (N, *input_shape); round r times batch r of them (cycled), the same
    for both nets, so a dynamic network's per-sample decisions are those of real data (random
    inputs otherwise)."""
    import copy
    import statistics
    import time

    device = torch.device(device)
    nets = [copy.deepcopy(m).to(device).eval() for m in (dense, pruned)]
    if inputs is not None and len(inputs):
        pool = inputs.to(device)

        def batch(r: int) -> torch.Tensor:
            return pool[(r * batch_size + torch.arange(batch_size)) % len(pool)]
    else:
        x = torch.randn(batch_size, *input_shape, device=device)

        def batch(r: int) -> torch.Tensor:
            return x

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for net in nets:
        for w in range(warmup):
            net(batch(w))
    sync()
    times: list[list[float]] = [[], []]
    for r in range(repeats):
        x = batch(r)
        for i in (0, 1) if r % 2 == 0 else (1, 0):
            t0 = time.perf_counter()
            nets[i](x)
            sync()
            times[i].append((time.perf_counter() - t0) * 1000)
    dense_ms, pruned_ms = (statistics.median(t) for t in times)
    # the timing noise: quartiles of the per-round (paired, back-to-back) dense/pruned ratios; a
    # speed-up whose interquartile range holds 1.0 is within the noise (prune-report marks it ≈)
    paired = sorted(d / p for d, p in zip(times[0], times[1], strict=True))
    quartiles = statistics.quantiles(paired, n=4, method="inclusive") if len(paired) >= 2 else [paired[0]] * 3
    return {
        "dense_ms": dense_ms,
        "pruned_ms": pruned_ms,
        "speedup": dense_ms / pruned_ms,
        "speedup_p25": quartiles[0],
        "speedup_p75": quartiles[2],
        "dense_min_ms": min(times[0]),
        "pruned_min_ms": min(times[1]),
        "repeats": repeats,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "inputs": "test images" if inputs is not None and len(inputs) else "random",
    }
