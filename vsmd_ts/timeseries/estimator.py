"""GluonTS estimator for VSMD forecasters: ``VSMDEstimator(...).train(dataset)``."""

from __future__ import annotations

import logging
import tempfile
from typing import Any, Dict, Iterable, List, Optional

import lightning.pytorch as pl
import numpy as np
import torch
from gluonts.core.component import validated
from gluonts.dataset.common import Dataset
from gluonts.dataset.field_names import FieldName
from gluonts.dataset.loader import as_stacked_batches
from gluonts.env import env
from gluonts.itertools import Cached, Cyclic
from gluonts.torch.model.estimator import PyTorchLightningEstimator, TrainOutput
from gluonts.torch.model.predictor import PyTorchPredictor
from gluonts.transform import (
    AddAgeFeature,
    AddObservedValuesIndicator,
    AddTimeFeatures,
    AsNumpyArray,
    Chain,
    ExpectedNumInstanceSampler,
    InstanceSampler,
    InstanceSplitter,
    MapTransformation,
    SelectFields,
    TestSplitSampler,
    Transformation,
    ValidationSplitSampler,
    VstackFeatures,
)

from vsmd_ts.diffusion import SDE_NAMES

from .features import default_lags, normalize_freq, time_features_for
from .lightning_module import VSMDLightningModule

__all__ = ["CheckMultivariateTarget", "VSMDEstimator", "PREDICTION_INPUT_NAMES", "TRAINING_INPUT_NAMES"]

logger = logging.getLogger(__name__)

PREDICTION_INPUT_NAMES = ["past_target", "past_observed_values", "past_time_feat", "future_time_feat"]
TRAINING_INPUT_NAMES = PREDICTION_INPUT_NAMES + ["future_target", "future_observed_values"]


class CheckMultivariateTarget(MapTransformation):
    """Reject entries that the model cannot use, with a message saying why.

    Parameters
    ----------
    target_dim
        Expected number of series (rows of the target).
    min_length
        Minimum number of time steps (``context_length``, plus
        ``prediction_length`` for training data).
    min_train_extra
        Extra steps required when ``is_train`` is true.
    """

    @validated()
    def __init__(self, target_dim: int, min_length: int, min_train_extra: int = 0) -> None:
        self.target_dim = target_dim
        self.min_length = min_length
        self.min_train_extra = min_train_extra

    def map_transform(self, data: Dict[str, Any], is_train: bool) -> Dict[str, Any]:
        target = np.asarray(data[FieldName.TARGET], dtype=np.float32)
        item = data.get(FieldName.ITEM_ID, "?")
        if target.ndim == 1:
            raise ValueError(
                f"entry {item}: got a univariate target of shape {target.shape}, but VSMDEstimator forecasts "
                "multivariate series with targets of shape (target_dim, T). Group univariate series with "
                "gluonts.dataset.multivariate_grouper.MultivariateGrouper, or build the dataset with "
                "ListDataset(..., one_dim_target=False)."
            )
        if target.ndim != 2:
            raise ValueError(f"entry {item}: target must have shape (target_dim, T), got {target.shape}")
        if target.shape[0] != self.target_dim:
            raise ValueError(
                f"entry {item}: target has {target.shape[0]} series but the model was built with "
                f"target_dim={self.target_dim}; train and predict on data with the same number of series"
            )
        need = self.min_length + (self.min_train_extra if is_train else 0)
        if target.shape[1] < need:
            what = "context_length + prediction_length" if is_train and self.min_train_extra else "context_length"
            raise ValueError(
                f"entry {item}: series of length {target.shape[1]} is shorter than {what} = {need}; "
                "use a shorter context_length or longer series"
            )
        return data


class VSMDEstimator(PyTorchLightningEstimator):
    """Variational Schrödinger Momentum Diffusion forecaster (GluonTS estimator).

    ``VSMDEstimator(freq, prediction_length, target_dim, ...).train(dataset)``
    returns a :class:`~gluonts.torch.model.predictor.PyTorchPredictor` whose
    forecasts are :class:`~gluonts.model.forecast.SampleForecast` objects with
    samples of shape ``(num_samples, prediction_length, target_dim)``. Targets
    must be multivariate, shape ``(target_dim, T)`` (``MultivariateGrouper`` or
    ``ListDataset(..., one_dim_target=False)``); NaNs are allowed and are
    excluded from the loss through the observed-value mask.

    Parameters
    ----------
    freq
        Pandas frequency string ('h', 'B', 'D', ...).
    prediction_length
        Forecast horizon.
    target_dim
        Number of series.
    context_length
        RNN unroll and scaling window (default ``3 * prediction_length``).
    lags_seq
        1-based target lags fed to the RNN (default: a handful chosen from ``freq``).
    sde
        ``"vsuld"`` (default), ``"vscld"``, ``"cld"``, ``"uld"``, ``"vsdm"`` or ``"vp"``.
    beta
        Speed of the forward SDE (default 10 for momentum SDEs and VSDM, chosen on exchange-rate validation data;
        ``beta_max = 20`` for VP).
    damping_ratio
        R for ``vsuld``/``uld`` (default 0.7); 1 for the critically damped ones.
    num_layers, hidden_size, rnn_type, dropout_rate
        History encoder.
    denoiser_hidden, denoiser_blocks
        Residual-MLP denoiser size.
    target
        ``"delta"`` (default: model increments, forecast = last value + their
        cumulative sum) or ``"level"`` (model the values themselves).
    scaling
        ``"std"`` (default), ``"mean"`` or ``"none"``; scales are floored relative
        to the series' magnitude, so forecasts do not depend on the data's units.
    sampler, sampler_steps, time_grid_rho
        ``"splitting"`` (default, 40 steps = 40 NFE: the reverse SDE, chosen on
        exchange validation windows over the probability-flow samplers), ``"heun"``,
        ``"exp_heun"`` or ``"euler_maruyama"``; steps
        per forecast step; time-grid spacing.
    num_parallel_samples
        Paths sampled in parallel per series.
    lr, A_lr, weight_decay
        One AdamW with a separate learning rate for A.
    warmup, cooldown, cycle, forward_fraction
        Alternation schedule of A updates, as fractions of the run.
    trajectory_steps, num_trajectories, frozen_policy
        Backward simulations for the A update.
    batch_size, num_batches_per_epoch
        Training windows per batch and batches per epoch.
    trainer_kwargs
        Extra ``lightning.pytorch.Trainer`` arguments (``max_epochs``,
        ``accelerator``, ``devices``, ``strategy``...). Defaults: 50 epochs,
        gradient clipping 10, no logger, checkpoints in a temporary folder.
        For DDP use ``strategy="ddp_find_unused_parameters_true"``: score and
        A steps leave different parameters without gradients.
    train_sampler, validation_sampler
        GluonTS instance samplers.
    seed
        Seeds Python, NumPy and torch before training (reproducible runs).
    progress
        Progress bar while sampling forecasts (training uses Lightning's).
    """

    @validated()
    def __init__(
        self,
        freq: str,
        prediction_length: int,
        target_dim: int,
        context_length: Optional[int] = None,
        lags_seq: Optional[List[int]] = None,
        sde: str = "vsuld",
        beta: Optional[float] = None,
        damping_ratio: Optional[float] = None,
        gamma: float = 2.0,
        A_max: float = 0.4,
        initial_velocity: str = "marginal",
        prior: str = "data",
        num_layers: int = 2,
        hidden_size: int = 64,
        rnn_type: str = "lstm",
        dropout_rate: float = 0.1,
        denoiser_hidden: int = 128,
        denoiser_blocks: int = 3,
        target: str = "delta",
        scaling: str = "std",
        sampler: str = "splitting",
        sampler_steps: int = 40,
        time_grid_rho: float = 1.0,
        num_parallel_samples: int = 100,
        loss_positions: str = "all",
        lr: float = 1e-3,
        A_lr: float = 1e-3,
        weight_decay: float = 1e-8,
        warmup: float = 0.2,
        cooldown: float = 0.4,
        cycle: float = 0.12,
        forward_fraction: float = 1 / 6,
        trajectory_steps: int = 50,
        num_trajectories: int = 256,
        frozen_policy: str = "score",
        batch_size: int = 32,
        num_batches_per_epoch: int = 50,
        trainer_kwargs: Optional[Dict[str, Any]] = None,
        train_sampler: Optional[InstanceSampler] = None,
        validation_sampler: Optional[InstanceSampler] = None,
        seed: Optional[int] = None,
        progress: bool = True,
    ) -> None:
        default_trainer_kwargs = {
            "max_epochs": 50,
            "gradient_clip_val": 10.0,
            "logger": False,
            "enable_model_summary": False,
        }
        if trainer_kwargs is not None:
            default_trainer_kwargs.update(trainer_kwargs)
        super().__init__(trainer_kwargs=default_trainer_kwargs)

        for name, value in [("prediction_length", prediction_length), ("target_dim", target_dim),
                            ("batch_size", batch_size), ("num_batches_per_epoch", num_batches_per_epoch),
                            ("num_parallel_samples", num_parallel_samples), ("sampler_steps", sampler_steps)]:
            if int(value) < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if sde.lower() not in SDE_NAMES:
            raise ValueError(f"unknown sde {sde!r}; choose one of {', '.join(SDE_NAMES)}")
        self.freq = normalize_freq(freq)
        self.prediction_length = int(prediction_length)
        self.target_dim = int(target_dim)
        self.context_length = int(context_length) if context_length is not None else 3 * self.prediction_length
        if self.context_length < 1:
            raise ValueError(f"context_length must be positive, got {context_length}")
        self.lags_seq = sorted(lags_seq) if lags_seq is not None else default_lags(self.freq)
        self.time_features = time_features_for(self.freq)
        self.sde = sde.lower()
        momentum = self.sde in ("vsuld", "vscld", "cld", "uld")
        if damping_ratio is None:
            damping_ratio = 0.7 if self.sde in ("vsuld", "uld") else None
        self.model_kwargs = {
            "target_dim": self.target_dim,
            "prediction_length": self.prediction_length,
            "context_length": self.context_length,
            "lags_seq": self.lags_seq,
            "num_time_features": len(self.time_features) + 1,
            "hidden_size": hidden_size,
            "num_layers": num_layers,
            "rnn_type": rnn_type,
            "dropout_rate": dropout_rate,
            "target": target,
            "scaling": scaling,
            "sde": self.sde,
            "beta": beta if beta is not None else (10.0 if self.sde != "vp" else 20.0),
            "damping_ratio": damping_ratio if momentum else None,
            "gamma": gamma,
            "A_max": A_max,
            "initial_velocity": initial_velocity,
            "prior": prior,
            "denoiser_hidden": denoiser_hidden,
            "denoiser_blocks": denoiser_blocks,
            "sampler": sampler,
            "sampler_steps": sampler_steps,
            "time_grid_rho": time_grid_rho,
            "num_parallel_samples": num_parallel_samples,
            "loss_positions": loss_positions,
            "progress": progress,
        }
        self.module_kwargs = {
            "lr": lr,
            "A_lr": A_lr,
            "weight_decay": weight_decay,
            "warmup": warmup,
            "cooldown": cooldown,
            "cycle": cycle,
            "forward_fraction": forward_fraction,
            "trajectory_steps": trajectory_steps,
            "num_trajectories": num_trajectories,
            "frozen_policy": frozen_policy,
        }
        self.batch_size = int(batch_size)
        self.num_batches_per_epoch = int(num_batches_per_epoch)
        # build once so that bad hyper-parameters fail here, not after data loading
        self.create_lightning_module()
        self.seed = seed
        self.train_sampler = train_sampler or ExpectedNumInstanceSampler(
            num_instances=1.0, min_past=self.context_length, min_future=self.prediction_length
        )
        self.validation_sampler = validation_sampler or ValidationSplitSampler(min_future=self.prediction_length)

    # -------------------------------------------------------------- pipeline
    def create_transformation(self) -> Transformation:
        return Chain(
            [
                CheckMultivariateTarget(self.target_dim, self.context_length, self.prediction_length),
                SelectFields([FieldName.ITEM_ID, FieldName.START, FieldName.TARGET], allow_missing=True),
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
                VstackFeatures(output_field=FieldName.FEAT_TIME, input_fields=[FieldName.FEAT_TIME, FieldName.FEAT_AGE]),
            ]
        )

    def _create_instance_splitter(self, module: VSMDLightningModule, mode: str):
        sampler = {"training": self.train_sampler, "validation": self.validation_sampler, "test": TestSplitSampler()}[mode]
        return InstanceSplitter(
            target_field=FieldName.TARGET,
            is_pad_field=FieldName.IS_PAD,
            start_field=FieldName.START,
            forecast_start_field=FieldName.FORECAST_START,
            instance_sampler=sampler,
            past_length=module.model._past_length,
            future_length=self.prediction_length,
            time_series_fields=[FieldName.FEAT_TIME, FieldName.OBSERVED_VALUES],
        )

    def create_lightning_module(self) -> VSMDLightningModule:
        return VSMDLightningModule(
            model_kwargs=dict(self.model_kwargs), num_batches_per_epoch=self.num_batches_per_epoch, **self.module_kwargs
        )

    def create_training_data_loader(self, data: Dataset, module: VSMDLightningModule,
                                    shuffle_buffer_length: Optional[int] = None, **kwargs) -> Iterable:
        instances = self._create_instance_splitter(module, "training").apply(Cyclic(data).stream(), is_train=True)
        return as_stacked_batches(
            instances,
            batch_size=self.batch_size,
            shuffle_buffer_length=shuffle_buffer_length,
            field_names=TRAINING_INPUT_NAMES,
            output_type=torch.tensor,
            num_batches_per_epoch=self.num_batches_per_epoch,
        )

    def create_validation_data_loader(self, data: Dataset, module: VSMDLightningModule, **kwargs) -> Iterable:
        instances = self._create_instance_splitter(module, "validation").apply(data, is_train=True)
        return as_stacked_batches(
            instances, batch_size=self.batch_size, field_names=TRAINING_INPUT_NAMES, output_type=torch.tensor
        )

    def create_predictor(self, transformation: Transformation, module: VSMDLightningModule) -> PyTorchPredictor:
        return PyTorchPredictor(
            input_transform=transformation + self._create_instance_splitter(module, "test"),
            input_names=PREDICTION_INPUT_NAMES,
            prediction_net=module,
            batch_size=self.batch_size,
            prediction_length=self.prediction_length,
            device="auto",
        )

    # -------------------------------------------------------------- training
    def _check(self, data: Dataset, is_train: bool) -> None:
        check = CheckMultivariateTarget(self.target_dim, self.context_length, self.prediction_length)
        for entry in data:
            check.map_transform(entry, is_train)

    def train_model(
        self,
        training_data: Dataset,
        validation_data: Optional[Dataset] = None,
        from_predictor: Optional[PyTorchPredictor] = None,
        shuffle_buffer_length: Optional[int] = None,
        cache_data: bool = False,
        ckpt_path: Optional[str] = None,
        **kwargs,
    ) -> TrainOutput:
        """Fit the model and return its predictor.

        Unlike GluonTS's default this leaves no files in the working directory
        (Lightning's folder is temporary unless ``default_root_dir`` is given),
        keeps the final weights when there is no validation data (the
        training loss mixes A and score phases, so "best" is not meaningful)
        and the lowest-``val_loss`` weights otherwise.
        """
        if self.seed is not None:
            pl.seed_everything(self.seed, workers=True, verbose=False)
        self._check(training_data, is_train=True)
        if validation_data is not None:
            self._check(validation_data, is_train=True)

        transformation = self.create_transformation()
        with env._let(max_idle_transforms=max(len(training_data), 100)):
            transformed = transformation.apply(training_data, is_train=True)
            if cache_data:
                transformed = Cached(transformed)
            module = self.create_lightning_module()
            train_dl = self.create_training_data_loader(transformed, module, shuffle_buffer_length=shuffle_buffer_length)
        val_dl = None
        if validation_data is not None:
            with env._let(max_idle_transforms=max(len(validation_data), 100)):
                transformed_val = transformation.apply(validation_data, is_train=True)
                if cache_data:
                    transformed_val = Cached(transformed_val)
                val_dl = self.create_validation_data_loader(transformed_val, module)
        if from_predictor is not None:
            module.load_state_dict(from_predictor.network.state_dict())

        trainer_kwargs = dict(self.trainer_kwargs)
        callbacks = list(trainer_kwargs.pop("callbacks", []))
        checkpoint = None
        if val_dl is not None:
            checkpoint = pl.callbacks.ModelCheckpoint(monitor="val_loss", mode="min", save_weights_only=True)
            callbacks.append(checkpoint)
        with tempfile.TemporaryDirectory(prefix="vsmd_ts-") as tmp:
            trainer_kwargs.setdefault("default_root_dir", tmp)
            if checkpoint is None:
                trainer_kwargs.setdefault("enable_checkpointing", False)
            trainer = pl.Trainer(**{"accelerator": "auto", "callbacks": callbacks, **trainer_kwargs})
            trainer.fit(module, train_dataloaders=train_dl, val_dataloaders=val_dl, ckpt_path=ckpt_path)
            if checkpoint is not None and checkpoint.best_model_path:
                logger.info("loading the weights with the lowest val_loss from %s", checkpoint.best_model_path)
                state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
                module.load_state_dict(state["state_dict"])
        return TrainOutput(
            transformation=transformation,
            trained_net=module,
            trainer=trainer,
            predictor=self.create_predictor(transformation, module),
        )
