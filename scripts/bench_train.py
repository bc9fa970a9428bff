"""Training-speed and inference-latency benchmark (``make bench``).

1. Training throughput, side by side in one process: prune-lab's engine (uint8 data on the
   device, batched pad-crop/flip, device-side metrics; on CUDA also channels_last + bf16 and,
   with --compile, torch.compile with CUDA graphs) vs a plain torchvision-references-style loop
   (Dataset of PIL images + RandomCrop/RandomHorizontalFlip/ToTensor/Normalize, DataLoader with
   workers and pinned memory, ``loss.item()`` every step). Images/s, seconds per 50k-image
   epoch (extrapolated from the timed steps), the engine/plain ratio and peak memory.
2. Inference latency of the dense vs L1-norm-pruned paper variants (ResNet-56-A/B,
   ResNet-110-A/B, VGG-16-A): FLOPs speedup next to the measured speedup (median of repeats).

Data: the CIFAR-10 python layout under --data-root when present (e.g. the JPEG copy), else
same-shaped random uint8 images (labelled as such). Writes results/benchmarks/<machine>.{md,json}.

    python scripts/bench_train.py                        # CPU defaults: few steps
    python scripts/bench_train.py --device cuda --steps 200 --compile
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from tabulate import tabulate

from pruning.data import CIFAR, ImageData, Split, load_cifar
from pruning.measure import count_macs, measure_latency_pair
from pruning.methods.base import PruneContext
from pruning.methods.l1_norm import L1Norm
from pruning.models import build, default_spec
from pruning.train import Engine, Schedule, make_optimizer, plain_train_one_epoch, train_one_epoch

MODELS = {
    "resnet56": ("resnet_cifar", 56),
    "vgg16": ("vgg_cifar", 16),
    "resnet20": ("resnet_cifar", 20),
    "resnet110": ("resnet_cifar", 110),
}


def load_data(root: str | None, label: str | None) -> tuple[ImageData, str]:
    if root and (Path(root) / CIFAR["cifar10"]["folder"]).is_dir():
        data = load_cifar("cifar10", root)
        return data, f"{label or 'CIFAR-10'} from {root} (official md5: {data.info['official_md5']})"
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50_000, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (50_000,), generator=gen)
    test = Split(images[:1000], labels[:1000])
    meta = CIFAR["cifar10"]
    return ImageData(
        "random", Split(images, labels), test, 10, meta["mean"], meta["std"]
    ), "random uint8 (CIFAR-10 shape)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return None


def bench_engine(arch, depth, data: ImageData, batch: int, steps: int, warmup: int, device, engine: Engine) -> dict:
    torch.manual_seed(0)
    model = build(default_spec(arch, depth=depth)).to(device)
    forward = engine.prepare(model)
    opt = make_optimizer(model, Schedule(epochs=1, lr=0.05, batch_size=batch))
    on_device = data.to(device)

    def run(n_steps: int, seed: int) -> float:
        sub = ImageData(
            on_device.name,
            Split(on_device.train.images[: n_steps * batch], on_device.train.labels[: n_steps * batch]),
            on_device.test,
            10,
            on_device.mean,
            on_device.std,
            True,
        )
        sync(device)
        t0 = time.perf_counter()
        train_one_epoch(model, sub, opt, batch, torch.Generator().manual_seed(seed), engine=engine, forward=forward)
        sync(device)
        return time.perf_counter() - t0

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    run(warmup, 1)  # compile / cudnn autotune / allocator warm-up
    seconds = run(steps, 2)
    return {"images_per_s": steps * batch / seconds, "peak_mb": peak_mb(device)}


class PILDataset(torch.utils.data.Dataset):
    """CIFAR as a torchvision-style dataset: PIL images through per-image transforms."""

    def __init__(self, images_u8: torch.Tensor, labels: torch.Tensor, mean, std):
        from torchvision import transforms

        self.images = images_u8.permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
        self.labels = labels.numpy()
        self.transform = transforms.Compose(
            [
                transforms.RandomCrop(32, padding=4),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(mean, std),
            ]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def bench_plain(arch, depth, data: ImageData, batch: int, steps: int, warmup: int, device, workers: int) -> dict:
    torch.manual_seed(0)
    model = build(default_spec(arch, depth=depth)).to(device)
    opt = make_optimizer(model, Schedule(epochs=1, lr=0.05, batch_size=batch))
    dataset = PILDataset(data.train.images, data.train.labels, data.mean, data.std)

    def loader(n_steps: int):
        sampler = torch.utils.data.RandomSampler(dataset, num_samples=n_steps * batch)
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=batch,
            sampler=sampler,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            drop_last=True,
        )

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    plain_train_one_epoch(model, loader(warmup), opt, device)
    timed = loader(steps)
    sync(device)
    t0 = time.perf_counter()  # includes worker start-up, as every epoch of the plain loop does
    plain_train_one_epoch(model, timed, opt, device)
    sync(device)
    return {"images_per_s": steps * batch / (time.perf_counter() - t0), "peak_mb": peak_mb(device)}


def latency_rows(device: torch.device, repeats: int) -> list[dict]:
    rows = []
    settings = [("cpu", 1), ("cpu", 64)] + ([(str(device), 256)] if device.type == "cuda" else [])
    for name, arch, depth, variant in [
        ("ResNet-56-A", "resnet_cifar", 56, "A"),
        ("ResNet-56-B", "resnet_cifar", 56, "B"),
        ("ResNet-110-A", "resnet_cifar", 110, "A"),
        ("ResNet-110-B", "resnet_cifar", 110, "B"),
        ("VGG-16-A", "vgg_cifar", 16, "A"),
    ]:
        dense = build(default_spec(arch, depth=depth))
        pruned = L1Norm(variant=variant).prune(dense, PruneContext()).model
        row = {"model": name, "FLOPs×": count_macs(dense, (3, 32, 32)) / count_macs(pruned, (3, 32, 32))}
        for dev, batch in settings:
            pair = measure_latency_pair(dense, pruned, (3, 32, 32), dev, batch, warmup=10, repeats=repeats)
            d, p = pair["dense_ms"], pair["pruned_ms"]
            tag = "cpu" if dev == "cpu" else "gpu"
            row[f"{tag} b{batch} dense ms"] = d
            row[f"{tag} b{batch} pruned ms"] = p
            row[f"measured× {tag} b{batch}"] = d / p
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet56", "vgg16"], choices=sorted(MODELS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[128, 64])
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 200 on GPU, 8 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 30 GPU, 2 CPU)")
    parser.add_argument("--data-root", default=os.environ.get("CIFAR10_DIR", "data/cifar10-jpeg"))
    parser.add_argument("--data-label", default=None, help='e.g. "CIFAR-10 (JPEG q75 copy)"')
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true", help="engine: torch.compile(mode=reduce-overhead)")
    parser.add_argument(
        "--workers", type=int, default=min(8, os.cpu_count() or 1), help="plain loop DataLoader workers"
    )
    parser.add_argument("--latency-repeats", type=int, default=10)
    parser.add_argument("--out", default="results/benchmarks")
    parser.add_argument("--tag", default=None, help="file name for the results (default: from the machine)")
    args = parser.parse_args()

    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    on_gpu = device.type == "cuda"
    steps = args.steps or (200 if on_gpu else 8)
    warmup = args.warmup or (30 if on_gpu else 2)
    engine = Engine(
        channels_last=on_gpu,
        amp_bf16=on_gpu,
        compile=args.compile,
        compile_mode="reduce-overhead" if args.compile else None,
    )
    data, data_label = load_data(args.data_root, args.data_label)
    machine = (
        torch.cuda.get_device_name(device)
        if on_gpu
        else f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads"
    )
    print(f"device: {machine}; data: {data_label}; steps {steps} (+{warmup} warm-up); engine {engine}")

    train_rows = []
    for name in args.models:
        arch, depth = MODELS[name]
        for batch in args.batch_sizes:
            fast = bench_engine(arch, depth, data, batch, steps, warmup, device, engine)
            plain = bench_plain(arch, depth, data, batch, steps, warmup, device, args.workers)
            row = {
                "model": name,
                "batch": batch,
                "engine img/s": fast["images_per_s"],
                "plain img/s": plain["images_per_s"],
                "engine s/epoch": 50_000 / fast["images_per_s"],
                "plain s/epoch": 50_000 / plain["images_per_s"],
                "engine/plain": fast["images_per_s"] / plain["images_per_s"],
                "engine peak MB": fast["peak_mb"],
                "plain peak MB": plain["peak_mb"],
            }
            train_rows.append(row)
            print(tabulate([row], headers="keys", floatfmt=".2f"))
    lat_rows = latency_rows(device, args.latency_repeats)
    print(tabulate(lat_rows, headers="keys", floatfmt=".2f"))

    tag = args.tag or ("gpu-" + machine.replace(" ", "-").lower() if on_gpu else f"cpu-{os.cpu_count()}core")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python scripts/bench_train.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items()
        if v not in (None, False) and k not in ("out", "tag")
    )
    header = (
        f"# Training speed and inference latency — {machine}\n\n"
        f"Generated by `{command}` (torch {torch.__version__}, {time.strftime('%Y-%m-%d')}).\n"
        f"Data: {data_label}. Timed {steps} steps after {warmup} warm-up steps; s/epoch = 50,000 / (img/s), "
        f"training only. Engine: {engine}. Plain: torchvision-style DataLoader with {args.workers} workers.\n"
        f"Peak MB: CUDA allocator peak (not measured on CPU).\n\n"
    )
    md = (
        header
        + "## Training throughput (engine vs plain loop, one run)\n\n"
        + tabulate(train_rows, headers="keys", tablefmt="github", floatfmt=".2f")
        + "\n\n## Inference latency: dense vs L1-norm paper variants (median ms)\n\n"
        + tabulate(lat_rows, headers="keys", tablefmt="github", floatfmt=".2f")
        + "\n"
    )
    (out / f"{tag}.md").write_text(md)
    (out / f"{tag}.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "data": data_label,
                "steps": steps,
                "warmup": warmup,
                "engine": str(engine),
                "train": train_rows,
                "latency": lat_rows,
                "torch": torch.__version__,
                "latency_repeats": args.latency_repeats,
            },
            indent=2,
        )
    )
    print(f"wrote {out / (tag + '.md')}")


if __name__ == "__main__":
    main()
