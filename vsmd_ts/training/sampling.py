"""Drawing samples from a trained :class:`~vsmd_ts.diffusion.ScoreModel` (torch only).

One helper for the toy and image front ends: prior draws at ``T``, any
sampler of :data:`vsmd_ts.diffusion.SAMPLERS` on the uniform time grid, in
batches, optionally recording the data part of every grid state; and
:func:`steps_for_nfe`, the steps that spend a given number of network calls
(:func:`nfe_per_step` the other way).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from vsmd_ts.diffusion import get_sampler, time_grid

__all__ = ["Samples", "draw_samples", "nfe_per_step", "steps_for_nfe"]

# score evaluations per step of the samplers that make more than one
_EVALS_PER_STEP = {"heun": 2, "exp_heun": 2}


def nfe_per_step(sampler: str, networks_per_call: int = 1) -> int:
    """Network calls per sample of one step of ``sampler`` (see :func:`steps_for_nfe`)."""
    return _EVALS_PER_STEP.get(sampler.lower(), 1) * int(networks_per_call)


def steps_for_nfe(nfe: int, sampler: str, networks_per_call: int = 1) -> int:
    """Sampler steps that spend exactly ``nfe`` network calls per sample.

    ``networks_per_call``: networks one score evaluation calls (2 for the
    SB's probability-flow ODE of ASBM). ``ValueError`` when ``nfe`` is not a
    multiple of the calls of one step.
    """
    per_step = nfe_per_step(sampler, networks_per_call)
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < per_step or nfe % per_step:
        raise ValueError(f"nfe must be a positive multiple of {per_step} for {sampler} "
                         f"({per_step} network calls per step), got {nfe!r}")
    return nfe // per_step


@dataclass
class Samples:
    """Generated data and (optionally) their paths.

    Attributes
    ----------
    x
        Samples ``(N, *data_shape)``, float32, on the sampling device.
    traj
        Data part of the states ``(steps + 1, N, *data_shape)`` at the grid times, or ``None``.
    ts
        Grid times ``(steps + 1,)`` from ``T`` down to ``eps``.
    nfe
        Network calls per sample: the sampler's score evaluations times the
        model's ``networks_per_call`` (1 unless it says otherwise).
    """

    x: torch.Tensor
    traj: Optional[torch.Tensor]
    ts: torch.Tensor
    nfe: int


@torch.no_grad()
def draw_samples(model, num: int, steps: int = 50, sampler: str = "heun", prior: str = "data", data_var=1.0,
                 seed: int = 0, batch_size: Optional[int] = None, record: bool = False, device=None,
                 progress: bool = False) -> Samples:
    """Draw ``num`` samples from ``model`` (put in eval mode for the call).

    Parameters
    ----------
    model
        ``ScoreModel(sde, net)``, or a module with ``sde`` and the same call
        (e.g. :class:`~vsmd_ts.training.asbm.BridgeFlowScore`).
    num, steps
        Number of samples and sampler steps (Heun: ``2 * steps`` evaluations).
    sampler
        A name of :data:`vsmd_ts.diffusion.SAMPLERS`.
    prior, data_var
        Sampling prior at ``T`` (:meth:`~vsmd_ts.diffusion.LinearSDE.prior_cov`).
    seed
        Seeds the prior draws and the SDE samplers' noise (same seed and ``batch_size``: same samples).
    batch_size
        Samples per solve (default: all at once).
    record
        Keep the data part of every grid state.
    device
        Device of the computation (default: the model's).
    progress
        tqdm bar over the steps.
    """
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be a positive int, got {num!r}")
    sample_fn = get_sampler(sampler)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    sde, was_training = model.sde, model.training
    model.eval()
    generator = torch.Generator(device=device).manual_seed(int(seed))
    ts = time_grid(sde, steps, device=device)
    batch_size = num if batch_size is None else int(batch_size)
    xs, trajs, nfe = [], [], 0
    for start in range(0, num, batch_size):
        a = sde.prior_sample(min(batch_size, num - start), kind=prior, data_var=data_var, generator=generator,
                             device=device)
        path = []

        def keep(i, t, state, score):
            path.append(state[:, 0].clone())

        out = sample_fn(model, sde, a, ts, generator=generator, callback=keep if record else None, progress=progress)
        xs.append(out.x.float())
        if record:
            trajs.append(torch.stack(path + [out.x.float()]))
        nfe = out.nfe * getattr(model, "networks_per_call", 1)
    model.train(was_training)
    return Samples(torch.cat(xs), torch.cat(trajs, dim=1) if record else None, ts, nfe)
