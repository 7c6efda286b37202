"""The VSMD forecasting network: an RNN history encoder conditioning a momentum-diffusion denoiser."""

from __future__ import annotations

from typing import List, Optional

import torch
from gluonts.model import Input, InputSpec
from torch import nn
from tqdm.auto import tqdm

from vsmd_ts.diffusion import (
    DSMLoss,
    ResidualMLP,
    ScoreModel,
    get_sampler,
    is_momentum,
    make_sde,
    time_grid,
)

__all__ = ["VSMDModel", "TARGETS", "SCALINGS"]

TARGETS = ("delta", "level", "seasonal")
SCALINGS = ("auto", "std", "whiten")
# relative floor of the scale (x the context's mean |y|): scale-invariant, unlike an absolute epsilon
_REL_FLOOR = 1e-4
# scaling="whiten": weight of the identity in the shrunk correlation, and the smallest eigenvalue kept
WHITEN_SHRINKAGE, _WHITEN_MIN_EIG = 0.1, 1e-3
# its default window (steps), chosen on exchange validation windows (benchmarks/archive/RESULTS-2026-12-05.md, section 0.4)
WHITEN_WINDOW = 20
# scaling="auto" whitens up to this many series (O(D^3) per window stays cheap), else scales each series ("std")
WHITEN_MAX_DIM = 64
# default sampler, steps per forecast step and time-grid spacing: chosen on exchange validation windows by the
# rule in benchmarks/results_samplers.md (2026-11-24); <= 1.7 % covariance error at 20 NFE on exact scores
SAMPLER, SAMPLER_STEPS, TIME_GRID_RHO = "sde_pc2", 20, 2.0
# the sampling prior (the forward marginal at T of unit-variance data, as the scaled data are) and the momentum SDEs'
# initial velocity (integrated out): see vsmd_ts.diffusion.LinearSDE.prior_cov and MomentumSDE
PRIOR, INITIAL_VELOCITY = "data", "marginal"
# estimator default of naive_share: a quarter of the forecast paths from the naive forecast (the whitened random walk
# of increments, the seasonal naive of levels); chosen on validation windows (benchmarks/RESULTS.md)
NAIVE_SHARE = 0.25
# oneDNN's CPU LSTM kernels (PyTorch's default): on. ATen's own were faster at 1-2 threads on an AVX-512 Xeon
# without AMX, oneDNN's at 1 thread and as fast or faster at 2 on an AMD EPYC (electricity-shaped LSTM steps,
# `benchmarks/scaling.py lstm`); with the evidence split by CPU we keep the framework's default. False: ATen
RNN_ONEDNN = True


def fill_forward(y: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Replace unobserved values by the last observed one along dim 1.

    ``y``, ``observed``: ``(B, S, D)``. Positions before a series' first
    observation take that first observed value (0 if it has none).
    """
    if bool((observed > 0).all()):  # the common case; cummax is slow on CPU (4 % of an electricity step)
        return y
    S = y.shape[1]
    idx = torch.arange(S, device=y.device).view(1, S, 1).expand_as(y)
    seen = observed > 0
    last = torch.where(seen, idx, torch.full_like(idx, -1)).cummax(dim=1).values
    first = torch.where(seen, idx, torch.full_like(idx, S - 1)).min(dim=1, keepdim=True).values
    return y.gather(1, torch.where(last < 0, first.expand_as(last), last))


def robust_scale(values: torch.Tensor, observed: torch.Tensor, magnitude: torch.Tensor, centre: bool) -> tuple:
    """``loc, scale`` of shape ``(B, 1, D)`` of ``values`` ``(B, S, D)`` over dim 1, in float64.

    The scale is the root mean square of the observed ``values`` (about
    their mean if ``centre``), floored at ``1e-4 x magnitude`` (``(B, 1, D)``,
    the series' mean ``|y|``): a relative floor keeps the model invariant to
    the data's units over the whole float range. A series with nothing
    observed but zeros gets scale 1.
    """
    v, w = values.double(), observed.double()
    n = w.sum(1, keepdim=True).clamp_min(1)
    loc = (v * w).sum(1, keepdim=True) / n if centre else torch.zeros_like(n)
    dev = (v - loc) * w
    scale = (dev.pow(2).sum(1, keepdim=True) / n).sqrt()
    scale = torch.maximum(scale, _REL_FLOOR * magnitude.double())
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return loc.to(values.dtype), scale.to(values.dtype)


def whitening_factor(z: torch.Tensor, observed: torch.Tensor, shrinkage: float = WHITEN_SHRINKAGE) -> torch.Tensor:
    """Cholesky factor ``L`` ``(B, D, D)`` of the shrunk correlation of ``z`` ``(B, S, D)`` over dim 1, float64.

    ``z`` is already scaled per series (uncentred, as the increments are);
    each pair uses the steps where both series are observed. The correlation
    is shrunk towards the identity, ``(1 - shrinkage) R + shrinkage I``, and
    its eigenvalues clipped at 1e-3 (pairwise estimates need not be positive
    definite), so ``L`` is well conditioned even for short windows. Costs
    ``O(D^3)`` per window.
    """
    w = observed.double()
    zw = z.double() * w
    n = torch.einsum("bsi,bsj->bij", w, w).clamp_min(1)
    cov = torch.einsum("bsi,bsj->bij", zw, zw) / n
    d = cov.diagonal(dim1=1, dim2=2).clamp_min(1e-300).sqrt()
    eye = torch.eye(z.shape[-1], dtype=torch.float64, device=z.device)
    corr = (1 - shrinkage) * cov / (d[:, :, None] * d[:, None, :]) * (1 - eye) + eye
    evals, evecs = torch.linalg.eigh(corr)
    corr = (evecs * evals.clamp_min(_WHITEN_MIN_EIG)[:, None]) @ evecs.transpose(1, 2)
    return torch.linalg.cholesky(corr)


def _embedding_sizes(num_feat_static_cat: int, cardinality: Optional[List[int]]) -> tuple:
    """``(cardinality, embedding_dimension)`` as lists of ``num_feat_static_cat`` positive integers;
    ``ValueError`` naming the option otherwise. The dimensions are GluonTS DeepAR's default ``min(50, (c + 1) // 2)``."""
    n = int(num_feat_static_cat)
    if n < 0:
        raise ValueError(f"num_feat_static_cat must be >= 0, got {num_feat_static_cat}")
    if n == 0:
        if cardinality:
            raise ValueError("cardinality describes static categorical features: give them with num_feat_static_cat > 0")
        return [], []
    if cardinality is None or len(cardinality) != n or any(int(c) < 1 for c in cardinality):
        raise ValueError(f"num_feat_static_cat={n} needs cardinality, a list of {n} positive integers (the number "
                         f"of categories of each feature), got {cardinality!r}")
    cardinality = [int(c) for c in cardinality]
    return cardinality, [min(50, (c + 1) // 2) for c in cardinality]


def _build_sde(name: str, target_dim: int, beta: Optional[float], damping_ratio: Optional[float], gamma: float,
               A_max: float, A_init: float):
    kwargs = dict(A_max=A_max, A_init=A_init)
    if is_momentum(name):
        kwargs.update(gamma=gamma, initial_velocity=INITIAL_VELOCITY)
    elif damping_ratio is not None:
        damping_ratio = None  # overdamped SDEs have no damping ratio; ignore the shared default
    return make_sde(name, (target_dim,), beta=beta, damping_ratio=damping_ratio, **kwargs)


class VSMDModel(nn.Module):
    """RNN-conditioned VSMD model for multivariate forecasting.

    An LSTM reads, at each time step ``tau``, the lagged scaled targets
    ``y_{tau - l}`` (``l`` in ``lags_seq``) of the modelled quantity (the
    increments by default), time features and two unit-free scale features
    per series; its output ``h_tau`` conditions a denoiser on the
    velocity-augmented state ``(x, v)`` of the scaled increment (or level) at
    ``tau`` (eq. 5 of the paper). Forecasts are sampled autoregressively: for
    each future step a prior draw is integrated back to data with the chosen
    sampler (the reverse SDE by an exponential predictor-corrector by default) and fed to the
    RNN; increments are cumulated onto the last observed value.

    Parameters
    ----------
    target_dim
        Number of series ``D``.
    prediction_length
        Forecast horizon ``H``.
    context_length
        Steps the RNN unrolls before the forecast.
    lags_seq
        1-based lags of the target fed to the RNN.
    num_time_features
        Number of time features per step ``F`` (including age and the
        covariates known over the horizon, ``feat_dynamic_real``, which the
        estimator stacks onto them as GluonTS's DeepAR does).
    season_length
        Steps in the data's main cycle, for :meth:`seasonal_naive` (1: none).
    hidden_size, num_layers, dropout_rate
        History encoder (an LSTM).
    target
        What the diffusion models at each step: ``"delta"`` (default), the
        increment ``y_t - y_{t-1}`` (forecasts are the last observed value
        plus the cumulated sampled increments), ``"level"``, ``y_t``, or
        ``"seasonal"``, the seasonal difference ``y_t - y_{t-s}``, ``s =
        season_length`` (forecasts are the last season repeated plus the
        cumulated sampled differences, as a seasonal ARIMA differences).
    scaling
        ``"auto"`` (default): ``"whiten"`` for increments of up to 64 series,
        else ``"std"``. Scale over the context of the modelled quantity:
        ``"std"`` (root mean square; levels are also centred) or ``"whiten"``
        (``"std"``, then the series are decorrelated by the Cholesky factor of
        their shrunk correlation over ``scale_window``: the diffusion models
        what a Gaussian random walk with that covariance leaves unexplained;
        ``target="delta"`` only, ``O(D^3)`` per window). Floored relative to
        the series' magnitude, so forecasts are invariant to the data's units.
    scale_window
        Last steps of the context the scale (and whitening) is taken over
        (default: 20 for ``"whiten"``, chosen on exchange validation windows,
        else all ``context_length``); a short window follows the recent
        volatility and correlation.
    sde
        ``"vsuld"``, ``"vscld"``, ``"cld"``, ``"uld"``, ``"vsdm"`` or ``"vp"``.
    beta, damping_ratio, gamma, A_max, A_init
        Forward SDE (see :func:`vsmd_ts.diffusion.make_sde`); momentum SDEs
        integrate the initial velocity out (``initial_velocity="marginal"``)
        and every SDE samples from the ``"data"`` prior
        (:meth:`~vsmd_ts.diffusion.LinearSDE.prior_cov`).
    denoiser_hidden, denoiser_blocks, time_embed_dim, denoiser_dropout
        Residual-MLP denoiser.
    sampler, sampler_steps, time_grid_rho
        Sampler name, number of steps and grid spacing (NFE per forecast
        step = 2 x steps for Heun).
    num_parallel_samples
        Sample paths drawn in parallel per series.
    progress
        Progress bar over forecast steps while sampling.
    num_feat_dynamic_real
        How many of the ``num_time_features`` are covariates known over the
        horizon (the last ones; the RNN reads them as it reads the time
        features, at every context and horizon step).
    num_past_feat_dynamic_real
        Covariates known up to the forecast start only (input
        ``past_feat_dynamic_real``, ``(B, P, F_p)``): the RNN reads them at
        the steps before the forecast start with an indicator 1, and zeros
        with the indicator 0 at the horizon steps, in training (the last
        ``prediction_length`` steps of each window) as at prediction; the
        forecast learns what they say about the horizon through the state.
    num_feat_static_real
        Real static features per window (input ``feat_static_real``,
        ``(B, F_sr)``), appended to the RNN input at every step.
    num_feat_static_cat, cardinality
        Categorical static features (input ``feat_static_cat``, ``(B, F_sc)``
        integers in ``[0, cardinality[i])``), each through its embedding of
        ``min(50, (cardinality[i] + 1) // 2)`` dimensions (GluonTS DeepAR's
        default) appended to the RNN input at every step.
        Covariates enter as given: standardise real ones (e.g. over the
        training range) so that they are of order one. With none declared
        (the default) the network is the one without covariate support.
    """

    def __init__(
        self,
        target_dim: int,
        prediction_length: int,
        context_length: int,
        lags_seq: List[int],
        num_time_features: int,
        season_length: int = 1,
        hidden_size: int = 64,
        num_layers: int = 2,
        dropout_rate: float = 0.1,
        target: str = "delta",
        scaling: str = "auto",
        scale_window: Optional[int] = None,
        sde: str = "vsuld",
        beta: Optional[float] = None,
        damping_ratio: Optional[float] = 0.7,
        gamma: float = 2.0,
        A_max: float = 0.4,
        A_init: float = 0.0,
        denoiser_hidden: int = 128,
        denoiser_blocks: int = 3,
        time_embed_dim: int = 64,
        denoiser_dropout: float = 0.0,
        sampler: str = SAMPLER,
        sampler_steps: int = SAMPLER_STEPS,
        time_grid_rho: float = TIME_GRID_RHO,
        num_parallel_samples: int = 100,
        progress: bool = False,
        num_feat_dynamic_real: int = 0,
        num_past_feat_dynamic_real: int = 0,
        num_feat_static_real: int = 0,
        num_feat_static_cat: int = 0,
        cardinality: Optional[List[int]] = None,
    ) -> None:
        super().__init__()
        if not lags_seq or min(lags_seq) < 1:
            raise ValueError(f"lags_seq must be a non-empty list of lags >= 1, got {lags_seq}")
        self.target_dim = target_dim
        self.prediction_length = prediction_length
        self.context_length = context_length
        self.lags_seq = sorted(int(lag) for lag in lags_seq)
        self.num_time_features = num_time_features
        if int(season_length) < 1:
            raise ValueError(f"season_length must be a positive integer, got {season_length}")
        self.season_length = int(season_length)
        self.num_parallel_samples = num_parallel_samples
        self.prior = PRIOR
        get_sampler(sampler)  # an unknown name fails here, not at the first forecast
        self.sampler_name = sampler
        self.sampler_steps = sampler_steps
        self.time_grid_rho = time_grid_rho
        self.progress = progress

        if scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {', '.join(SCALINGS)}, got {scaling!r}")
        if target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
        if scaling == "whiten" and target != "delta":
            raise ValueError("scaling='whiten' decorrelates increments: it needs target='delta'")
        if target == "seasonal" and int(season_length) > self._past_length - 1:
            raise ValueError(f"target='seasonal' needs season_length={season_length} below the past window of "
                             f"{self._past_length} steps (context_length + the largest lag)")
        if scaling == "auto":
            scaling = "whiten" if target == "delta" and target_dim <= WHITEN_MAX_DIM else "std"
        self.scaling = scaling
        self.target = target
        self.scale_window = scale_window or (min(WHITEN_WINDOW, context_length) if scaling == "whiten" else context_length)
        if not 1 <= self.scale_window <= context_length:
            raise ValueError(f"scale_window must be in [1, context_length={context_length}], got {scale_window}")

        if not 0 <= int(num_feat_dynamic_real) <= num_time_features:
            raise ValueError(f"num_feat_dynamic_real counts the covariates among the {num_time_features} time "
                             f"features: it must be in [0, {num_time_features}], got {num_feat_dynamic_real}")
        self.num_feat_dynamic_real = int(num_feat_dynamic_real)
        self.num_past_feat_dynamic_real = int(num_past_feat_dynamic_real)
        self.num_feat_static_real = int(num_feat_static_real)
        self.num_feat_static_cat = int(num_feat_static_cat)
        self.cardinality, self.embedding_dimension = _embedding_sizes(num_feat_static_cat, cardinality)
        # past covariates and their indicator join the time features; static ones the scale features
        past_covariates = self.num_past_feat_dynamic_real + 1 if self.num_past_feat_dynamic_real else 0
        static_covariates = self.num_feat_static_real + sum(self.embedding_dimension)
        input_size = (target_dim * len(self.lags_seq) + num_time_features + past_covariates + 2 * target_dim
                      + static_covariates)
        self.rnn = nn.LSTM(
            input_size=input_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            dropout=dropout_rate if num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.sde = _build_sde(sde, target_dim, beta, damping_ratio, gamma, A_max, A_init)
        self.denoiser = ResidualMLP(
            (target_dim,),
            num_channels=self.sde.num_channels,
            hidden=denoiser_hidden,
            num_blocks=denoiser_blocks,
            time_dim=time_embed_dim,
            cond_dim=hidden_size,
            dropout=denoiser_dropout,
        )
        self.dsm = DSMLoss()
        if self.num_feat_static_cat:  # built last: without covariates the initialisation draws are unchanged
            self.embeddings = nn.ModuleList(
                nn.Embedding(c, d) for c, d in zip(self.cardinality, self.embedding_dimension))

    # ------------------------------------------------------------------ specs
    @property
    def _past_length(self) -> int:
        return self.context_length + max(self.lags_seq)

    def describe_inputs(self, batch_size: int = 1) -> InputSpec:
        P, H, D, F = self._past_length, self.prediction_length, self.target_dim, self.num_time_features
        inputs = {
            "past_target": Input(shape=(batch_size, P, D), dtype=torch.float),
            "past_observed_values": Input(shape=(batch_size, P, D), dtype=torch.float),
            "past_time_feat": Input(shape=(batch_size, P, F), dtype=torch.float),
            "future_time_feat": Input(shape=(batch_size, H, F), dtype=torch.float),
        }
        if self.num_past_feat_dynamic_real:
            inputs["past_feat_dynamic_real"] = Input(shape=(batch_size, P, self.num_past_feat_dynamic_real),
                                                     dtype=torch.float)
        if self.num_feat_static_real:
            inputs["feat_static_real"] = Input(shape=(batch_size, self.num_feat_static_real), dtype=torch.float)
        if self.num_feat_static_cat:
            inputs["feat_static_cat"] = Input(shape=(batch_size, self.num_feat_static_cat), dtype=torch.long)
        return InputSpec(inputs, zeros_fn=torch.zeros)

    @property
    def covariate_names(self) -> List[str]:
        """Names of the covariate inputs this model reads, beyond the target and time features (none by default)."""
        counts = {"past_feat_dynamic_real": self.num_past_feat_dynamic_real,
                  "feat_static_real": self.num_feat_static_real, "feat_static_cat": self.num_feat_static_cat}
        return [name for name, count in counts.items() if count]

    @property
    def has_covariates(self) -> bool:
        """Whether the model reads any covariate (known or past dynamic, static)."""
        return bool(self.num_feat_dynamic_real or self.covariate_names)

    def _with_covariates(self, past_time_feat, future_time_feat, past_feat_dynamic_real):
        """Time features ``(B, P, F')`` and ``(B, H, F')`` with the past covariates and their indicator appended:
        the covariates and 1 before the forecast start, zeros and 0 over the horizon (unchanged without them)."""
        if not self.num_past_feat_dynamic_real:
            return past_time_feat, future_time_feat
        x = self._required(past_feat_dynamic_real, "past_feat_dynamic_real", self.num_past_feat_dynamic_real)
        past = torch.cat([past_time_feat, x.to(past_time_feat.dtype), past_time_feat.new_ones(*x.shape[:2], 1)], dim=-1)
        if future_time_feat is None:
            return past, None
        B, H = future_time_feat.shape[:2]
        return past, torch.cat([future_time_feat, future_time_feat.new_zeros(B, H, x.shape[-1] + 1)], dim=-1)

    def _static_covariates(self, feat_static_real, feat_static_cat, like: torch.Tensor):
        """``(B, F_sr + sum(embedding_dimension))``: the static reals and the embedded categories."""
        parts = []
        if self.num_feat_static_real:
            parts.append(self._required(feat_static_real, "feat_static_real", self.num_feat_static_real).to(like.dtype))
        if self.num_feat_static_cat:
            cats = self._required(feat_static_cat, "feat_static_cat", self.num_feat_static_cat).long()
            parts += [emb(cats[:, i]).to(like.dtype) for i, emb in enumerate(self.embeddings)]
        return torch.cat(parts, dim=-1) if parts else like.new_zeros(like.shape[0], 0)

    @staticmethod
    def _required(x, name: str, count: int):
        if x is None:
            raise ValueError(f"the model was built with {count} {name} features but got no {name!r} input")
        if x.shape[-1] != count:
            raise ValueError(f"the model was built with {count} {name} features but {name!r} has shape "
                             f"{tuple(x.shape)}")
        return x

    # --------------------------------------------------------------- encoder
    def _modelled(self, target, observed):
        """The modelled sequence, its mask, the filled levels and the observed mask, ``(B, S, D)`` each.

        Non-finite values count as unobserved. For the differenced targets
        step ``t`` holds ``y_t - y_{t-lag}`` of the forward-filled levels
        (:attr:`lag`), observed only when both ends are.
        """
        observed = observed * torch.isfinite(target)
        levels = fill_forward(torch.where(observed > 0, target, torch.zeros_like(target)), observed)
        lag = self.lag
        if lag == 0:
            return levels, observed, levels, observed
        delta = torch.zeros_like(levels)
        delta[:, lag:] = levels[:, lag:] - levels[:, :-lag]
        mask = torch.zeros_like(observed)
        mask[:, lag:] = observed[:, lag:] * observed[:, :-lag]
        return delta, mask, levels, observed

    @property
    def lag(self) -> int:
        """Steps between the two ends of the modelled difference: 0 for levels, 1 for increments, the season
        for seasonal differences."""
        return {"level": 0, "delta": 1, "seasonal": self.season_length}[self.target]

    def _scale(self, values, mask, levels, observed):
        """``loc, scale`` ``(B, 1, D)``, the whitening factor ``(B, D, D)`` (or ``None``) and static
        features ``(B, 2 D)`` from the context window."""
        C, W = self.context_length, self.scale_window
        obs = observed[:, -C:]
        magnitude = (levels[:, -C:].abs() * obs).sum(1, keepdim=True) / obs.sum(1, keepdim=True).clamp_min(1)
        loc, scale = robust_scale(values[:, -W:], mask[:, -W:], magnitude, centre=self.target == "level")
        L = whitening_factor(values[:, -W:] / scale, mask[:, -W:]).to(values.dtype) if self.scaling == "whiten" else None
        # unit-free magnitude features: relative spread and the level in units of the scale
        level = loc if self.target == "level" else levels[:, -1:]
        static = torch.cat([(scale / (magnitude + scale)).log(), level.sign() * (level.abs() / scale).log1p()], dim=-1)
        return loc, scale, L, static.squeeze(1)

    def _rnn_inputs(self, seq, start, stop, time_feat, static):
        """RNN inputs for positions ``[start, stop)`` of the scaled sequence ``seq`` ``(B, S, D)``.

        Returns ``(B, stop - start, D * L + F + 2 D)``.
        """
        lags = torch.stack([seq[:, start - lag : stop - lag] for lag in self.lags_seq], dim=-1)
        n = stop - start
        return torch.cat(
            [lags.flatten(2), time_feat, static[:, None].expand(-1, n, -1)],
            dim=-1,
        )

    def _encode(self, past_target, past_observed_values, past_time_feat, future_target=None,
                future_observed_values=None, future_time_feat=None, feat_static_real=None, feat_static_cat=None):
        """Transform and scale, unroll the RNN (teacher-forced over the future when given).

        The time features already carry the past covariates (:meth:`_with_covariates`); the static
        covariates join the scale features in the returned ``static``."""
        seq, obs, time_feat = past_target, past_observed_values, past_time_feat
        if future_target is not None:
            seq = torch.cat([past_target, future_target], dim=1)
            obs = torch.cat([past_observed_values, future_observed_values], dim=1)
            time_feat = torch.cat([past_time_feat, future_time_feat], dim=1)
        P = self._past_length
        values, mask, levels, obs = self._modelled(seq, obs)
        loc, scale, L, static = self._scale(values[:, :P], mask[:, :P], levels[:, :P], obs[:, :P])
        if self.num_feat_static_real or self.num_feat_static_cat:
            static = torch.cat([static, self._static_covariates(feat_static_real, feat_static_cat, static)], dim=-1)
        scaled = (values - loc) / scale * mask  # unobserved -> loc
        if L is not None:
            # whitened coordinate i mixes series 1..i: it is observed only when all of them are
            scaled = torch.linalg.solve_triangular(L, scaled.transpose(1, 2), upper=False).transpose(1, 2)
            mask = mask.cumprod(dim=-1)
        start, stop = P - self.context_length, seq.shape[1]
        inputs = self._rnn_inputs(scaled, start, stop, time_feat[:, start:stop], static)
        out, state = self._rnn(inputs)
        return scaled, mask, out, state, (loc, scale, L), static, levels[:, :P]

    def _rnn(self, inputs: torch.Tensor, state=None):
        if RNN_ONEDNN or not inputs.is_cpu:
            return self.rnn(inputs, state)
        enabled, torch.backends.mkldnn.enabled = torch.backends.mkldnn.enabled, False  # (flags() warns about TF32)
        try:
            return self.rnn(inputs, state)
        finally:
            torch.backends.mkldnn.enabled = enabled

    def training_inputs(self, past_target, past_observed_values, past_time_feat, future_time_feat,
                        future_target, future_observed_values, past_feat_dynamic_real=None, feat_static_real=None,
                        feat_static_cat=None):
        """Diffusion training pairs: targets ``x0 (N, D)``, conditions ``(N, hidden)``, masks ``(N, D)``.

        ``N = B x (context_length + prediction_length)``: every context and horizon step enters the loss. The
        covariate inputs are needed when declared (see :meth:`describe_inputs`).
        """
        past_time_feat, future_time_feat = self._with_covariates(past_time_feat, future_time_feat,
                                                                 past_feat_dynamic_real)
        scaled, obs, out, *_ = self._encode(
            past_target, past_observed_values, past_time_feat, future_target, future_observed_values, future_time_feat,
            feat_static_real, feat_static_cat,
        )
        n = out.shape[1]
        x0 = scaled[:, -n:]
        return x0.reshape(-1, self.target_dim), out[:, -n:].reshape(-1, out.shape[-1]), obs[:, -n:].reshape(-1, self.target_dim)

    def loss(self, past_target, past_observed_values, past_time_feat, future_time_feat, future_target,
             future_observed_values, **covariates) -> torch.Tensor:
        """Denoising score-matching loss per window, shape ``(B,)`` (A held fixed)."""
        x0, cond, mask = self.training_inputs(
            past_target, past_observed_values, past_time_feat, future_time_feat, future_target, future_observed_values,
            **covariates,
        )
        per_elem = self.dsm(self.sde, self.denoiser, x0, cond, mask)
        B = past_target.shape[0]
        return per_elem.reshape(B, -1).sum(1) / mask.reshape(B, -1).sum(1).clamp_min(1)

    # -------------------------------------------------------------- sampling
    def forward(self, past_target, past_observed_values, past_time_feat, future_time_feat,
                num_parallel_samples: Optional[int] = None, past_feat_dynamic_real=None, feat_static_real=None,
                feat_static_cat=None) -> torch.Tensor:
        """Sample forecasts, shape ``(B, num_parallel_samples, prediction_length, D)``."""
        S = num_parallel_samples or self.num_parallel_samples
        P, H, D = self._past_length, self.prediction_length, self.target_dim
        past_time_feat, future_time_feat = self._with_covariates(past_time_feat, future_time_feat,
                                                                 past_feat_dynamic_real)
        scaled, _, _, state, (loc, scale, L), static, past_levels = self._encode(
            past_target, past_observed_values, past_time_feat, feat_static_real=feat_static_real,
            feat_static_cat=feat_static_cat)
        B = past_target.shape[0]

        def rep(x, dim=0):
            return x.repeat_interleave(S, dim=dim)

        state = tuple(rep(s, 1) for s in state)  # the LSTM's (h, c)
        seq = torch.cat([rep(scaled), scaled.new_zeros(B * S, H, D)], dim=1)  # what the RNN reads
        steps = scaled.new_empty(B * S, H, D)
        static, time_feat = rep(static), rep(future_time_feat)
        score_fn = ScoreModel(self.sde, self.denoiser)
        ts = time_grid(self.sde, self.sampler_steps, self.time_grid_rho, device=past_target.device)
        for k in tqdm(range(H), desc="sampling", leave=False, disable=not self.progress):
            inputs = self._rnn_inputs(seq, P + k, P + k + 1, time_feat[:, k : k + 1], static)
            out, state = self._rnn(inputs, state)
            a = self.sde.prior_sample(B * S, kind=self.prior, device=past_target.device)
            steps[:, k] = self.sampler(score_fn, self.sde, a, ts, cond=out[:, 0]).x
            seq[:, P + k] = steps[:, k]  # the RNN reads sampled steps as it read its history
        return self._decode(steps.reshape(B, S, H, D), loc, scale, L, past_levels)

    def naive(self, past_target, past_observed_values, past_time_feat=None, future_time_feat=None,
              num_parallel_samples: Optional[int] = None, **covariates) -> torch.Tensor:
        """Paths of the naive forecast of the modelled quantity, ``(B, num_parallel_samples, prediction_length, D)``:
        :meth:`random_walk` for increments, :meth:`seasonal_naive` for seasonal differences and levels. No network is evaluated (the
        time features and covariates are accepted for :meth:`forward`'s signature and ignored)."""
        make = self.random_walk if self.target == "delta" else self.seasonal_naive
        return make(past_target, past_observed_values, num_parallel_samples=num_parallel_samples)

    def seasonal_naive(self, past_target, past_observed_values, past_time_feat=None, future_time_feat=None,
                       num_parallel_samples: Optional[int] = None) -> torch.Tensor:
        """Paths of the Gaussian seasonal naive forecast, ``(B, num_parallel_samples, prediction_length, D)``.

        Step ``h`` (1-based) repeats the value ``season_length`` steps before it
        in the last observed season and adds ``N(0, k C)`` noise, ``k =
        ceil(h / season_length)`` seasons ahead, ``C`` the covariance ``(D, D)``
        of the lag-``season_length`` differences over the whole past window
        (``context_length + max(lags_seq)`` steps; differences where any
        series is unobserved are left out). With ``season_length=1``, or no more
        than a season of history (from the window's first observed step: a
        short series is left-padded), the season is one step: the last value
        plus noise that grows with each step.
        """
        S = num_parallel_samples or self.num_parallel_samples
        P = self._past_length
        _, _, levels, obs = self._modelled(past_target, past_observed_values)
        levels, obs = levels[:, :P].double(), obs[:, :P].double()
        # the history starts at the window's first observed step: a short series is left-padded
        seen = obs.amax(-1) > 0  # (B, P)
        first = torch.where(seen, torch.arange(P, device=seen.device), P).amin(1)
        use = (P - first > self.season_length)[:, None, None]  # more than a season of history
        if self.season_length == 1 or not bool(use.any()):
            base, root, seasons = self._naive_moments(levels, obs, 1)
        else:
            base, root, seasons = self._naive_moments(levels, obs, self.season_length)
            if not bool(use.all()):
                last = self._naive_moments(levels, obs, 1)
                base, root = torch.where(use, base, last[0]), torch.where(use, root, last[1])
                seasons = torch.where(use, seasons, last[2])
        z = torch.randn(levels.shape[0], S, self.prediction_length, levels.shape[-1], dtype=torch.float64,
                        device=past_target.device)
        return (base[:, None] + seasons[:, None, :, :] * z @ root[:, None].transpose(-1, -2)).to(past_target.dtype)

    def _naive_moments(self, levels, obs, s: int) -> tuple:
        """Base ``(B, H, D)``, noise root ``(B, D, D)`` and noise multiplier ``(B, H, 1)`` of the Gaussian naive
        forecast with a season of ``s`` steps, from float64 ``levels`` and ``obs`` ``(B, P, D)`` (``s < P``)."""
        P, H = levels.shape[1], self.prediction_length
        diff = levels[:, s:] - levels[:, :-s]
        both = (obs[:, s:] * obs[:, :-s]).prod(-1, keepdim=True)  # (B, P - s, 1): every series observed
        n = both.sum(1, keepdim=True).clamp_min(2)
        dev = (diff - (diff * both).sum(1, keepdim=True) / n) * both
        cov = dev.transpose(1, 2) @ dev / (n - 1)
        evals, evecs = torch.linalg.eigh(cov)
        root = evecs * evals.clamp_min(0).sqrt()[:, None]  # symmetric square root: singular C is fine
        h = torch.arange(1, H + 1, device=levels.device)
        base = levels[:, P - s + (h - 1) % s]  # (B, H, D)
        seasons = torch.ceil(h / s).double().sqrt()[None, :, None].expand(levels.shape[0], H, 1)
        return base, root, seasons

    def random_walk(self, past_target, past_observed_values, past_time_feat=None, future_time_feat=None,
                    num_parallel_samples: Optional[int] = None) -> torch.Tensor:
        """Paths of the Gaussian random walk the scaling assumes, ``(B, num_parallel_samples, prediction_length, D)``.

        ``N(0, I)`` steps in the scaled (whitened) coordinates: with
        ``scaling="whiten"`` the increments are ``N(0, s L L^T s)``, ``s`` the
        series' root mean square increment and ``L L^T`` their shrunk
        correlation over ``scale_window``; with ``"std"`` independent
        ``N(0, s^2)``. No network is evaluated (the time features are
        accepted for :meth:`forward`'s signature and ignored).
        """
        if self.target != "delta":
            raise ValueError("random_walk needs target='delta': N(0, I) levels are noise, not a walk")
        S = num_parallel_samples or self.num_parallel_samples
        P, H, D = self._past_length, self.prediction_length, self.target_dim
        values, mask, levels, obs = self._modelled(past_target, past_observed_values)
        loc, scale, L, _ = self._scale(values[:, :P], mask[:, :P], levels[:, :P], obs[:, :P])
        steps = torch.randn(past_target.shape[0], S, H, D, dtype=past_target.dtype, device=past_target.device)
        return self._decode(steps, loc, scale, L, levels[:, :P])

    def _decode(self, steps, loc, scale, L, past_levels) -> torch.Tensor:
        """Scaled (whitened) steps ``(B, S, H, D)`` back to forecasts in the data's units, ``(B, S, H, D)``.

        ``loc, scale`` ``(B, 1, D)``, ``L`` ``(B, D, D)`` or ``None``,
        ``past_levels`` (the forward-filled past) ``(B, P, D)``. A difference
        of lag ``s`` is undone season by season: step ``h`` is the level
        ``s`` steps before it plus its sampled difference.
        """
        if L is not None:
            steps = steps @ L[:, None].transpose(-1, -2)
        samples = steps * scale[:, None] + loc[:, None]
        s = self.lag
        if s == 0:
            return samples
        B, S, H, D = samples.shape
        seasons = -(-H // s)
        padded = torch.cat([samples, samples.new_zeros(B, S, seasons * s - H, D)], dim=2)
        cumulated = padded.reshape(B, S, seasons, s, D).cumsum(dim=2).reshape(B, S, seasons * s, D)
        last_season = past_levels[:, -s:].repeat(1, seasons, 1)  # (B, seasons * s, D)
        return (last_season[:, None] + cumulated)[:, :, :H]

    @property
    def sampler(self):
        """The sampler function named by ``sampler_name``."""
        return get_sampler(self.sampler_name)

    @property
    def nfe_per_step(self) -> int:
        """Score evaluations per forecast step and sample path, as the sampler counts them.

        Runs the sampler once on one prior draw with a zero score (the count
        does not depend on the score) and reads ``SamplerOutput.nfe``.
        """
        device = next(self.parameters()).device
        ts = time_grid(self.sde, self.sampler_steps, self.time_grid_rho, device=device)
        a = self.sde.prior_sample(1, kind=self.prior, device=device)
        with torch.no_grad(), torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
            return self.sampler(lambda a, t, cond: torch.zeros_like(a[:, -1]), self.sde, a, ts).nfe
