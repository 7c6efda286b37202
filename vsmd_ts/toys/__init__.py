"""2-D toy front end: unconditional generation of 2-D distributions (the paper's section 5.1).

Datasets (sampled on the fly, seeded): ``spiral``, ``spiral-8y`` (Y stretched
8x), ``checkerboard``, ``checkerboard-6x`` (X stretched 6x). A residual-MLP
score network (and, for the VS SDEs, the variational score A by stochastic
approximation) is trained on them through the shared Lightning path
(:mod:`vsmd_ts.training`, imported when training starts); metrics are the RMSE between 2-D
histograms of generated and true samples and the per-axis straightness of
probability-flow ODE paths. Command line: ``python -m vsmd_ts.toys``.

Example
-------
>>> from vsmd_ts.toys import ToyConfig, evaluate, model_from_checkpoint, train
>>> summary = train(ToyConfig(dataset="spiral-8y", sde="vsuld", beta=5, damping_ratio=0.7), out="runs/toy")
>>> model, cfg, data_var = model_from_checkpoint("runs/toy")
>>> res = evaluate(model, cfg.dataset, prior=cfg.prior, data_var=data_var)
"""

from .data import DATASETS, ToyDataset, get_dataset, sample_dataset
from .metrics import (
    histogram_box,
    iqr_ratio,
    marginal_pmf_rmse,
    outside_fraction,
    pmf,
    pmf_rmse,
    std_ratio,
    straightness,
)
from .plots import plot_sample_grid, plot_samples, plot_trajectories
from .sampling import PRIORS, ToySamples, evaluate, generate, metrics_dict
from .train import ToyConfig, build_model, load_checkpoint, model_from_checkpoint, train

__all__ = [
    "DATASETS",
    "PRIORS",
    "ToyConfig",
    "ToyDataset",
    "ToySamples",
    "build_model",
    "evaluate",
    "generate",
    "get_dataset",
    "histogram_box",
    "iqr_ratio",
    "load_checkpoint",
    "marginal_pmf_rmse",
    "metrics_dict",
    "model_from_checkpoint",
    "outside_fraction",
    "plot_sample_grid",
    "plot_samples",
    "plot_trajectories",
    "pmf",
    "pmf_rmse",
    "sample_dataset",
    "std_ratio",
    "straightness",
    "train",
]
