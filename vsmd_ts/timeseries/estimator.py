"""GluonTS estimator for VSMD forecasters: ``VSMDEstimator(...).train(dataset)``."""

import contextlib
import logging
import tempfile
import warnings
from typing import Any, Dict, Iterable, Iterator, List, Literal, Optional, Tuple

import lightning.pytorch as pl
import numpy as np
import torch
from gluonts.core.component import validated
from gluonts.dataset.common import Dataset
from gluonts.dataset.field_names import FieldName
from gluonts.dataset.loader import as_stacked_batches
from gluonts.env import env
from gluonts.itertools import Cached, Cyclic
from gluonts.pydantic import PositiveFloat
from gluonts.torch.model.estimator import PyTorchLightningEstimator, TrainOutput
from gluonts.transform import (
    AddAgeFeature,
    AddObservedValuesIndicator,
    AddTimeFeatures,
    AsNumpyArray,
    Chain,
    ExpectedNumInstanceSampler,
    InstanceSampler,
    InstanceSplitter,
    RenameFields,
    SelectFields,
    TestSplitSampler,
    Transformation,
    ValidationSplitSampler,
    VstackFeatures,
)

from vsmd_ts.diffusion import AlternationSchedule, default_kwargs, get_sampler, is_momentum, make_sde
from vsmd_ts.training.checkpoint import check_resume_checkpoint
from vsmd_ts.training.precision import resolve_precision

from .checks import (
    COVARIATE_FIELDS,
    MIN_HISTORY,
    CheckMultivariateTarget,
    PositiveWholeNumber,
    SeedNumber,
    WholeNumber,
    check_options,
    check_training_data,
)
from .distributed import RankSeededLoader
from .features import choose_target, default_lags, is_sub_daily, normalize_freq, season_length, time_features_for
from .lightning_module import A_LR, LR, SCHEDULE, SIGN_SYMMETRY_COVARIATES, WEIGHT_DECAY, VSMDLightningModule
from .module import NAIVE_SHARE, SAMPLER, SAMPLER_STEPS, TIME_GRID_RHO, _embedding_sizes
from .predictor import VSMDPredictor

__all__ = ["CheckMultivariateTarget", "ContextInstanceSampler", "VSMDEstimator", "PREDICTION_INPUT_NAMES", "TRAINING_INPUT_NAMES"]

logger = logging.getLogger(__name__)

PREDICTION_INPUT_NAMES = ["past_target", "past_observed_values", "past_time_feat", "future_time_feat"]
TRAINING_INPUT_NAMES = PREDICTION_INPUT_NAMES + ["future_target", "future_observed_values"]
# the instance splitter's name for the past window of past_feat_dynamic_real, and the model's
_SPLIT_PAST_COVARIATES = "past_" + FieldName.PAST_FEAT_DYNAMIC_REAL

# ckpt_path values that Lightning resolves itself; any other is a file, checked before Lightning reads it
_LIGHTNING_CKPT_NAMES = ("last", "best", "hpc", "registry")
_RESUME_ADVICE = ("pass a checkpoint that training of a VSMDEstimator with these options wrote (a "
                  "ModelCheckpoint in trainer_kwargs['callbacks']), or train without ckpt_path")


class _DropTips(logging.Filter):
    """Drop Lightning's advertising tips ("💡 Tip: ... try installing litmodels") from every run's output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropTips())


class _Batches:
    """A GluonTS batch stream with a length, so that Lightning knows the epoch size.

    With it the progress bar shows ``k/num_batches_per_epoch`` instead of
    ``k/?`` and ``trainer.estimated_stepping_batches`` accounts for
    ``limit_train_batches`` and ``accumulate_grad_batches``.
    """

    def __init__(self, batches: Iterable, length: int) -> None:
        self.batches, self.length = batches, length

    def __iter__(self) -> Iterator:
        return iter(self.batches)

    def __len__(self) -> int:
        return self.length


class _EpochProgressBar(pl.callbacks.TQDMProgressBar):
    """Lightning's bar, labelled ``Epoch 3/20`` (1-based, with the epoch count)."""

    def on_train_epoch_start(self, trainer: pl.Trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")


@contextlib.contextmanager
def _quiet_fit():
    with warnings.catch_warnings():
        # training without validation data is the normal case, not a mistake
        warnings.filterwarnings("ignore", "You defined a `validation_step` but have no `val_dataloader`")
        # Lightning 2.6 calls a torch.utils._pytree API that torch >= 2.10 deprecates; nothing to act on
        warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\).*", FutureWarning)
        yield


class ContextInstanceSampler(ExpectedNumInstanceSampler):
    """GluonTS's ``ExpectedNumInstanceSampler`` for series of any length from ``min_history + min_future`` steps.

    A series that can give ``min_past`` (the context length) steps of history
    before a window's horizon gives windows with full contexts only, as
    ``ExpectedNumInstanceSampler`` does; a shorter one gives every window
    with at least ``min_history`` steps of history, its context left-padded
    (as unobserved) by the instance splitter, as at prediction.
    """

    min_history: int = MIN_HISTORY

    def _get_bounds(self, ts: np.ndarray) -> Tuple[int, int]:
        a, b = super()._get_bounds(ts)
        return (a if b >= a else min(a, self.min_history)), b


def _sde_defaults(sde: str, beta: Optional[float], damping_ratio: Optional[float], **kwargs):
    """``(beta, damping_ratio)`` with the registry's defaults filled in; ``ValueError`` for an invalid combination.

    Builds the (tiny) SDE once so that bad SDE parameters fail at construction.
    """
    defaults = default_kwargs(sde)  # ValueError naming the known SDEs
    beta = beta if beta is not None else defaults["beta"]
    damping_ratio = damping_ratio if damping_ratio is not None else defaults.get("damping_ratio")
    if not is_momentum(sde):
        kwargs = {"A_max": kwargs["A_max"]}
    make_sde(sde, (1,), beta=beta, damping_ratio=damping_ratio, **kwargs)
    return beta, damping_ratio


class VSMDEstimator(PyTorchLightningEstimator):
    """Variational Schrödinger Momentum Diffusion forecaster (GluonTS estimator).

    ``VSMDEstimator(freq, prediction_length, target_dim, ...).train(dataset)``
    returns a :class:`~vsmd_ts.timeseries.predictor.VSMDPredictor` (a GluonTS
    ``PyTorchPredictor``) whose forecasts are
    :class:`~gluonts.model.forecast.SampleForecast` objects with samples of
    shape ``(num_samples, prediction_length, target_dim)``. Targets must be
    multivariate, shape ``(target_dim, T)`` (``MultivariateGrouper`` or
    ``ListDataset(..., one_dim_target=False)``); NaNs are allowed and are
    excluded from the loss through the observed-value mask. Infinite values,
    an empty dataset, a frequency other than the data's and (at prediction)
    a context with no observed value raise ``ValueError`` naming the series
    and time index.

    Short histories: a series needs at least 2 time steps before a forecast
    (:data:`~vsmd_ts.timeseries.checks.MIN_HISTORY`: two levels give one
    increment, the least from which a series' scale can be taken), so
    training entries need ``2 + prediction_length`` steps and prediction
    entries 2; shorter entries raise ``ValueError`` naming the entry, its
    length and the minimum. A history shorter than the model's window
    (``context_length + max(lags_seq)`` steps) is left-padded with values
    marked unobserved, as GluonTS's models do: the scale, whitening and
    naive forecasts use only the observed steps. Series too short for a full
    context give training windows with every history length from 2 steps
    (see :class:`ContextInstanceSampler`); longer ones give full contexts
    only.

    Forecasts carry their entry's ``item_id`` and ``info`` fields (``None``
    where absent), as GluonTS's predictors do.

    Parameters
    ----------
    freq
        Pandas frequency string of the data ('h', 'B', 'D', ...).
    prediction_length
        Forecast horizon ``H`` (a positive integer).
    target_dim
        Number of series ``D``.
    context_length
        RNN unroll (default ``3 * prediction_length``).
    lags_seq
        1-based target lags fed to the RNN (default: a handful chosen from ``freq``).
    sde
        ``"vsuld"`` (default), ``"vscld"``, ``"cld"``, ``"uld"``, ``"vsdm"`` or ``"vp"``.
    beta
        Speed of the forward SDE (default 10 for momentum SDEs and VSDM, chosen on exchange-rate validation data;
        ``beta_max = 20`` for VP).
    damping_ratio
        R for ``vsuld``/``uld`` (default 0.7); ``vscld``/``cld`` accept only 1; ``vsdm``/``vp`` have no velocity
        and reject any value.
    gamma
        Friction of the momentum SDEs (forward friction ``beta gamma (1 - 2 A_v) / 2``; see
        :class:`~vsmd_ts.diffusion.MomentumSDE`); unused by ``vsdm``/``vp``.
    A_max
        Bound of the learned variational score, ``A = A_max tanh(theta)`` (keeps the forward SDE stable).
    initial_velocity
        ``"marginal"`` (default, v0 integrated out) or ``"sample"`` (v0 drawn, as in the authors' code).
    prior
        Sampling prior: ``"data"`` (default), ``"transition"``, ``"stationary"`` or ``"fixed"`` (``N(0, I)``
        whatever A is; the only one under which the A update can react to the data, see
        :meth:`~vsmd_ts.diffusion.LinearSDE.prior_cov`).
    num_layers, hidden_size, rnn_type, dropout_rate
        History encoder (``rnn_type`` ``"lstm"`` or ``"gru"``).
    denoiser_hidden, denoiser_blocks
        Residual-MLP denoiser size.
    gaussian_residual
        The network learns a correction to the exact denoiser of standard normal (scaled, whitened) data, so an
        untrained model is a Gaussian random walk with the recent covariance (see
        :class:`~vsmd_ts.diffusion.GaussianResidual`). Off by default: no better on exchange validation windows
        (benchmarks/RESULTS.md, section 0.7).
    target
        ``"delta"`` (model increments, forecast = last value + their cumulative sum), ``"level"`` (model the
        values themselves) or ``"auto"`` (default): ``"level"`` when, on the last 20 horizons of the training
        data, repeating the last season (a day for sub-daily data, a week for daily data) forecasts better
        than the last value, else ``"delta"``; see :func:`~vsmd_ts.timeseries.features.choose_target`.
        Increments suit near-random walks (exchange rates), levels data with a cycle (hourly load).
    scaling
        ``"auto"`` (default: ``"whiten"`` for increments of up to 64 series, else ``"std"``), ``"std"``,
        ``"mean"``, ``"none"`` or ``"whiten"`` (per-series ``"std"``, then the series' increments decorrelated
        by their shrunk correlation over ``scale_window``, so the diffusion models what a Gaussian random walk
        with that covariance leaves unexplained; ``O(D^3)`` per window; chosen on exchange validation windows,
        see benchmarks/RESULTS.md); scales are floored relative to the series' magnitude, so forecasts do not
        depend on the data's units.
    scale_window
        Last steps of the context the scale (and whitening) is computed over (default: 20 steps for
        ``"whiten"``, else the whole context); a short window follows the recent volatility and correlation.
    clip
        Clip the scaled (whitened) modelled values to ``[-clip, clip]`` in training and in the history the RNN
        reads (``None``: no clipping): robust to the rare huge steps of series whose recent scale is tiny.
        Off by default: ``clip=10`` was no better on three exchange validation folds (benchmarks/RESULTS.md 0.8).
    sampler
        ``"sde_pc2"`` (default: the reverse SDE by an exponential predictor-corrector of order 2, accurate at
        20 NFE; chosen on exchange validation windows, benchmarks/results_samplers.md), ``"splitting"`` (the
        reverse SDE by symmetric splitting, the previous default at 40 steps), ``"heun"`` (probability-flow ODE),
        ``"exp_heun"`` (exponential Heun: the PF-ODE's stationary linear part integrated exactly),
        ``"exp_pc3"`` (exponential predictor-corrector, the most accurate PF-ODE sampler per NFE) or
        ``"euler_maruyama"`` (reverse SDE).
    sampler_steps
        Sampler steps per forecast step (default 20; NFE = 2 x steps for the Heun samplers, else steps).
    time_grid_rho
        Spacing of the sampling time grid (> 0; 1 is uniform, default 2: more steps near the data).
    num_parallel_samples
        Paths sampled in parallel per series.
    loss_positions
        ``"all"`` (context and horizon steps enter the loss) or ``"future"`` (horizon only).
    lr, A_lr, weight_decay
        One AdamW with a separate learning rate for A; ``weight_decay`` (of the network, not A) defaults to
        1e-2, PyTorch's AdamW default, which beat 1e-8 on three exchange validation folds by a margin well inside
        the seed noise (15-run mean CRPS-Sum 0.01072 against 0.01073; benchmarks/RESULTS.md 0.9).
    warmup, cooldown, cycle, forward_fraction
        Alternation schedule of A updates, as fractions of the run.
    trajectory_steps, num_trajectories, frozen_policy
        Backward simulations for the A update (``frozen_policy`` ``"score"`` or ``"score_minus_forward"``).
    A_update, A_prior, trajectory_sampler
        How A is updated: ``"gradient"`` (default: ``A_lr`` steps of the one optimiser) or ``"newton"``
        (A set to the minimiser of the variational loss at each refresh; single process only), the prior of
        the backward trajectories (``None``: the sampling prior; ``"fixed"`` lets A react to the data) and
        their sampler (``"euler_maruyama"`` or ``"splitting"``, less biased at the same steps).
    batch_size, num_batches_per_epoch
        Training windows per batch and batches per epoch. ``batch_size`` is the global batch: under DDP
        each of the ``W`` processes trains on ``batch_size / W`` of every batch's windows (its rows
        ``r::W``), so ``W`` processes run the single-process optimisation in about ``1/W`` of the time.
    ensemble_size
        Models trained side by side from different initialisations (same batches, ``ensemble_size`` times the
        training cost, same sampling cost); the forecast is their equal-weight mixture (see
        :class:`~vsmd_ts.timeseries.lightning_module.VSMDLightningModule`). Default 5, chosen on exchange
        validation windows (benchmarks/RESULTS.md, section 0.7: K = 5 against 3 with bfloat16 training,
        0.00812 +- 0.00014 against 0.00833 +- 0.00047); 1 trains a fifth as long.
    sign_symmetry
        Make the forecaster odd in the target (forecasts of ``-y`` are those of ``y`` negated): training
        windows are negated with probability 1/2 and half of the forecast paths come from the negated history.
        Removes a constant drift learnt from the training range; no extra cost. Off by default: on three exchange
        validation folds it lost where that drift happened to pay (benchmarks/RESULTS.md 0.8).
    naive_share
        Share of each window's forecast paths drawn from the naive forecast of the modelled quantity instead of
        the diffusion: the Gaussian random walk of the scaled (whitened) increments, or the Gaussian seasonal naive
        forecast of the levels (:meth:`~vsmd_ts.timeseries.module.VSMDModel.naive`). The forecast is the linear
        pool of the model and the naive forecast, a hedge against the model's learnt drift (increments) and its
        too narrow long-horizon spread (levels). Costs no training; sampling gets cheaper by that share. Default
        (``None``): 0.25, except 0 for increments of sub-daily data, whose daily cycle a walk does not have;
        chosen on validation windows (benchmarks/RESULTS.md). ``0`` gives the diffusion model alone.
    trainer_kwargs
        Extra ``lightning.pytorch.Trainer`` arguments (``max_epochs``,
        ``accelerator``, ``devices``, ``strategy``, ``precision``...). Defaults: 20 epochs (chosen on
        validation), gradient clipping 10, no logger, checkpoints in a temporary folder, and
        ``precision="auto"``: bfloat16 mixed precision when training on a CPU whose bfloat16 matrix products
        are at least twice as fast as float32 ones (timed once, see
        :func:`vsmd_ts.training.precision.resolve_precision`; chosen on exchange validation windows,
        benchmarks/RESULTS.md section 0.7), else float32. Sampling is float32. Pass ``precision="32-true"``
        for runs that must repeat bit for bit on other machines.
        For DDP use ``strategy="ddp_find_unused_parameters_true"``: score and
        A steps leave different parameters without gradients. The ranks split
        each batch (see ``batch_size``), so the schedule and learning rate
        need no change with the number of processes.
    train_sampler, validation_sampler
        GluonTS instance samplers (default: :class:`ContextInstanceSampler`, one window per series and pass
        on average, and the last window of each validation series). Pass
        ``ExpectedNumInstanceSampler(num_instances=1.0, min_past=2, min_future=prediction_length)`` to train
        long series on padded, short contexts too, as GluonTS's DeepAR does.
    seed
        Seeds Python, NumPy and torch before training (reproducible runs); an integer in ``[0, 2**32 - 1]``.
    progress
        Progress bars of training (Lightning's; ``trainer_kwargs["enable_progress_bar"]``, when given, decides
        for training alone) and of sampling forecasts.
    num_feat_dynamic_real
        Covariates known over the horizon (GluonTS DeepAR's name; default 0): data field ``feat_dynamic_real``
        of shape ``(num_feat_dynamic_real, T)`` in training and ``(num_feat_dynamic_real, T + prediction_length)``
        at prediction (longer arrays are cut). Stacked onto the time features as in DeepAR, the RNN reads them
        at every context and horizon step, so the forecast of each step sees that step's covariates.
    num_past_feat_dynamic_real
        Covariates known up to the forecast start only (default 0): field ``past_feat_dynamic_real`` of shape
        ``(num_past_feat_dynamic_real, T)``. The RNN reads them over the context with an indicator 1, and zeros
        with the indicator 0 over the horizon, in training (the last ``prediction_length`` steps of each
        window) as at prediction, so nothing unknown at the forecast start is read.
    num_feat_static_real
        Real static features per entry (default 0): field ``feat_static_real`` of shape ``(num_feat_static_real,)``,
        read at every step.
    num_feat_static_cat, cardinality, embedding_dimension
        Categorical static features (default 0): field ``feat_static_cat``, ``num_feat_static_cat`` integers in
        ``[0, cardinality[i])``, each read at every step through a learnt embedding of ``embedding_dimension[i]``
        (default ``min(50, (cardinality[i] + 1) // 2)``, as DeepAR).

        The real covariates are read as given, not rescaled per window (the target is): standardise them,
        e.g. with the mean and standard deviation over the training range, so that they are of order one;
        give indicators as 0/1. They must be finite (no NaN). A declared field that is missing, has the wrong
        number of rows or is too short (at prediction ``feat_dynamic_real`` must cover the horizon) raises
        ``ValueError`` naming the field and the entry; covariate fields that are not declared are dropped with
        a warning. Covariates condition the RNN and through it the denoiser; the naive forecast that
        ``naive_share`` pools in does not read them (``naive_share=0`` for the model alone), and
        ``sign_symmetry`` cannot be combined with them.
    """

    @validated()
    def __init__(
        self,
        freq: str,
        prediction_length: PositiveWholeNumber,
        target_dim: PositiveWholeNumber,
        context_length: Optional[PositiveWholeNumber] = None,
        lags_seq: Optional[List[PositiveWholeNumber]] = None,
        sde: str = "vsuld",
        beta: Optional[PositiveFloat] = None,
        damping_ratio: Optional[PositiveFloat] = None,
        gamma: PositiveFloat = 2.0,
        A_max: PositiveFloat = 0.4,
        initial_velocity: Literal["marginal", "sample"] = "marginal",
        prior: Literal["data", "transition", "stationary", "fixed"] = "data",
        num_layers: PositiveWholeNumber = 2,
        hidden_size: PositiveWholeNumber = 64,
        rnn_type: Literal["lstm", "gru"] = "lstm",
        dropout_rate: float = 0.1,
        denoiser_hidden: PositiveWholeNumber = 128,
        denoiser_blocks: PositiveWholeNumber = 3,
        gaussian_residual: bool = False,
        target: Literal["auto", "delta", "level"] = "auto",
        scaling: Literal["auto", "std", "mean", "none", "whiten"] = "auto",
        scale_window: Optional[PositiveWholeNumber] = None,
        clip: Optional[PositiveFloat] = None,
        sampler: str = SAMPLER,
        sampler_steps: PositiveWholeNumber = SAMPLER_STEPS,
        time_grid_rho: PositiveFloat = TIME_GRID_RHO,
        num_parallel_samples: PositiveWholeNumber = 100,
        loss_positions: Literal["all", "future"] = "all",
        lr: PositiveFloat = LR,
        A_lr: PositiveFloat = A_LR,
        weight_decay: float = WEIGHT_DECAY,
        warmup: float = SCHEDULE.warmup,
        cooldown: float = SCHEDULE.cooldown,
        cycle: float = SCHEDULE.cycle,
        forward_fraction: float = SCHEDULE.forward_fraction,
        trajectory_steps: PositiveWholeNumber = 50,
        num_trajectories: PositiveWholeNumber = 256,
        frozen_policy: Literal["score", "score_minus_forward"] = "score",
        A_update: Literal["gradient", "newton"] = "gradient",
        A_prior: Optional[Literal["data", "transition", "stationary", "fixed"]] = None,
        trajectory_sampler: Literal["euler_maruyama", "splitting"] = "euler_maruyama",
        batch_size: PositiveWholeNumber = 32,
        num_batches_per_epoch: PositiveWholeNumber = 50,
        ensemble_size: PositiveWholeNumber = 5,
        sign_symmetry: bool = False,
        naive_share: Optional[float] = None,
        trainer_kwargs: Optional[Dict[str, Any]] = None,
        train_sampler: Optional[InstanceSampler] = None,
        validation_sampler: Optional[InstanceSampler] = None,
        seed: Optional[SeedNumber] = None,
        progress: bool = True,
        num_feat_dynamic_real: WholeNumber = 0,
        num_past_feat_dynamic_real: WholeNumber = 0,
        num_feat_static_real: WholeNumber = 0,
        num_feat_static_cat: WholeNumber = 0,
        cardinality: Optional[List[PositiveWholeNumber]] = None,
        embedding_dimension: Optional[List[PositiveWholeNumber]] = None,
    ) -> None:
        defaults = {"max_epochs": 20, "gradient_clip_val": 10.0, "logger": False, "enable_model_summary": False,
                    "precision": "auto"}
        super().__init__(trainer_kwargs={**defaults, **(trainer_kwargs or {})})
        self.sde = sde.lower()
        beta, damping_ratio = _sde_defaults(self.sde, beta, damping_ratio, gamma=gamma, A_max=A_max,
                                            initial_velocity=initial_velocity)
        # cheap objects that validate the sampler and schedule now, not after data loading
        get_sampler(sampler)
        AlternationSchedule(warmup, cooldown, cycle, forward_fraction)
        check_options(dropout_rate=dropout_rate, weight_decay=weight_decay, lr=lr, A_lr=A_lr, clip=clip,
                      time_grid_rho=time_grid_rho, naive_share=naive_share)
        cardinality, embedding_dimension = _embedding_sizes(num_feat_static_cat, cardinality, embedding_dimension)
        # declared covariates only: without any, the model's options (and predictor.json) are as before
        self.covariates = {k: v for k, v in dict(
            num_feat_dynamic_real=num_feat_dynamic_real, num_past_feat_dynamic_real=num_past_feat_dynamic_real,
            num_feat_static_real=num_feat_static_real, num_feat_static_cat=num_feat_static_cat,
            cardinality=cardinality or None, embedding_dimension=embedding_dimension or None).items() if v}
        if sign_symmetry and self.covariates:
            raise ValueError(SIGN_SYMMETRY_COVARIATES)
        self.freq = normalize_freq(freq)
        self.prediction_length = prediction_length
        self.target_dim = target_dim
        self.context_length = context_length or 3 * prediction_length
        self.lags_seq = sorted(lags_seq) if lags_seq is not None else default_lags(self.freq)
        self.time_features = time_features_for(self.freq)
        self.model_kwargs = dict(
            target_dim=target_dim, prediction_length=prediction_length, context_length=self.context_length,
            lags_seq=self.lags_seq, num_time_features=len(self.time_features) + 1 + num_feat_dynamic_real,
            season_length=season_length(self.freq), hidden_size=hidden_size,
            num_layers=num_layers, rnn_type=rnn_type, dropout_rate=dropout_rate, target=target, scaling=scaling,
            scale_window=scale_window, clip=clip,
            sde=self.sde, beta=beta, damping_ratio=damping_ratio, gamma=gamma, A_max=A_max, initial_velocity=initial_velocity,
            prior=prior, denoiser_hidden=denoiser_hidden, denoiser_blocks=denoiser_blocks,
            gaussian_residual=gaussian_residual, sampler=sampler,
            sampler_steps=sampler_steps, time_grid_rho=time_grid_rho, num_parallel_samples=num_parallel_samples,
            loss_positions=loss_positions, progress=progress, **self.covariates,
        )
        self.module_kwargs = dict(
            lr=lr, A_lr=A_lr, weight_decay=weight_decay, warmup=warmup, cooldown=cooldown, cycle=cycle, A_update=A_update,
            forward_fraction=forward_fraction, trajectory_steps=trajectory_steps, num_trajectories=num_trajectories,
            frozen_policy=frozen_policy, A_prior=A_prior, trajectory_sampler=trajectory_sampler, ensemble_size=ensemble_size,
            sign_symmetry=sign_symmetry, naive_share=naive_share)
        self.batch_size, self.num_batches_per_epoch, self.seed = batch_size, num_batches_per_epoch, seed
        self.data_target: Optional[str] = None  # what target="auto" chose on the last training data
        self.train_sampler = train_sampler or ContextInstanceSampler(
            num_instances=1.0, min_past=self.context_length, min_future=prediction_length)
        self.validation_sampler = validation_sampler or ValidationSplitSampler(min_future=prediction_length)

    # -------------------------------------------------------------- pipeline
    def _check_transform(self) -> CheckMultivariateTarget:
        """The input check, one instance per estimator: it warns about ignored covariate fields once."""
        if getattr(self, "_check", None) is None:
            covariates = {k: v for k, v in self.covariates.items() if k != "embedding_dimension"}
            if covariates:
                covariates["prediction_length"] = self.prediction_length
            self._check = CheckMultivariateTarget(self.target_dim, MIN_HISTORY, self.prediction_length, self.freq,
                                                  context_length=self.context_length, **covariates)
        return self._check

    def _covariate_fields(self) -> List[str]:
        """The declared covariate fields of the data, in GluonTS's names."""
        return [field for field, option in COVARIATE_FIELDS.items() if option and self.covariates.get(option)]

    def input_names(self, training: bool = False) -> List[str]:
        """The network's inputs: :data:`PREDICTION_INPUT_NAMES` (with ``training``, :data:`TRAINING_INPUT_NAMES`)
        and the declared covariates read apart from the time features."""
        names = [field for field in self._covariate_fields() if field != FieldName.FEAT_DYNAMIC_REAL]
        return (TRAINING_INPUT_NAMES if training else PREDICTION_INPUT_NAMES) + names

    def create_transformation(self) -> Transformation:
        fields = self._covariate_fields()
        return Chain(
            [
                self._check_transform(),
                SelectFields([FieldName.ITEM_ID, FieldName.INFO, FieldName.START, FieldName.TARGET] + fields, allow_missing=True),
                *[AsNumpyArray(field=field, expected_ndim=1 if "static" in field else 2,
                               dtype=int if field == FieldName.FEAT_STATIC_CAT else np.float32) for field in fields],
                AsNumpyArray(field=FieldName.TARGET, expected_ndim=2),
                AddObservedValuesIndicator(target_field=FieldName.TARGET, output_field=FieldName.OBSERVED_VALUES),
                AddTimeFeatures(
                    start_field=FieldName.START,
                    target_field=FieldName.TARGET,
                    output_field=FieldName.FEAT_TIME,
                    time_features=self.time_features,
                    pred_length=self.prediction_length,
                ),
                AddAgeFeature(
                    target_field=FieldName.TARGET,
                    output_field=FieldName.FEAT_AGE,
                    pred_length=self.prediction_length,
                    log_scale=True,
                ),
                VstackFeatures(output_field=FieldName.FEAT_TIME, input_fields=[FieldName.FEAT_TIME, FieldName.FEAT_AGE]
                               + [f for f in fields if f == FieldName.FEAT_DYNAMIC_REAL]),
            ]
        )

    def _create_instance_splitter(self, module: VSMDLightningModule, mode: str):
        sampler = {"training": self.train_sampler, "validation": self.validation_sampler, "test": TestSplitSampler()}[mode]
        splitter = InstanceSplitter(
            target_field=FieldName.TARGET,
            is_pad_field=FieldName.IS_PAD,
            start_field=FieldName.START,
            forecast_start_field=FieldName.FORECAST_START,
            instance_sampler=sampler,
            past_length=module.model._past_length,
            future_length=self.prediction_length,
            time_series_fields=[FieldName.FEAT_TIME, FieldName.OBSERVED_VALUES]
            + [f for f in self._covariate_fields() if f == FieldName.PAST_FEAT_DYNAMIC_REAL],
        )
        if not self.covariates.get("num_past_feat_dynamic_real"):
            return splitter
        # the splitter names the past window "past_past_feat_dynamic_real"; the model reads it as TFT does
        return splitter + RenameFields({_SPLIT_PAST_COVARIATES: FieldName.PAST_FEAT_DYNAMIC_REAL})

    def choose_target(self, data: Dataset) -> str:
        """What ``target="auto"`` models on ``data``: ``"level"`` or ``"delta"`` (see
        :func:`~vsmd_ts.timeseries.features.choose_target`)."""
        return choose_target((entry[FieldName.TARGET] for entry in data), self.prediction_length,
                             season_length(self.freq))

    def resolved_kwargs(self) -> tuple:
        """``(model_kwargs, module_kwargs)`` with the data-dependent defaults filled in.

        ``target="auto"`` takes what :meth:`choose_target` chose on the last
        training data (``"delta"`` before any training, e.g. for a module built
        by hand); ``naive_share=None`` becomes 0.25, or 0 for increments of
        sub-daily data (a walk has no daily cycle).
        """
        model_kwargs, module_kwargs = dict(self.model_kwargs), dict(self.module_kwargs)
        if model_kwargs["target"] == "auto":
            model_kwargs["target"] = self.data_target or "delta"
        if module_kwargs["naive_share"] is None:
            walk_without_cycle = model_kwargs["target"] == "delta" and is_sub_daily(self.freq)
            module_kwargs["naive_share"] = 0.0 if walk_without_cycle else NAIVE_SHARE
        return model_kwargs, module_kwargs

    def create_lightning_module(self) -> VSMDLightningModule:
        model_kwargs, module_kwargs = self.resolved_kwargs()
        return VSMDLightningModule(model_kwargs=model_kwargs, num_batches_per_epoch=self.num_batches_per_epoch,
                                   **module_kwargs)

    def create_training_data_loader(self, data: Dataset, module: VSMDLightningModule,
                                    shuffle_buffer_length: Optional[int] = None, **kwargs) -> Iterable:
        instances = self._create_instance_splitter(module, "training").apply(Cyclic(data).stream(), is_train=True)
        batches = as_stacked_batches(
            instances,
            batch_size=self.batch_size,
            shuffle_buffer_length=shuffle_buffer_length,
            field_names=self.input_names(training=True),
            output_type=torch.tensor,
            num_batches_per_epoch=self.num_batches_per_epoch,
        )
        # each DDP rank takes its share of every batch; a length for Lightning's progress bar and step count
        batches = RankSeededLoader(batches, kwargs.get("rank"), kwargs.get("world_size"))
        return _Batches(batches, self.num_batches_per_epoch)

    def create_validation_data_loader(self, data: Dataset, module: VSMDLightningModule, **kwargs) -> Iterable:
        instances = self._create_instance_splitter(module, "validation").apply(data, is_train=True)
        return as_stacked_batches(
            instances, batch_size=self.batch_size, field_names=self.input_names(training=True),
            output_type=torch.tensor
        )

    def create_predictor(self, transformation: Transformation, module: VSMDLightningModule) -> VSMDPredictor:
        return VSMDPredictor(
            input_transform=transformation + self._create_instance_splitter(module, "test"),
            input_names=self.input_names(),
            prediction_net=module,
            batch_size=self.batch_size,
            prediction_length=self.prediction_length,
            device="auto",
        )

    # -------------------------------------------------------------- training
    def _loader(self, data: Dataset, transformation: Transformation, module, mode: str, cache_data: bool, **kwargs):
        with env._let(max_idle_transforms=max(len(data), 100)):
            transformed = transformation.apply(data, is_train=True)
            transformed = Cached(transformed) if cache_data else transformed
            if mode == "training":
                return self.create_training_data_loader(transformed, module, **kwargs)
            return self.create_validation_data_loader(transformed, module)

    def _trainer(self, root: str, validate: bool):
        kwargs = {"accelerator": "auto", "default_root_dir": root, **self.trainer_kwargs}
        kwargs["precision"] = resolve_precision(kwargs.get("precision", "auto"), kwargs["accelerator"])
        callbacks = list(kwargs.pop("callbacks", []))
        checkpoint = None
        if validate:
            checkpoint = pl.callbacks.ModelCheckpoint(monitor="val_loss", mode="min", save_weights_only=True)
            callbacks.append(checkpoint)
        elif not any(isinstance(c, pl.callbacks.Checkpoint) for c in callbacks):  # the caller's ModelCheckpoint runs
            kwargs.setdefault("enable_checkpointing", False)
        if not any(isinstance(c, pl.callbacks.ProgressBar) for c in callbacks):  # `progress` governs the bar
            kwargs.setdefault("enable_progress_bar", self.model_kwargs["progress"])
            if kwargs["enable_progress_bar"]:
                callbacks.append(_EpochProgressBar())
        return pl.Trainer(callbacks=callbacks, **kwargs), checkpoint

    def train(
        self,
        training_data: Dataset,
        validation_data: Optional[Dataset] = None,
        shuffle_buffer_length: Optional[int] = None,
        cache_data: bool = True,
        ckpt_path: Optional[str] = None,
        **kwargs,
    ) -> VSMDPredictor:
        """Fit and return the predictor; see :meth:`train_model` (``cache_data`` defaults to True)."""
        return self.train_model(training_data, validation_data, shuffle_buffer_length=shuffle_buffer_length,
                                cache_data=cache_data, ckpt_path=ckpt_path, **kwargs).predictor

    def train_model(
        self,
        training_data: Dataset,
        validation_data: Optional[Dataset] = None,
        from_predictor: Optional[VSMDPredictor] = None,
        shuffle_buffer_length: Optional[int] = None,
        cache_data: bool = True,
        ckpt_path: Optional[str] = None,
        **kwargs,
    ) -> TrainOutput:
        """Check the data once, fit the model and return its predictor.

        ``cache_data`` defaults to True here (GluonTS: False): a multivariate
        dataset is one or a few long entries, and the training sampler draws
        about one window per pass over an entry, so without the cache the whole
        transformation (time features, observed mask, finiteness check of the
        full ``(T, D)`` array) runs again for every window: about 8 s of a
        35 s electricity-shaped epoch on a 2-core CPU. The cache holds the
        transformed entries (the target, its observed mask and the time
        features); pass ``cache_data=False`` for data that do not fit in
        memory that way.

        Differs from GluonTS's ``train_model`` on purpose: the data are
        checked up front (empty, infinite, all-NaN, wrong shape or
        frequency); Lightning's folder is temporary unless
        ``default_root_dir`` is given, so no files are left behind; without
        validation data the final weights are kept (the training loss mixes
        A and score phases, so a "best" ``train_loss`` is not meaningful),
        with it the lowest-``val_loss`` weights; and an exception during
        training propagates instead of silently returning an earlier
        checkpoint.
        """
        check_training_data(training_data, self._check_transform())
        if validation_data is not None:
            check_training_data(validation_data, self._check_transform())
        if self.model_kwargs["target"] == "auto":
            self.data_target = self.choose_target(training_data)
        if self.seed is not None:
            pl.seed_everything(self.seed, workers=True, verbose=False)
        transformation = self.create_transformation()
        module = self.create_lightning_module()
        if from_predictor is not None:
            module.load_state_dict(from_predictor.network.state_dict())
        train_dl = self._loader(training_data, transformation, module, "training", cache_data,
                                shuffle_buffer_length=shuffle_buffer_length)
        val_dl = None
        if validation_data is not None:
            val_dl = self._loader(validation_data, transformation, module, "validation", cache_data)
        if ckpt_path is not None and str(ckpt_path).partition(":")[0] not in _LIGHTNING_CKPT_NAMES:  # a file
            check_resume_checkpoint(ckpt_path, module, advice=_RESUME_ADVICE)
        with tempfile.TemporaryDirectory(prefix="vsmd_ts-") as tmp:
            trainer, checkpoint = self._trainer(tmp, validate=val_dl is not None)
            with _quiet_fit():
                trainer.fit(module, train_dataloaders=train_dl, val_dataloaders=val_dl, ckpt_path=ckpt_path)
            if checkpoint is not None and checkpoint.best_model_path:
                logger.info("loading the weights with the lowest val_loss from %s", checkpoint.best_model_path)
                state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
                module.load_state_dict(state["state_dict"])
        return TrainOutput(transformation, module, trainer, self.create_predictor(transformation, module))
