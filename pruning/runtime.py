"""How this process trains and reports: the device and DDP rank (``Runtime``), the whole-run
ETA, and measured dense-vs-pruned latency."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from rich.console import Console

from pruning import distributed
from pruning.config import resolve_device
from pruning.distributed import DistInfo
from pruning.measure import measure_latency_pair
from pruning.train import Engine


@dataclass
class Runtime:
    """Where and how this process trains: device, DDP rank info, engine options, console."""

    device: str
    dist: DistInfo
    engine: Engine
    console: Console
    quiet: bool = False

    def say(self, message: str) -> None:
        if self.dist.is_main:
            self.console.print(message)


def make_runtime(cfg: dict, console: Console) -> Runtime:
    device = resolve_device(cfg.get("device", "auto"))
    info = distributed.init_from_env(device)
    device = distributed.device_for(device, info)
    return Runtime(device, info, Engine.from_config(cfg.get("engine"), device), console, bool(cfg.get("quiet")))


class Eta:
    """Once the first epoch is timed, print an estimate for the whole run: remaining epochs of
    this stage at the measured speed, plus the second stage's epochs scaled by its FLOPs."""

    def __init__(self, rt: Runtime, later_epochs_equiv: float):
        self.rt, self.later, self.done = rt, later_epochs_equiv, False

    def hook(self, remaining_after: Callable[[int], int]) -> Callable[[int, float], None]:
        def on_epoch(epoch: int, seconds: float) -> None:
            if not self.done:
                self.done = True
                remaining = remaining_after(epoch) + self.later
                if remaining <= 0:
                    return  # nothing left to estimate
                self.rt.say(
                    f"[dim]ETA for the rest of the run: ~{_fmt_seconds(remaining * seconds)} "
                    f"({remaining:.0f} epoch-equivalents at {seconds:.2f} s; later stages scaled by their FLOPs)[/]"
                )

        return on_epoch


def _fmt_seconds(seconds: float) -> str:
    h, rem = divmod(int(seconds), 3600)
    return f"{h} h {rem // 60} min" if h else f"{rem // 60} min {rem % 60} s"


def measure_latencies(
    dense: torch.nn.Module,
    pruned: torch.nn.Module,
    input_shape: tuple[int, ...],
    cfg: dict,
    rt: Runtime,
    inputs: torch.Tensor | None = None,
) -> dict:
    """Median latency of dense vs pruned, per setting: CPU at each batch size, CUDA at one;
    ``inputs``: real test images to time on (``measure_latency_pair``)."""
    lat_cfg = cfg.get("latency") or {}
    if not lat_cfg.get("enabled", True) or not rt.dist.is_main:
        return {}
    out = {}
    settings = [("cpu", int(b)) for b in lat_cfg.get("cpu_batch_sizes", [1, 64])]
    if rt.device.startswith("cuda"):
        settings.append((rt.device, int(lat_cfg.get("gpu_batch_size", 256))))
    for device, batch in settings:
        kw = {"warmup": int(lat_cfg.get("warmup", 3)), "repeats": int(lat_cfg.get("repeats", 10))}
        name = f"{'cpu' if device == 'cpu' else 'cuda'}_b{batch}"
        out[name] = measure_latency_pair(dense, pruned, input_shape, device, batch, inputs=inputs, **kw)
    return out
