"""Data-parallel training that is the single-process optimisation, split across processes.

``batch_size`` is the global batch. With ``W`` DDP processes every rank draws
the same stream of training windows (GluonTS's instance samplers and shuffle
buffer use NumPy's and Python's global generators, which rank 0 broadcasts to
the others at the first batch) and trains on its share of each batch, rows
``r, r + W, ...``. The ranks' gradients are averaged, so ``W`` processes take
the optimiser steps of one process on the same windows, each doing ``1/W`` of
the work: the learning rate, epochs and A schedule chosen for one process hold
unchanged. Torch's generator (diffusion times and noise) gets a stream of its
own on each rank > 0, so the ranks' shares are perturbed independently.
Single-process training is untouched, bit for bit.

(The version up to commit f3eec66 gave each rank its own windows and a full batch: a
2-process run then saw twice the windows per step and forecast worse on exchange
than one process; benchmarks/results_scaling.md, section 3.)
"""

from __future__ import annotations

import os
import random
import warnings
from typing import Iterable, Iterator, Optional, Tuple

import numpy as np
import torch

from vsmd_ts.training.distributed import process_group

__all__ = ["RankSeededLoader", "rank_and_world_size", "reseed_torch_for_rank", "share_data_stream"]


def rank_and_world_size(rank: Optional[int] = None, world_size: Optional[int] = None) -> Tuple[int, int]:
    """Global rank and world size: the arguments, else the process group, else the
    launcher's environment (``RANK``/``WORLD_SIZE``, or Lightning's
    ``NODE_RANK``/``LOCAL_RANK`` with ``LOCAL_WORLD_SIZE``), else ``(0, 1)``."""
    group = process_group()
    if rank is None and group is not None:
        rank, world_size = group
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


def reseed_torch_for_rank(rank: int) -> None:
    """Move torch's global generator to a stream of its own for ``rank`` (no-op for rank 0).

    The new seed mixes torch's initial seed (so it still follows
    ``seed_everything``) with the rank through ``SeedSequence``; NumPy's and
    Python's generators, which draw the windows, are left alone.
    """
    if rank == 0:
        return
    torch.manual_seed(int(np.random.SeedSequence([torch.initial_seed(), int(rank)]).generate_state(1)[0]))


def share_data_stream() -> None:
    """Give every rank of the process group rank 0's NumPy and Python generator states.

    The ranks ran the same seeding, but any code that drew from those generators
    on one rank only would make their window streams diverge; broadcasting
    makes every rank draw exactly rank 0's windows. No-op without a process group.
    """
    if (process_group() or (0, 1))[1] == 1:
        return
    state = [(np.random.get_state(), random.getstate())]
    torch.distributed.broadcast_object_list(state, src=0)
    np.random.set_state(state[0][0])
    random.setstate(state[0][1])


class RankSeededLoader:
    """Training loader wrapper that gives each DDP rank its share of every batch.

    At the first batch (inside ``trainer.fit``, where the process group exists)
    the ranks' window streams are made equal (:func:`share_data_stream`) and
    torch's reseeded per rank (:func:`reseed_torch_for_rank`); rank ``r`` of
    ``W`` then yields rows ``r::W`` of each batch. A batch smaller than ``W``
    is an error; one not divisible by ``W`` gives shares one row apart, which
    weighs the rows of the larger shares slightly less in the averaged gradient (warned).

    Parameters
    ----------
    loader
        Re-iterable training loader (GluonTS ``as_stacked_batches`` output), yielding
        dicts of tensors with the batch as their first dimension.
    rank, world_size
        Override the detection of :func:`rank_and_world_size` (tests).
    """

    def __init__(self, loader: Iterable, rank: Optional[int] = None, world_size: Optional[int] = None):
        self.loader = loader
        self.rank, self.world_size = rank, world_size
        self._share: Optional[Tuple[int, int]] = None
        self._warned = False

    def __iter__(self) -> Iterator:
        if self._share is None:
            self._share = rank_and_world_size(self.rank, self.world_size)
            share_data_stream()
            reseed_torch_for_rank(self._share[0])
        rank, world = self._share
        if world == 1:
            yield from self.loader
            return
        for batch in self.loader:
            n = len(next(iter(batch.values())))
            if n < world:
                raise ValueError(f"a batch of {n} windows cannot be split between {world} processes: "
                                 f"use batch_size >= {world}")
            if n % world and not self._warned:
                self._warned = True
                warnings.warn(f"batch of {n} windows split between {world} processes: shares differ by one row; "
                              f"a batch_size divisible by {world} makes the split exact")
            yield {k: v[rank::world] for k, v in batch.items()}
