"""Core of vsmd_ts: forward SDEs, losses, samplers and the variational-score update.

Imports torch only, so it is quick to import and test.
"""

from .losses import DSMLoss, VariationalLoss, evaluation_loss, sample_times
from .nets import ResidualMLP, ScoreModel, SinusoidalEmbedding
from .registry import SDE_NAMES, SDE_REGISTRY, TRAJECTORY_STEPS, SDESpec, default_kwargs, is_momentum, make_sde
from .samplers import (
    SAMPLERS,
    SamplerOutput,
    euler_maruyama,
    exp_ab2,
    exp_ab3,
    exp_heun,
    exp_multistep,
    exp_pc3,
    get_sampler,
    heun,
    pf_drift,
    sde_pc2,
    splitting,
    time_grid,
)
from .processes import MomentumSDE, OverdampedSDE, damping_transform, inverse_damping_transform
from .sde import LinearSDE, Transition
from .training import A_summary, VSMDObjective, make_optimizer, split_A_parameters
from .variational import ATraining, AlternationSchedule, Trajectories, VariationalScoreUpdater, simulate_backward

__all__ = [
    "ATraining",
    "A_summary",
    "AlternationSchedule",
    "DSMLoss",
    "LinearSDE",
    "MomentumSDE",
    "OverdampedSDE",
    "ResidualMLP",
    "SAMPLERS",
    "SDE_NAMES",
    "SDE_REGISTRY",
    "SDESpec",
    "TRAJECTORY_STEPS",
    "SamplerOutput",
    "ScoreModel",
    "SinusoidalEmbedding",
    "Trajectories",
    "Transition",
    "VariationalLoss",
    "VariationalScoreUpdater",
    "VSMDObjective",
    "damping_transform",
    "default_kwargs",
    "euler_maruyama",
    "exp_ab2",
    "exp_ab3",
    "exp_heun",
    "exp_multistep",
    "exp_pc3",
    "sde_pc2",
    "evaluation_loss",
    "get_sampler",
    "heun",
    "inverse_damping_transform",
    "is_momentum",
    "make_optimizer",
    "make_sde",
    "pf_drift",
    "sample_times",
    "simulate_backward",
    "split_A_parameters",
    "splitting",
    "time_grid",
]
