"""An example prune-lab plug-in that lives outside ``pruning/`` (tests/test_plugin.py installs it
by putting this folder on PYTHONPATH; a real plug-in is ``pip install``-ed): "first-k" filter
pruning, the naive index baseline -- keep the first (1 - ratio) of every conv's filters, whatever
their weights. Its config is ``conf/method/first_k.yaml``, its table ``conf/report/first_k_demo.yaml``;
both are found through the entry points in ``prunelab_first_k-0.1.dist-info/entry_points.txt``."""

from __future__ import annotations

import torch
import torch.nn as nn

from pruning.methods.base import Method, PruneContext, PruneResult, check_ratio
from pruning.models import channel_groups
from pruning.surgery import shrink


class FirstK(Method):
    name = "first_k"
    data_free_architecture = True  # the kept filters depend on the ratio alone

    def __init__(self, ratio: float = 0.5):
        self.ratio = check_ratio(ratio)

    def key(self) -> dict:
        return {"ratio": self.ratio}

    @torch.no_grad()
    def prune(self, model: nn.Module, ctx: PruneContext) -> PruneResult:
        keep = {
            g.name: list(range(max(1, int(g.size * (1 - self.ratio)))))
            for g in channel_groups(model.spec)
            if "fc_index" not in g.meta and not g.meta.get("selection")
        }
        small = shrink(model, keep)
        return PruneResult(model=small, spec=small.spec, keep=keep)
