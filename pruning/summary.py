"""The small comparison table ``prune-exp`` prints at the end of a run (rich)."""

from __future__ import annotations

from rich.table import Table


def _m(n: float | None) -> str:
    return "—" if n is None else f"{n / 1e6:.2f}M"


def _acc(stage: dict | None, key: str = "top1") -> str:
    return "—" if not stage or stage.get(key) is None else f"{stage[key]:.2f}"


def _bpc(stage: dict | None, key: str) -> str:
    return "—" if not stage or stage.get(key) is None else f"{stage[key]:.3f}"


def _has_pruned_row(metrics: dict) -> bool:
    """The pruned net's sizes are known: it was pruned, or a dry run counted its architecture."""
    stages = metrics.get("stages") or {}
    return "params_pruned" in metrics and (bool(stages.get("prune")) or metrics.get("status") == "dry_run")


def _dry_run_caption(metrics: dict) -> str:
    """What a dry run did (counts only) and the budget it plans."""
    if metrics.get("status") != "dry_run":
        return ""
    text = "dry run: architectures and counts only (random weights: no accuracy)"
    budget = metrics.get("budget") or {}
    if budget.get("pretrain_epochs") is not None:
        text += f"; planned: pretrain {budget['pretrain_epochs']} epochs"
        if budget.get("stage_epochs") is not None and metrics["key"].get("finetune", "none") != "none":
            text += f", {metrics['key']['finetune']} {budget['stage_epochs']} epochs"
    if metrics.get("note"):
        text += f"\n{metrics['note']}"
    return text + "\n"


def _target_caption(metrics: dict) -> str:
    """A yellow line when the method missed its target (``extras.target``, pruning.methods.targets)."""
    target = (metrics.get("extras") or {}).get("target")
    if not isinstance(target, dict) or target.get("met") is not False:
        return ""
    from pruning.methods.targets import describe

    try:
        return f"\n[yellow]warning: {describe(target, str(metrics['key']['method']))}[/]"
    except (KeyError, TypeError, ValueError):
        return "\n[yellow]warning: the method missed its target (extras.target in metrics.json)[/]"


def lm_summary_table(metrics: dict, title: str) -> Table:
    """A language model's run: bits per character (validation during training; the final valid /
    test numbers with the official one-lane evaluation), params, MACs per character."""
    final = metrics.get("final") or {}
    caption = f"bits per character · status: {metrics['status']} · {metrics.get('run_dir', '')}"
    if final.get("bpc") is not None:
        caption = f"final (one lane): valid {final['bpc_valid']:.4f} bpc, test {final['bpc']:.4f} bpc\n" + caption
    table = Table(title=title, caption=_dry_run_caption(metrics) + caption + _target_caption(metrics))
    for col in ("model", "valid bpc", "test bpc", "params", "MACs/char", "params↓", "MACs↓", "epochs"):
        table.add_column(col, justify="right" if col != "model" else "left")
    stages = metrics.get("stages", {})
    pre = stages.get("pretrain")
    table.add_row(
        "dense",
        _bpc(pre, "bpc_valid"),
        _bpc(pre, "bpc"),
        _m(metrics.get("params_dense")),
        _m(metrics.get("flops_dense")),
        "",
        "",
        str(pre.get("epochs", "")) if pre else "",
    )
    if _has_pruned_row(metrics):
        red = (f"{metrics['params_reduction']:.1f}%", f"{metrics['flops_reduction']:.1f}%")
        sizes = (_m(metrics["params_pruned"]), _m(metrics["flops_pruned"]))
        table.add_row("pruned", _bpc(stages.get("prune"), "bpc_valid"), "", *sizes, *red, "")
        policy = metrics["key"]["finetune"]
        if policy != "none" and stages.get("prune"):
            epochs = str(metrics.get("budget", {}).get("stage_epochs", ""))
            table.add_row(f"+{policy}", _bpc(stages.get(policy), "bpc_valid"), "", *sizes, *red, epochs)
    return table


def summary_table(metrics: dict) -> Table:
    key = metrics["key"]
    tag = key.get("variant") or (f"ratio {key['ratio']:g}" if key.get("ratio") is not None else "dense")
    adv = key.get("adv_train", "none")
    title = f"{key['method']} · {key['model']} · {key['data']} · {tag} · {key['finetune']}"
    title += (f" · adv_train={adv}" if adv != "none" else "") + f" · seed {key['seed']}"
    pretrain = metrics.get("stages", {}).get("pretrain") or {}
    if pretrain.get("bpc") is not None or "bpc" in (metrics.get("final") or {}):
        return lm_summary_table(metrics, title)
    caption = f"accuracy in % · status: {metrics['status']} · {metrics.get('run_dir', '')}"
    for name, ev in (metrics.get("evaluations") or {}).items():
        if "top1" in ev:
            vuln = f", vulnerability {ev['vulnerability']:.4f}" if ev.get("vulnerability") is not None else ""
            caption += f"\n{name} ({ev.get('box', 'white')}-box): top-1 {ev['top1']:.2f}%{vuln} on {ev.get('n')} images"
    table = Table(title=title, caption=_dry_run_caption(metrics) + caption + _target_caption(metrics))
    for col in ("model", "top-1", "best", "top-5", "params", "MACs", "params↓", "MACs↓", "epochs"):
        table.add_column(col, justify="right" if col != "model" else "left")
    stages = metrics.get("stages", {})
    pre = stages.get("pretrain")
    table.add_row(
        "dense",
        _acc(pre),
        _acc(pre, "top1_best"),
        _acc(pre, "top5"),
        _m(metrics.get("params_dense")),
        _m(metrics.get("flops_dense")),
        "",
        "",
        str(pre.get("epochs", "")) if pre else "",
    )
    if _has_pruned_row(metrics):
        red = (f"{metrics['params_reduction']:.1f}%", f"{metrics['flops_reduction']:.1f}%")
        table.add_row(
            "pruned",
            _acc(stages.get("prune")),
            "",
            _acc(stages.get("prune"), "top5"),
            _m(metrics["params_pruned"]),
            _m(metrics["flops_pruned"]),
            *red,
            "",
        )
        policy = key["finetune"]
        st = stages.get(policy)
        if policy == "none" or not stages.get("prune"):  # no second stage (or a dry run: nothing trained)
            return table
        table.add_row(
            f"+{policy}",
            _acc(st),
            _acc(st, "top1_best"),
            _acc(st, "top5"),
            _m(metrics["params_pruned"]),
            _m(metrics["flops_pruned"]),
            *red,
            str(metrics.get("budget", {}).get("stage_epochs", "")),
        )
    return table
