"""Distinct training windows per process under data-parallel training.

GluonTS draws training windows with NumPy's and Python's global random
generators (instance samplers, shuffle buffer), and the diffusion times and
noise come from torch's. With a fixed seed every DDP rank starts from the same
states and would train on identical batches, which adds no throughput. The
wrapper below gives each rank > 0 its own, reproducible, streams: when the
training loader is first iterated (inside ``trainer.fit``, where the process
group exists) it reseeds the three global generators from ``(a draw of the
current state, rank)``. Rank 0 of a single-process run is left untouched, so
single-process training is bit-for-bit what it was.
"""

from __future__ import annotations

import os
import random
from typing import Iterable, Iterator, Optional, Tuple

import numpy as np
import torch

__all__ = ["RankSeededLoader", "rank_and_world_size", "reseed_for_rank"]


def rank_and_world_size(rank: Optional[int] = None, world_size: Optional[int] = None) -> Tuple[int, int]:
    """Global rank and world size: the arguments, else the process group, else the
    launcher's environment (``RANK``/``WORLD_SIZE``, or Lightning's
    ``NODE_RANK``/``LOCAL_RANK`` with ``LOCAL_WORLD_SIZE``), else ``(0, 1)``."""
    if rank is None and torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    if rank is None:
        if "RANK" in os.environ:
            rank = int(os.environ["RANK"])
        elif "LOCAL_RANK" in os.environ:
            per_node = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
            rank = int(os.environ.get("NODE_RANK", "0")) * per_node + int(os.environ["LOCAL_RANK"])
        else:
            rank = 0
    if world_size is None:
        world_size = int(os.environ.get("WORLD_SIZE", str(rank + 1)))
    if not 0 <= rank < max(world_size, 1):
        raise ValueError(f"rank {rank} outside world size {world_size}")
    return int(rank), int(world_size)


def reseed_for_rank(rank: int) -> None:
    """Move NumPy's, Python's and torch's global generators to a stream of their
    own for ``rank`` (no-op for rank 0).

    The new seed mixes one draw from the current NumPy state (so it still
    follows ``seed_everything``) with the rank through ``SeedSequence``, which
    decorrelates the streams of different ranks.
    """
    if rank == 0:
        return
    base = int(np.random.randint(0, 2**31 - 1))
    state = np.random.SeedSequence([base, int(rank)]).generate_state(3)
    np.random.seed(int(state[0]))
    random.seed(int(state[1]))
    torch.manual_seed(int(state[2]))


class RankSeededLoader:
    """Training loader wrapper that reseeds for its rank before the first batch.

    Parameters
    ----------
    loader
        Re-iterable training loader (GluonTS ``as_stacked_batches`` output).
    rank, world_size
        Override the detection of :func:`rank_and_world_size` (tests).
    """

    def __init__(self, loader: Iterable, rank: Optional[int] = None, world_size: Optional[int] = None):
        self.loader = loader
        self.rank, self.world_size = rank, world_size
        self._seeded = False

    def __iter__(self) -> Iterator:
        if not self._seeded:
            self._seeded = True
            rank, _ = rank_and_world_size(self.rank, self.world_size)
            reseed_for_rank(rank)
        return iter(self.loader)
