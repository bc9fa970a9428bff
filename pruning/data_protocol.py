"""The dataset protocol (``Data``) and the helpers every kind of data shares: device naming and
the DDP sharding rules. Image data (``pruning.data``) and text data (``pruning.text_data``) both
build on this module and neither imports the other at module level (the protocol itself is
described in ``pruning.data``'s docstring)."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from typing import Any

import torch

from pruning import PruneLabError


def rank_share(t: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Every world_size-th element from ``rank`` on, after trimming to a multiple of world_size."""
    return t[: (len(t) // world_size) * world_size][rank::world_size]


def shard(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous [lo, hi) part of ``n`` ordered items that ``rank`` evaluates."""
    return n * rank // world_size, n * (rank + 1) // world_size


def canonical_device(device: str | torch.device) -> torch.device:
    """``cuda`` -> ``cuda:<current>``: the device the tensors report after ``.to("cuda")``."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


class Data(abc.ABC):
    """What the pipeline, train.py and the methods may use of a dataset (see ``pruning.data``'s
    module docstring). Nothing here assumes images: inputs are whatever ``train_batches`` yields.

    Subclasses provide the attributes ``name``, ``train``, ``test`` (splits with ``len()``,
    ``to(device)`` and ``subset(indices)``), ``info``, ``augment`` and ``device``, and the methods
    marked abstract; the rest is shared."""

    task: str = "?"
    name: str
    train: Any
    test: Any
    info: dict
    augment: bool
    device: torch.device

    # --- what each kind provides
    @property
    @abc.abstractmethod
    def input_shape(self) -> tuple[int, ...]:
        """One input's shape without the batch dimension (FLOPs counts and model checks use it)."""

    @abc.abstractmethod
    def _replace(self, **changes: Any) -> Data:
        """A copy with some of ``train``, ``test``, ``info``, ``device``, ``augment`` changed."""

    @abc.abstractmethod
    def train_batches(
        self, batch_size: int, generator: torch.Generator, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled (augmented) training batches on ``self.device``; the order depends only on
        ``generator``; under DDP a disjoint share per rank (see ``rank_share``)."""

    @abc.abstractmethod
    def test_batches(
        self, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Test batches in order on ``self.device``; under DDP a contiguous shard per rank."""

    @abc.abstractmethod
    def sample_inputs(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """``count`` random training inputs, prepared as for testing (no augmentation), on the
        device: what data-driven pruning criteria (ThiNet, LASSO channel pruning) run on."""

    # --- shared
    def to(self, device: str | torch.device) -> Data:
        """The same data with both splits on ``device``; ``data.device`` records it."""
        device = canonical_device(device)
        return self._replace(train=self.train.to(device), test=self.test.to(device), device=device)

    @property
    def label(self) -> str:
        """How tables name the data (``data.label``, else a default per kind)."""
        return self.info.get("label") or self.name

    @property
    def fingerprint(self) -> str | None:
        """Content hash of the data read (part of the baseline cache key)."""
        return self.info.get("fingerprint")

    def subset_indices(self, count: int) -> list[int]:
        """Which training items ``subset_train(count)`` keeps: the first ``count``."""
        return list(range(count))

    def subset_train(self, count: int) -> Data:
        """Only ``count`` training items (``data.train_subset``); the test set is unchanged."""
        if not 0 < count <= len(self.train):
            raise PruneLabError(f"data.train_subset={count} must be in [1, {len(self.train)}]")
        return self._replace(train=self.train.subset(self.subset_indices(count)))

    def split_train(self, fraction: float, seed: int) -> tuple[Data, Data]:
        """Two datasets whose training sets are disjoint random parts of this one's (the first
        holds ``fraction`` of the items, both keep their original order), sharing the test set:
        e.g. TAS updates weights on one part and architecture parameters on the other."""
        if not 0.0 < fraction < 1.0:
            raise PruneLabError(f"split fraction {fraction!r} must be in (0, 1)")
        n = len(self.train)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        cut = int(round(n * fraction))
        if cut < 1 or cut >= n:
            raise PruneLabError(f"cannot split {n} training images at fraction {fraction}: one part would be empty")
        parts = []
        for idx in (order[:cut].sort().values, order[cut:].sort().values):
            info = {**self.info, "split": {"fraction": fraction, "seed": seed, "size": len(idx)}}
            parts.append(self._replace(train=self.train.subset(idx), info=info))
        return parts[0], parts[1]
