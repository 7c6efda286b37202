"""Training precision: ``"auto"`` takes bfloat16 mixed precision where this CPU runs it much faster.

Imports torch only. Mixed precision (Lightning's ``"bf16-mixed"``) runs the
matrix products and the RNN under ``torch.autocast`` in bfloat16 and keeps
the weights, the optimiser and everything written in float64 (the
transition moments, the whitening) as they are. Whether it pays depends on
the CPU, not on a flag one can read: on the AMD EPYC of our development VM
an electricity-shaped training step took 0.24-0.31 s against 0.57-0.76 s in
float32 (2 threads), on an Intel Xeon (2026-11-23) it was slower
than float32. So ``"auto"`` times one bfloat16 and one float32 matrix
product of a denoiser's size once per process and thread count, and takes
bfloat16 only when it is at least :data:`BF16_MIN_SPEEDUP` times faster.
Sampling always runs in float32.
"""

from __future__ import annotations

import functools
import logging
import time

import torch

__all__ = ["BF16_MIN_SPEEDUP", "bf16_matmul_speedup", "resolve_precision"]

logger = logging.getLogger(__name__)

# far from 1 on purpose: the choice must not flip between runs on one machine with timing noise
BF16_MIN_SPEEDUP = 2.0


@functools.lru_cache(maxsize=None)
def _speedup(threads: int, rows: int, width: int, repeats: int) -> float:
    g = torch.Generator().manual_seed(0)
    a, w = torch.randn(rows, width, generator=g), torch.randn(width, width, generator=g)
    pairs = {torch.float32: (a, w), torch.bfloat16: (a.bfloat16(), w.bfloat16())}
    best = {dtype: float("inf") for dtype in pairs}
    for _ in range(repeats + 1):  # the first round warms up the kernels
        for dtype, (x, y) in pairs.items():
            t0 = time.perf_counter()
            x @ y
            best[dtype] = min(best[dtype], time.perf_counter() - t0)
    return best[torch.float32] / best[torch.bfloat16]


def bf16_matmul_speedup(rows: int = 2048, width: int = 512, repeats: int = 5) -> float:
    """Time of a float32 ``(rows x width) @ (width x width)`` product over a bfloat16 one on this CPU.

    Best of ``repeats`` interleaved runs each (about 0.1 s in all), memoised
    per process and torch thread count.
    """
    return _speedup(torch.get_num_threads(), rows, width, repeats)


def _trains_on_cpu(accelerator) -> bool:
    if accelerator == "cpu":
        return True
    if accelerator not in (None, "auto"):
        return False
    mps = getattr(torch.backends, "mps", None)
    return not torch.cuda.is_available() and not (mps is not None and mps.is_available())


def resolve_precision(precision, accelerator="auto"):
    """Lightning's ``precision`` for a run: ``precision`` itself unless it is ``"auto"``.

    ``"auto"``: ``"bf16-mixed"`` when training runs on the CPU
    (``accelerator`` ``"cpu"``, or ``"auto"``/``None`` without a GPU) and
    :func:`bf16_matmul_speedup` is at least :data:`BF16_MIN_SPEEDUP`;
    ``"32-true"`` otherwise (GPUs included: not measured there). Each
    process decides for itself, so DDP ranks on one machine time the same
    CPU; pass an explicit precision where that is not enough.
    """
    if precision != "auto":
        return precision
    if _trains_on_cpu(accelerator):
        speedup = bf16_matmul_speedup()
        choice = "bf16-mixed" if speedup >= BF16_MIN_SPEEDUP else "32-true"
        logger.info("precision='auto': %s (bfloat16 matrix products %.1fx as fast as float32 on this CPU)",
                    choice, speedup)
        return choice
    return "32-true"
