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
    InstanceSplitter,
    RenameFields,
    SelectFields,
    TestSplitSampler,
    Transformation,
    ValidationSplitSampler,
    VstackFeatures,
)

from vsmd_ts.diffusion import ATraining, default_kwargs, get_sampler, is_momentum, make_sde
from vsmd_ts.training.checkpoint import check_resume_checkpoint
from vsmd_ts.training.precision import resolve_precision

from .checks import (
    COVARIATE_FIELDS,
    MIN_HISTORY,
    ATrainingOption,
    CheckMultivariateTarget,
    PositiveWholeNumber,
    SeedNumber,
    WholeNumber,
    check_options,
    check_sde_kwargs,
    check_training_data,
)
from .distributed import RankSeededLoader
from .features import (choose_season, covered_time_features, default_lags, is_sub_daily, normalize_freq,
                       season_candidates, season_length,
                       time_features_for)
from .lightning_module import (
    LR,
    WEIGHT_DECAY,
    TrainingDivergedError,
    VSMDLightningModule,
    describe_weights,
    divergence_advice,
    non_finite_weights,
)
from .module import NAIVE_SHARE, SAMPLER, SAMPLER_STEPS, _embedding_sizes
from .predictor import VSMDPredictor

__all__ = ["CheckMultivariateTarget", "ContextInstanceSampler", "VSMDEstimator", "PREDICTION_INPUT_NAMES", "SDE_DEFAULTS",
           "TRAINING_INPUT_NAMES"]

logger = logging.getLogger(__name__)

PREDICTION_INPUT_NAMES = ["past_target", "past_observed_values", "past_time_feat", "future_time_feat"]
TRAINING_INPUT_NAMES = PREDICTION_INPUT_NAMES + ["future_target", "future_observed_values"]
# the instance splitter's name for the past window of past_feat_dynamic_real, and the model's
_SPLIT_PAST_COVARIATES = "past_" + FieldName.PAST_FEAT_DYNAMIC_REAL

# defaults of the SDE parameters that the registry leaves to the SDE classes (sde_kwargs "gamma" and "A_max")
SDE_DEFAULTS = {"gamma": 2.0, "A_max": 0.4}

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


def _sde_parameters(sde: str, sde_kwargs: Optional[Dict[str, Any]]) -> Dict[str, Optional[float]]:
    """``beta``, ``damping_ratio``, ``gamma`` and ``A_max`` of ``sde``: ``sde_kwargs`` over the registry's defaults
    (and :data:`SDE_DEFAULTS`); ``ValueError`` for an unknown key, a bad value or an invalid combination.

    Builds the (tiny) SDE once so that bad SDE parameters fail at construction.
    """
    given = check_sde_kwargs(sde_kwargs)
    defaults = default_kwargs(sde)  # ValueError naming the known SDEs
    params = {"beta": defaults["beta"], "damping_ratio": defaults.get("damping_ratio"), **SDE_DEFAULTS, **given}
    kwargs = {"gamma": params["gamma"], "A_max": params["A_max"]} if is_momentum(sde) else {"A_max": params["A_max"]}
    make_sde(sde, (1,), beta=params["beta"], damping_ratio=params["damping_ratio"], **kwargs)
    return params


def _time_features_of(predictor) -> list:
    """The time features a trained predictor's transformation computes."""
    steps = [predictor.input_transform]
    while steps:
        step = steps.pop(0)
        if isinstance(step, AddTimeFeatures):
            return list(step.date_features)
        steps.extend(getattr(step, "transformations", []))  # a Chain, nested or not
    raise ValueError("the predictor to continue from computes no time features: was it made by VSMDEstimator?")


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
    values the model's float32 arithmetic cannot hold (magnitudes beyond
    1e30, or, in training data, more than 1e18 times the largest magnitude
    of the steps before them: scaled, they overflow; see
    :data:`~vsmd_ts.timeseries.checks.MAX_ABS_VALUE` and
    :data:`~vsmd_ts.timeseries.checks.MAX_JUMP_RATIO`), an empty dataset, a
    frequency other than the data's and (at prediction) a context with no
    observed value raise ``ValueError`` naming the series and time index. A
    non-finite loss or weight stops training with
    :class:`~vsmd_ts.timeseries.lightning_module.TrainingDivergedError`
    naming the step, member and parameter.

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

    Time features: GluonTS's for ``freq`` and the age, but only those whose
    cycle the longest training series shows at least twice (no day of the
    year in less than two years of data, no day of the month in less than
    two months; :func:`~vsmd_ts.timeseries.features.covered_time_features`):
    a feature seen once marks the training period's own trend, which the
    network would carry into the forecast.

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
        Steps the RNN unrolls before the forecast (default ``3 * prediction_length``).
    lags_seq
        1-based target lags fed to the RNN (default: a handful chosen from ``freq``, e.g. ``[1, 2, 3, 24, 168]``
        for hourly data; see :func:`~vsmd_ts.timeseries.features.default_lags`).
    sde
        Forward SDE: ``"vsuld"`` (default: under-damped momentum SDE with a learnt variational score A),
        ``"vscld"`` (critically damped, learnt A), ``"cld"`` / ``"uld"`` (A = 0), ``"vsdm"`` (no momentum,
        learnt A) or ``"vp"`` (TimeGrad-like VP SDE); see :data:`vsmd_ts.diffusion.SDE_REGISTRY`.
    sde_kwargs
        A dict with some of the SDE's parameters (default ``None``: each at its default):
        ``beta``, its speed (default 10, chosen on exchange validation windows; for ``"vp"`` the end of its
        linear schedule, default 20); ``damping_ratio`` R of ``"vsuld"`` / ``"uld"`` (default 0.7, chosen
        alike; ``"vscld"`` / ``"cld"`` accept only 1, ``"vsdm"`` / ``"vp"`` have no velocity and reject it);
        ``gamma``, the friction of the momentum SDEs (default 2; forward friction ``beta gamma (1 - 2 A_v) / 2``,
        see :class:`~vsmd_ts.diffusion.MomentumSDE`; unused by ``"vsdm"`` / ``"vp"``); ``A_max``, the bound of
        the learnt A, ``A = A_max tanh(theta)``, which keeps the forward SDE stable (default 0.4). Each value
        must be a positive finite number; an unknown key or an invalid combination raises ``ValueError`` here.
        Evidence for the defaults: benchmarks/RESULTS.md.
    A_training
        How Algorithm 1 trains A: a :class:`~vsmd_ts.diffusion.ATraining` or a dict of some of its fields
        (default ``None``: its defaults), validated here. ``warmup`` (0.2) and ``cooldown`` (0.4) are the
        fractions of the run that train the network with A frozen at the start and the end; in between,
        cycles of ``cycle`` (0.12) of the run end with ``forward_fraction`` (1/6) of A steps: the authors'
        time-series schedule at any run length. ``lr`` (1e-3) is A's learning rate in the one AdamW;
        ``trajectory_steps`` (50) and ``num_trajectories`` (256) size the backward trajectories, simulated with
        the current score at the start of each A phase, on which A's variational loss is taken. Unused by the
        SDEs with A = 0. The forecasts do not need A at its fixed point: the network is trained for whatever A
        is (benchmarks/results_variational.md).
    num_layers, hidden_size, dropout_rate
        History encoder: an LSTM of ``num_layers`` (default 2) layers of ``hidden_size`` (default 64), dropout
        ``dropout_rate`` (in ``[0, 1)``, default 0.1) between layers.
    denoiser_hidden
        Width of the residual-MLP denoiser (3 blocks; default 128).
    target
        ``"delta"`` (model increments, forecast = last value + their cumulative sum), ``"seasonal"`` (model the
        differences to the value a season earlier, forecast = the last season repeated + their cumulative sum,
        season by season), ``"level"`` (model the values themselves) or ``"auto"`` (default): ``"seasonal"``
        when, on the last 20 horizons of the training data, repeating the last season (a day or a week for
        sub-daily data, a week for daily data) forecasts better than the last value, else ``"delta"``; the
        better season is the one differenced and the one the seasonal naive of ``naive_share`` repeats. See
        :func:`~vsmd_ts.timeseries.features.choose_season`. Either way the diffusion learns what a naive forecast
        leaves: the random walk for near-random walks (exchange rates), the seasonal naive for data with a cycle
        (hourly load); chosen on ETTh1 and Taylor validation windows against levels (benchmarks/RESULTS.md).
        Increments of up to 64 series are whitened: scaled per series and decorrelated by their shrunk
        correlation over the last 20 steps of the context, so the diffusion models what a Gaussian random walk
        with that covariance leaves unexplained (``O(D^3)`` per window); seasonal differences, levels and
        increments of more series are scaled per series over the context (levels also centred). Scales are
        floored relative to the series' magnitude, so forecasts do not depend on the data's units. Chosen on
        exchange validation windows (benchmarks/RESULTS.md).
    sampler
        ``"sde_pc2"`` (default: the reverse SDE by an exponential predictor-corrector of order 2, accurate at
        20 NFE; chosen on exchange validation windows, benchmarks/results_samplers.md), ``"splitting"`` (the
        reverse SDE by symmetric splitting), ``"heun"`` (probability-flow ODE), ``"exp_heun"`` (exponential
        Heun: the PF-ODE's stationary linear part integrated exactly), ``"exp_pc3"`` (exponential
        predictor-corrector, the most accurate PF-ODE sampler per NFE) or ``"euler_maruyama"`` (reverse SDE).
        Every sampler runs on a time grid of spacing 2 (more steps near the data).
    sampler_steps
        Sampler steps per forecast step (default 20; NFE = 2 x steps for the Heun samplers, else steps).
    num_parallel_samples
        Paths sampled in parallel per series (default 100).
    lr, weight_decay
        AdamW's learning rate of the network (default 1e-3) and its weight decay (not of A; default 1e-2,
        PyTorch's AdamW default, which beat 1e-8 on three exchange validation folds by a margin well inside
        the seed noise; benchmarks/RESULTS.md).
    batch_size, num_batches_per_epoch
        Training windows per batch (default 32) and batches per epoch (default 50). ``batch_size`` is the
        global batch: under DDP each of the ``W`` processes trains on ``batch_size / W`` of every batch's
        windows (its rows ``r::W``), so ``W`` processes run the single-process optimisation in about ``1/W``
        of the time. Training windows: one per series and pass on average, with full contexts where the series
        is long enough (see :class:`ContextInstanceSampler`); validation: the last window of each series.
    ensemble_size
        Models trained side by side from different initialisations (same batches, ``ensemble_size`` times the
        training cost, same sampling cost); the forecast is their equal-weight mixture (see
        :class:`~vsmd_ts.timeseries.lightning_module.VSMDLightningModule`). Default 5, chosen on exchange
        validation windows against 3 (benchmarks/RESULTS.md); 1 trains a fifth as long.
    naive_share
        Share of each window's forecast paths drawn from the naive forecast of the modelled quantity instead of
        the diffusion: the Gaussian random walk of the scaled (whitened) increments, or the Gaussian seasonal naive
        forecast (seasonal differences, levels; :meth:`~vsmd_ts.timeseries.module.VSMDModel.naive`). The
        forecast is the linear pool of the model and the naive forecast, a hedge against the model's learnt
        drift and its too narrow long-horizon spread. Costs no training; sampling gets cheaper by that share. Default
        (``None``): 0.25, except 0 for increments of sub-daily data, whose daily cycle a walk does not have;
        chosen on validation windows (benchmarks/RESULTS.md). ``0`` gives the diffusion model alone.
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
    num_feat_static_cat, cardinality
        Categorical static features (default 0): field ``feat_static_cat``, ``num_feat_static_cat`` integers in
        ``[0, cardinality[i])``, each read at every step through a learnt embedding of
        ``min(50, (cardinality[i] + 1) // 2)`` dimensions, as DeepAR's default.

        The real covariates are read as given, not rescaled per window (the target is): standardise them,
        e.g. with the mean and standard deviation over the training range, so that they are of order one;
        give indicators as 0/1. They must be finite (no NaN). A declared field that is missing, has the wrong
        number of rows or is too short (at prediction ``feat_dynamic_real`` must cover the horizon) raises
        ``ValueError`` naming the field and the entry; covariate fields that are not declared are dropped with
        a warning. Covariates condition the RNN and through it the denoiser; the naive forecast that
        ``naive_share`` pools in does not read them (``naive_share=0`` for the model alone).
    trainer_kwargs
        Extra ``lightning.pytorch.Trainer`` arguments (``max_epochs``,
        ``accelerator``, ``devices``, ``strategy``, ``precision``...). Defaults: 20 epochs (chosen on
        validation), gradient clipping 10, no logger, checkpoints in a temporary folder, and
        ``precision="auto"``: bfloat16 mixed precision when training on a CPU whose bfloat16 matrix products
        are at least twice as fast as float32 ones (timed once, see
        :func:`vsmd_ts.training.precision.resolve_precision`; chosen on exchange validation windows,
        benchmarks/RESULTS.md), else float32. Sampling is float32. Pass ``precision="32-true"``
        for runs that must repeat bit for bit on other machines.
        For DDP use ``strategy="ddp_find_unused_parameters_true"``: score and
        A steps leave different parameters without gradients. The ranks split
        each batch (see ``batch_size``), so the schedule and learning rate
        need no change with the number of processes.
    seed
        Seeds Python, NumPy and torch before training (reproducible runs); an integer in ``[0, 2**32 - 1]``
        (default ``None``: unseeded).
    progress
        Progress bars of training (Lightning's; ``trainer_kwargs["enable_progress_bar"]``, when given, decides
        for training alone) and of sampling forecasts (default True).
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
        sde_kwargs: Optional[Dict[str, Any]] = None,
        A_training: Optional[ATrainingOption] = None,
        num_layers: PositiveWholeNumber = 2,
        hidden_size: PositiveWholeNumber = 64,
        dropout_rate: float = 0.1,
        denoiser_hidden: PositiveWholeNumber = 128,
        target: Literal["auto", "delta", "level", "seasonal"] = "auto",
        sampler: str = SAMPLER,
        sampler_steps: PositiveWholeNumber = SAMPLER_STEPS,
        num_parallel_samples: PositiveWholeNumber = 100,
        lr: PositiveFloat = LR,
        weight_decay: float = WEIGHT_DECAY,
        batch_size: PositiveWholeNumber = 32,
        num_batches_per_epoch: PositiveWholeNumber = 50,
        ensemble_size: PositiveWholeNumber = 5,
        naive_share: Optional[float] = None,
        num_feat_dynamic_real: WholeNumber = 0,
        num_past_feat_dynamic_real: WholeNumber = 0,
        num_feat_static_real: WholeNumber = 0,
        num_feat_static_cat: WholeNumber = 0,
        cardinality: Optional[List[PositiveWholeNumber]] = None,
        trainer_kwargs: Optional[Dict[str, Any]] = None,
        seed: Optional[SeedNumber] = None,
        progress: bool = True,
    ) -> None:
        defaults = {"max_epochs": 20, "gradient_clip_val": 10.0, "logger": False, "enable_model_summary": False,
                    "precision": "auto"}
        super().__init__(trainer_kwargs={**defaults, **(trainer_kwargs or {})})
        self.sde = sde.lower()
        self.sde_kwargs = _sde_parameters(self.sde, sde_kwargs)
        self.A_training = ATraining.of(A_training)
        # cheap objects that validate the sampler now, not after data loading
        get_sampler(sampler)
        check_options(dropout_rate=dropout_rate, weight_decay=weight_decay, lr=lr, naive_share=naive_share)
        cardinality, _ = _embedding_sizes(num_feat_static_cat, cardinality)
        # declared covariates only: without any, the model's options (and predictor.json) are as before
        self.covariates = {k: v for k, v in dict(
            num_feat_dynamic_real=num_feat_dynamic_real, num_past_feat_dynamic_real=num_past_feat_dynamic_real,
            num_feat_static_real=num_feat_static_real, num_feat_static_cat=num_feat_static_cat,
            cardinality=cardinality or None).items() if v}
        self.freq = normalize_freq(freq)
        self.prediction_length = prediction_length
        self.target_dim = target_dim
        self.context_length = context_length or 3 * prediction_length
        self.lags_seq = sorted(lags_seq) if lags_seq is not None else default_lags(self.freq)
        self.time_features = time_features_for(self.freq)  # until training keeps those its data cover
        self.model_kwargs = dict(
            target_dim=target_dim, prediction_length=prediction_length, context_length=self.context_length,
            lags_seq=self.lags_seq, num_time_features=len(self.time_features) + 1 + num_feat_dynamic_real,
            season_length=season_length(self.freq), hidden_size=hidden_size, num_layers=num_layers,
            dropout_rate=dropout_rate, target=target, sde=self.sde, **self.sde_kwargs,
            denoiser_hidden=denoiser_hidden, sampler=sampler, sampler_steps=sampler_steps,
            num_parallel_samples=num_parallel_samples, progress=progress, **self.covariates,
        )
        self.module_kwargs = dict(lr=lr, weight_decay=weight_decay, A_training=self.A_training.as_dict(),
                                  ensemble_size=ensemble_size, naive_share=naive_share)
        self.batch_size, self.num_batches_per_epoch, self.seed = batch_size, num_batches_per_epoch, seed
        self.data_target: Optional[str] = None  # what target="auto" chose on the last training data
        self.data_season: Optional[int] = None  # and the season it differences (and its naive repeats)
        self.train_sampler = ContextInstanceSampler(
            num_instances=1.0, min_past=self.context_length, min_future=prediction_length)
        self.validation_sampler = ValidationSplitSampler(min_future=prediction_length)

    # -------------------------------------------------------------- pipeline
    def _check_transform(self) -> CheckMultivariateTarget:
        """The input check, one instance per estimator: it warns about ignored covariate fields once."""
        if getattr(self, "_check", None) is None:
            covariates = dict(self.covariates)
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

    def choose_season(self, data: Dataset) -> int:
        """The season of the seasonal target (and of its seasonal naive), chosen on ``data`` among the
        :func:`~vsmd_ts.timeseries.features.season_candidates` shorter than the model's past window; with
        ``target="auto"`` the last value (1) is weighed too, and 1 means increments (see
        :func:`~vsmd_ts.timeseries.features.choose_season`)."""
        past_length = self.context_length + max(self.lags_seq)
        seasons = [s for s in season_candidates(self.freq) if s < past_length]
        if self.model_kwargs["target"] == "auto":
            seasons = [1] + seasons
        if not seasons:
            return 1
        return choose_season((entry[FieldName.TARGET] for entry in data), self.prediction_length, seasons)

    def resolved_kwargs(self) -> tuple:
        """``(model_kwargs, module_kwargs)`` with the data-dependent defaults filled in.

        ``target="auto"`` and the season take what
        :meth:`choose_season` chose on the last training data (``"delta"``
        and the frequency's :func:`season_length` before any training, e.g.
        for a module built by hand); ``naive_share=None`` becomes 0.25, or 0
        for increments of sub-daily data (a walk has no daily cycle); the
        network reads the time features the last training data cover
        (:func:`~vsmd_ts.timeseries.features.covered_time_features`).
        """
        model_kwargs, module_kwargs = dict(self.model_kwargs), dict(self.module_kwargs)
        model_kwargs["num_time_features"] = (len(self.time_features) + 1
                                             + self.covariates.get("num_feat_dynamic_real", 0))
        if model_kwargs["target"] == "auto":
            model_kwargs["target"] = self.data_target or "delta"
        if self.data_season is not None:
            model_kwargs["season_length"] = self.data_season
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
        frequency, values out of float32's range once scaled); Lightning's folder is temporary unless
        ``default_root_dir`` is given, so no files are left behind; without
        validation data the final weights are kept (the training loss mixes
        A and score phases, so a "best" ``train_loss`` is not meaningful),
        with it the lowest-``val_loss`` weights; and an exception during
        training propagates instead of silently returning an earlier
        checkpoint. A non-finite loss or weight stops training with
        :class:`~vsmd_ts.timeseries.lightning_module.TrainingDivergedError`
        (naming the step, member and parameter), and final weights that are
        not all finite raise it rather than give a predictor.
        """
        check_training_data(training_data, self._check_transform())
        if validation_data is not None:
            check_training_data(validation_data, self._check_transform())
        if from_predictor is not None:  # the network it continues reads the time features it was trained on
            self.time_features = _time_features_of(from_predictor)
        else:
            longest = max(np.shape(entry[FieldName.TARGET])[-1] for entry in training_data)
            self.time_features = covered_time_features(self.freq, longest)
        if self.model_kwargs["target"] != "delta":
            self.data_season = self.choose_season(training_data)
            if self.model_kwargs["target"] == "auto":
                self.data_target = "seasonal" if self.data_season > 1 else "delta"
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
            precision = trainer.precision
        bad = non_finite_weights(module.state_dict().items())
        if bad:  # never a predictor whose every forecast is NaN
            raise TrainingDivergedError(
                f"training ended with {describe_weights(bad)}; no predictor is returned; "
                f"{divergence_advice(module.lr, precision)}"
            )
        return TrainOutput(transformation, module, trainer, self.create_predictor(transformation, module))
