"""The one results schema: what ``metrics.json`` holds, written by the pipeline, read by
prune-report, built by the tests. Plain dataclasses, serialised to plain JSON.

    metrics = RunMetrics(key=RunKey(...), status="running", ...)
    write_json(path, metrics.to_dict())
    metrics = RunMetrics.from_dict(read_json(path))     # any schema version, migrated on read

It has room for every regime prune-lab runs:

* accuracy (``final.top1``/``top5``) or any other named evaluation in ``evaluations``
  (``{"bpc": {"value": 1.08}}``, ``{"robust_pgd40": {"top1": 47.1, "eps": 0.031}}``, ...);
* per-sample cost of dynamic networks (``cost_per_sample``: mean and percentiles of MACs);
* sparsity targets (``sparsity``: target and achieved fraction);
* the compute each stage spent (``StageRecord.samples`` and ``train_macs`` = samples seen x
  forward MACs per sample: the "training cost" a table can show next to the accuracy);
* which exact dense net a run descends from (``RunMetrics.baseline_sha256``: the sha256 of the
  pretrained baseline's weights, or of the random initialisation a method starts from; runs whose
  checksums differ descend from different nets even under one ``baseline_id``).

Schema history: 1 (prune-lab <= this issue: no ``evaluations``/``cost``/``sparsity``; still read,
never dropped), 2 (this module).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
STATUSES = ("running", "done", "failed", "interrupted", "dry_run")
KEY_FIELDS = ("data", "model", "method", "variant", "ratio", "finetune", "adv_train", "seed")


class SchemaError(ValueError):
    """A metrics.json that is not a prune-lab run record (or of an unknown schema)."""


def _known(cls, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}, {k: v for k, v in data.items() if k not in names}


@dataclass
class RunKey:
    """What identifies a run in a table: a run's cell is (data, model, method, variant/ratio,
    finetune policy); seeds are averaged."""

    data: str
    model: str
    method: str
    variant: Any = None
    ratio: float | None = None
    finetune: str = "none"
    seed: int = 0
    adv_train: str = "none"  # adversarial training (conf/adv_train): none | pgd | pgd_second

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunKey:
        known, _ = _known(cls, data)
        return cls(**known)


@dataclass
class StageRecord:
    """One training stage (pretrain, a method's own stage such as a search, fine-tune/scratch)."""

    top1: float | None = None
    top1_best: float | None = None
    top5: float | None = None
    bpc: float | None = None  # language models: bits per character (test split, the final protocol)
    bpc_valid: float | None = None  # ... on the validation split
    epochs: int | None = None
    wall_s: float | None = None
    epoch_s_median: float | None = None
    peak_gpu_mem_mb: float | None = None
    peak_rss_mb: float | None = None
    cached: bool | None = None  # pretrain: loaded from the baseline cache
    baseline_id: str | None = None  # pretrain: the cache id (a hash of what determines the baseline)
    baseline_sha256: str | None = None  # pretrain: the sha256 of the baseline's weights (pruning.rng.state_sha256)
    load_s: float | None = None
    samples: int | None = None  # training samples processed (epochs x training-set size)
    macs_per_sample: int | None = None  # forward MACs of the network trained in this stage
    train_macs: float | None = None  # samples x macs_per_sample: the stage's training cost
    extra: dict[str, Any] = field(default_factory=dict)  # anything else a stage reports

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageRecord:
        known, rest = _known(cls, data)
        if not isinstance(known.get("baseline_sha256", ""), str):  # a checksum is a string or absent
            rest["baseline_sha256"] = known.pop("baseline_sha256")
        record = cls(**known)
        record.extra.update(rest)
        return record

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if v is not None and k != "extra"}
        out.update(self.extra)
        return out


@dataclass
class LatencyRecord:
    """Dense vs pruned median latency in one setting (device + batch size)."""

    dense_ms: float
    pruned_ms: float
    speedup: float
    device: str = "cpu"
    batch: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # minima, threads, repeats, ...

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any]) -> LatencyRecord:
        known, rest = _known(cls, data)
        extra = {**(known.pop("extra", None) or {}), **rest}
        device, _, batch = name.rpartition("_b")
        known.setdefault("device", device or name)
        known.setdefault("batch", int(batch) if batch.isdigit() else None)
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "extra"}
        out.update(self.extra)
        return out


@dataclass
class RunMetrics:
    """Everything one run records (``<run_dir>/metrics.json``)."""

    key: RunKey
    status: str = "running"
    schema: int = SCHEMA_VERSION
    method_settings: dict[str, Any] = field(default_factory=dict)
    run_dir: str | None = None
    started: str | None = None
    updated: str | None = None
    finished: str | None = None
    dry_run: bool = False
    versions: dict[str, Any] = field(default_factory=dict)
    git_commit: str | None = None
    command: str | None = None
    device: str | None = None
    world_size: int = 1
    engine: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)  # name, label, official_md5, fingerprint, sizes
    budget: dict[str, Any] = field(default_factory=dict)  # pretrain/stage epochs, batch, subset, lr, KD
    stages: dict[str, StageRecord] = field(default_factory=dict)
    params_dense: int | None = None
    params_pruned: int | None = None
    flops_dense: int | None = None
    flops_pruned: int | None = None
    params_reduction: float | None = None
    flops_reduction: float | None = None
    flops_speedup: float | None = None
    spec_dense: dict[str, Any] | None = None
    spec_pruned: dict[str, Any] | None = None
    # the dense net the run started from: sha256 of its state_dict (pruning.rng.state_sha256), the
    # pretrained baseline's (= stages.pretrain.baseline_sha256) or the random init's; None: not recorded
    baseline_sha256: str | None = None
    latency: dict[str, LatencyRecord] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)  # top1, top1_best, top5 of the last stage
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)  # named extra evaluations
    cost_per_sample: dict[str, Any] | None = None  # dynamic nets: {"mean", "p5", "p95", "unit"}
    sparsity: dict[str, Any] | None = None  # {"target": t, "achieved": a, "of": "prunable params"}
    extras: dict[str, Any] = field(default_factory=dict)  # method-specific numbers
    error: str | None = None
    note: str | None = None
    other: dict[str, Any] = field(default_factory=dict)  # fields of a newer writer, kept verbatim

    # ------------------------------------------------------------------ (de)serialisation
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunMetrics:
        """Any readable schema, migrated to the current one (schema 1 lacks the fields added
        since; nothing is dropped: unknown fields land in ``other``)."""
        if not isinstance(data, dict):
            raise SchemaError(f"a run record is a JSON object, not {type(data).__name__}")
        version = data.get("schema")
        if version not in READABLE_SCHEMAS:
            raise SchemaError(f"schema {version!r} is not one of {READABLE_SCHEMAS} (a newer prune-lab wrote it?)")
        if not isinstance(data.get("key"), dict):
            raise SchemaError("no run key")
        known, rest = _known(cls, data)
        known["key"] = RunKey.from_dict(data["key"])
        known["stages"] = {
            name: StageRecord.from_dict(stage or {}) for name, stage in (data.get("stages") or {}).items()
        }
        known["latency"] = {
            name: LatencyRecord.from_dict(name, rec)
            for name, rec in (data.get("latency") or {}).items()
            if isinstance(rec, dict) and {"dense_ms", "pruned_ms", "speedup"} <= rec.keys()
        }
        for name in ("method_settings", "versions", "engine", "data", "budget", "final", "evaluations", "extras"):
            known[name] = known.get(name) or {}
        known["schema"] = SCHEMA_VERSION  # migrated on read
        if not isinstance(known.get("baseline_sha256", ""), str):  # a checksum is a string or absent
            rest["baseline_sha256"] = known.pop("baseline_sha256")
        return cls(**known, other=rest)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "other":
                continue
            if f.name == "key":
                value = asdict(value)
            elif f.name == "stages":
                value = {name: stage.to_dict() for name, stage in value.items()}
            elif f.name == "latency":
                value = {name: rec.to_dict() for name, rec in value.items()}
            if value is None and f.name not in ("status",):
                continue
            out[f.name] = value
        out.update(self.other)
        return out

    # ------------------------------------------------------------------ derived values
    @property
    def is_done(self) -> bool:
        return self.status == "done"

    def measured_speedup(self) -> tuple[float | None, str | None]:
        """The headline measured speed-up: the GPU setting when the run had one, else the CPU
        setting with the largest batch; with the setting's label (e.g. "CPU b64")."""
        if not self.latency:
            return None, None
        gpu = [(name, rec) for name, rec in self.latency.items() if not rec.device.startswith("cpu")]
        pool = gpu or sorted(self.latency.items(), key=lambda item: item[1].batch or 0)
        name, rec = pool[-1] if not gpu else pool[0]
        label = ("GPU" if gpu else "CPU") + (f" b{rec.batch}" if rec.batch and not gpu else "")
        return rec.speedup, label

    def training_macs(self) -> float | None:
        """Total training compute over the stages that recorded it (cached stages count: the
        run depended on them)."""
        costs = [s.train_macs for s in self.stages.values() if s.train_macs is not None]
        return float(sum(costs)) if costs else None
