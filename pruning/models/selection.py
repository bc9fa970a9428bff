"""Channel selection: pick a subset of a full-width tensor's channels, as Network Slimming does
on pre-activation ResNets and DenseNets (Liu et al., ICCV 2017, ``channel_selection``).

In those networks the first BN of a block normalises the *whole* trunk (the residual sum or
the concatenated features), and only the following conv reads a subset of it. Pruning such a
BN therefore keeps the BN (and the trunk) at full width and removes channels by selection:

    bn (C) -> select (C -> k) -> relu -> conv (k -> ...)

The selected trunk indices are part of the width spec, so a pruned network rebuilt from its
spec (scratch-E/B) selects exactly the channels the pruned one did, as the Rethinking scripts
copy ``indexes`` into their scratch models. A spec entry is ``None`` (all C channels, the
dense network) or a sorted list of kept trunk indices; its length is the group's width.
``pruning.surgery`` composes such lists when a selection group shrinks (groups whose
``meta["selection"]`` is true).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from pruning import PruneLabError


def selected(entry: Sequence[int] | None, width: int, where: str) -> list[int]:
    """The trunk indices a selection spec entry keeps (``None`` = all ``width`` of them)."""
    if entry is None:
        return list(range(width))
    indices = [int(i) for i in entry]
    if not indices:
        raise PruneLabError(f"{where}: a channel selection must keep at least 1 channel")
    if sorted(set(indices)) != indices or indices[0] < 0 or indices[-1] >= width:
        raise PruneLabError(f"{where}: selection {indices[:8]}... must be sorted, unique trunk indices in [0, {width})")
    return indices


class ChannelSelection(nn.Module):
    """Keep the listed channels of a (N, C, H, W) tensor; identity when all are kept.

    The indices live in a non-persistent buffer built from the spec, so state_dicts hold
    only weights and the surgery never slices it."""

    def __init__(self, width: int, entry: Sequence[int] | None, where: str = "selection"):
        super().__init__()
        self.width = width
        indices = None if entry is None else torch.tensor(selected(entry, width, where))
        self.register_buffer("indices", indices, persistent=False)

    @property
    def out_channels(self) -> int:
        return self.width if self.indices is None else int(self.indices.numel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.indices is None:
            return x  # (N, C, H, W)
        return x.index_select(1, self.indices)  # (N, k, H, W)

    def extra_repr(self) -> str:
        return f"{self.width} -> {self.out_channels}"
