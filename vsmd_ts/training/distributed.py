"""The process group, when there is one."""

from typing import Optional, Tuple

import torch


def process_group() -> Optional[Tuple[int, int]]:
    """``(rank, world_size)`` of the initialised default process group, else ``None``."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return None
