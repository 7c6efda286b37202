"""Sampling prior, sample generation with trajectories, and evaluation of toy models.

Samples are drawn by integrating the probability-flow ODE with Heun's method
(the paper's sampler) from a Gaussian prior at ``T``; the data part ``x`` of
every grid state can be recorded to measure straightness and plot paths.

Priors (``kind``):

* ``"transition"``: ``N(0, Sigma_{T|0})``, the paper's prior; it ignores the
  part of the data that survives to ``T``, which is what makes a slow SDE fail
  on a stretched axis;
* ``"data"``: the Gaussian with the marginal covariance at ``T`` for data of
  the dataset's **per-axis** variance (``Sigma_{T|0}`` plus
  ``e^{FT} diag(var_j, 1) e^{F^T T}``);
* ``"stationary"``: ``N(0, Sigma_inf)``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from vsmd_ts.training.sampling import Samples, draw_samples, steps_for_nfe

from .data import ToyDataset, get_dataset
from .metrics import iqr_ratio, marginal_pmf_rmse, outside_fraction, pmf_rmse, std_ratio, straightness

__all__ = ["PRIORS", "ToySamples", "asbm_sampling_model", "evaluate", "forward_prior_check", "generate", "metrics_dict",
           "steps_for_nfe"]

PRIORS = ("transition", "data", "stationary", "fixed")


def asbm_sampling_model(model, sampler: str):
    """What samples an ASBM model with ``sampler``: the backward network alone on the reverse SDE
    (``euler_maruyama``, ``splitting``, ``sde_pc2``), else the SB's probability-flow ODE with
    both networks (:class:`~vsmd_ts.training.asbm.BridgeFlowScore`, 2 network calls per evaluation)."""
    from vsmd_ts.diffusion.asbm import REVERSE_SDE_SAMPLERS
    from vsmd_ts.training.asbm import BridgeFlowScore

    return model if sampler.lower() in REVERSE_SDE_SAMPLERS else BridgeFlowScore(model).eval()


@torch.no_grad()
def forward_prior_check(model, dataset, num: int = 10_000, steps: int = 19, seed: int = 0, scheme: str = "euler",
                        grid: str = "uniform") -> dict:
    """ASBM's stage-1 prior check: the controlled forward SDE from ``num`` data points against ``N(0, I)``.

    ``model`` has ``sde`` and ``control`` (stage 1's
    :class:`~vsmd_ts.training.asbm.ForwardNets` or stage 2's
    :class:`~vsmd_ts.training.asbm.BridgeScoreModel`); ``steps`` steps of
    the integrator ``scheme`` on ``grid`` (:func:`vsmd_ts.diffusion.asbm.simulate_controlled`;
    pass the run's ``asbm_sim_scheme`` and ``asbm_sim_grid``).
    Returns :func:`vsmd_ts.diffusion.prior_check`'s errors and verdict, with the
    endpoints' ``mean`` ``(K * 2,)`` and ``cov`` ``(K * 2, K * 2)`` as lists
    (state order: ``x`` then ``v`` for momentum bases).
    """
    from vsmd_ts.diffusion import ASBM, prior_check

    dataset = get_dataset(dataset) if not isinstance(dataset, ToyDataset) else dataset
    g = torch.Generator().manual_seed(int(seed))
    x0 = dataset.sample(int(num), g)
    _, a1, _ = ASBM(model.sde, model.control, None, am_steps=steps, sim_scheme=scheme, sim_grid=grid).couplings(
        x0, generator=g)
    prior = torch.randn(a1.shape, generator=g)
    flat = a1.flatten(1).double()
    return {**prior_check(a1, prior), "mean": [round(float(v), 4) for v in flat.mean(0)],
            "cov": [[round(float(v), 4) for v in row] for row in torch.cov(flat.T)], "num": int(num), "steps": int(steps),
            "scheme": scheme, "grid": grid}


def _check_prior(kind: str, data_var) -> None:
    if kind not in PRIORS:
        raise ValueError(f"unknown prior {kind!r}; choose one of {', '.join(PRIORS)}")
    if kind == "data" and data_var is None:
        raise ValueError("the 'data' prior needs the per-axis data variance data_var (one scalar would undo the stretch)")


# what generate returns: the shared training path's samples (x (N, 2), traj, ts, nfe)
ToySamples = Samples


@torch.no_grad()
def generate(
    model,
    num: int,
    steps: int = 50,
    sampler: str = "heun",
    prior: str = "transition",
    data_var: Optional[Sequence[float]] = None,
    seed: int = 0,
    record: bool = False,
    batch_size: Optional[int] = None,
    progress: bool = False,
) -> ToySamples:
    """Draw ``num`` samples from a trained toy model.

    Parameters
    ----------
    model
        :class:`~vsmd_ts.diffusion.ScoreModel` ``(sde, net)``, on the CPU.
    num
        Number of samples.
    steps
        Sampler steps (Heun: ``2 * steps`` score evaluations).
    sampler
        ``"heun"`` (probability-flow ODE), ``"euler_maruyama"`` or ``"splitting"``
        (reverse SDE) or ``"exp_heun"``.
    prior, data_var
        Sampling prior (see :meth:`~vsmd_ts.diffusion.LinearSDE.prior_cov`); ``"data"``
        needs the per-axis ``data_var``.
    seed
        Seed of the prior draws and of the SDE samplers' noise.
    record
        Keep the data part of every grid state (for straightness and plots).
    batch_size
        Samples per solve (default: all at once).
    progress
        tqdm bar over the steps.
    """
    _check_prior(prior, data_var)
    out = draw_samples(model, num, steps, sampler, prior, 1.0 if data_var is None else data_var, seed, batch_size,
                       record, torch.device("cpu"), progress)
    if not torch.isfinite(out.x).all():
        raise FloatingPointError("sampling produced NaN or inf; the model or the step count is unstable")
    return out


def evaluate(
    model,
    dataset,
    num: int = 10_000,
    steps: int = 50,
    prior: str = "transition",
    data_var: Optional[Sequence[float]] = None,
    seed: int = 0,
    num_true: int = 100_000,
    true_seed: int = 2**20,
    progress: bool = False,
    sampler: str = "heun",
) -> dict:
    """Metrics of a model on its dataset, with Heun on the probability-flow ODE (or ``sampler``).

    Returns a dict with ``pmf_rmse`` (100 x 100 cells), the fraction of
    generated points ``outside`` the true box, per-axis ``marginal_rmse``,
    ``std_ratio``, ``iqr_ratio``, ``straightness`` (mean over particles, the
    definition) and ``straightness_median`` (lists of 2), the ``nfe``, and the
    ``samples`` object (points and trajectories) and ``true`` points for plots.
    The true samples come from a fixed seed, so all models are compared with
    the same reference.
    """
    dataset = get_dataset(dataset) if not isinstance(dataset, ToyDataset) else dataset
    true = dataset.sample(num_true, torch.Generator().manual_seed(true_seed))
    out = generate(model, num, steps, sampler, prior, data_var, seed, record=True, progress=progress)
    return {**metrics_dict(out, true), "samples": out, "true": true}


def metrics_dict(samples: ToySamples, true: torch.Tensor) -> dict:
    """All toy metrics of generated ``samples`` (with trajectories) against ``true`` points ``(M, 2)``."""
    x = samples.x
    out = {
        "pmf_rmse": pmf_rmse(x, true),
        "outside": outside_fraction(x, true),
        "marginal_rmse": marginal_pmf_rmse(x, true).tolist(),
        "std_ratio": std_ratio(x, true).tolist(),
        "iqr_ratio": iqr_ratio(x, true).tolist(),
        "nfe": samples.nfe,
    }
    if samples.traj is not None:
        per_path = straightness(samples.traj, samples.ts, reduce="none")
        out["straightness"] = per_path.mean(0).tolist()
        out["straightness_median"] = per_path.median(0).values.tolist()
    return out
