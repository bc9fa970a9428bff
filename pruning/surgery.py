"""Generic structured surgery: copy the kept channels of every group into a smaller model.

    small = shrink(model, keep)          # keep: {group name: sorted kept channel indices}

The smaller network is built from the same family with the group widths written into a
copy of the spec; every tensor is sliced along the dims its groups name, everything else
is copied as is (a channel-selection group, as in PreResNet/DenseNet, writes its kept
underlying channel indices into the spec instead of a width). Its outputs equal the dense
model's with the dropped channels zeroed after their BN (``zero_channels``), which the tests
check for every model family.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn as nn

from pruning import PruneLabError
from pruning.models import ChannelGroup, build, channel_groups


def _set_path(spec: dict, path: Sequence, value) -> None:
    node = spec
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


def spec_with_widths(spec: dict, widths: dict[str, int]) -> dict:
    """A copy of ``spec`` whose named groups have the given widths."""
    new_spec = copy.deepcopy(spec)
    by_name = {g.name: g for g in channel_groups(spec)}
    for name, width in widths.items():
        if name not in by_name:
            raise PruneLabError(f"unknown channel group {name!r}")
        if not 1 <= width <= by_name[name].size:
            raise PruneLabError(f"group {name}: width {width} outside [1, {by_name[name].size}]")
        _set_path(new_spec, by_name[name].spec_path, _spec_entry(by_name[name], range(int(width))))
    return new_spec


def _spec_entry(group: ChannelGroup, kept: Sequence[int]):
    """What the spec stores for a group keeping positions ``kept``: its width, or for a
    channel-selection group (``meta["selection"]``) the kept underlying channel indices."""
    if group.meta.get("selection"):
        return [int(group.meta["bn_index"][i]) for i in kept]
    return len(kept)


def _normalise_keep(groups: dict[str, ChannelGroup], keep: dict[str, Sequence[int]]):
    out = {}
    for name, idx in keep.items():
        if name not in groups:
            raise PruneLabError(f"unknown channel group {name!r}")
        t = torch.as_tensor(list(idx), dtype=torch.long).unique(sorted=True)
        if t.numel() == 0:
            raise PruneLabError(f"group {name}: cannot keep zero channels")
        if t.min() < 0 or t.max() >= groups[name].size:
            raise PruneLabError(f"group {name}: kept index out of range [0, {groups[name].size})")
        out[name] = t
    return out


@torch.no_grad()
def shrink(model: nn.Module, keep: dict[str, Sequence[int]]) -> nn.Module:
    """Return a new, physically smaller model holding only the kept channels."""
    spec = model.spec
    groups = {g.name: g for g in channel_groups(spec)}
    keep_idx = _normalise_keep(groups, keep)
    new_spec = copy.deepcopy(spec)
    for name, idx in keep_idx.items():
        _set_path(new_spec, groups[name].spec_path, _spec_entry(groups[name], idx.tolist()))
    small = build(new_spec)

    slices: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for name, idx in keep_idx.items():
        for tensor_name, dim in groups[name].members:
            slices.setdefault(tensor_name, []).append((dim, idx))

    old_state = model.state_dict()
    new_state = small.state_dict()
    for key, target in new_state.items():
        value = old_state[key]
        for dim, idx in slices.get(key, []):
            value = value.index_select(dim, idx.to(value.device))
        if value.shape != target.shape:
            raise RuntimeError(f"surgery shape mismatch for {key}: {tuple(value.shape)} vs {tuple(target.shape)}")
        target.copy_(value)
    return small.to(next(model.parameters()).device)


@torch.no_grad()
def zero_channels(model: nn.Module, keep: dict[str, Sequence[int]]) -> nn.Module:
    """A copy of the dense model whose dropped channels are zeroed after BN (reference for
    the surgery-equivalence tests)."""
    dense = copy.deepcopy(model)
    groups = {g.name: g for g in channel_groups(model.spec)}
    state = dense.state_dict()
    for name, idx in _normalise_keep(groups, keep).items():
        drop = torch.ones(groups[name].size, dtype=torch.bool)
        drop[idx] = False
        selection = bool(groups[name].meta.get("selection"))
        for tensor_name, dim in groups[name].members:
            # zero the producer's filters and its BN affine terms: the channel is then 0 after BN;
            # a selection group's BN stays full-size, so its dropped channels are zeroed where
            # they are read (the consumer's input channels)
            if selection and dim == 1:
                state[tensor_name].index_fill_(1, drop.nonzero().flatten(), 0.0)
            elif dim == 0 and not tensor_name.endswith(("running_mean", "running_var")):
                state[tensor_name].index_fill_(0, drop.nonzero().flatten(), 0.0)
    return dense
