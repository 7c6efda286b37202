"""Bad input never gives silent garbage (issue 11): every case raises or warns, naming what is wrong."""

import gzip
import hashlib
import io
import logging
import tarfile
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from gluonts.dataset.common import ListDataset

from vsmd_ts import VSMDEstimator
from vsmd_ts.timeseries.data import EMBEDDED, DatasetCorruptError, DatasetNotFoundError, load_benchmark

D, H, T = 3, 4, 80
START = pd.Period("2021-01-01 00:00", freq="h")


def signal(T=T, D=D):
    t = np.arange(T)
    return np.stack([np.sin(2 * np.pi * t / 24 + i) + 2 * i for i in range(D)]).astype(np.float64)


def dataset(*targets, freq="h", start=START):
    return ListDataset([{"start": start, "target": t} for t in targets], freq=freq, one_dim_target=False)


def tiny(**kw):
    args = dict(
        freq="h", prediction_length=H, target_dim=D, context_length=8, lags_seq=[1, 2], hidden_size=4,
        num_layers=1, denoiser_hidden=8, batch_size=4, num_batches_per_epoch=2,
        sampler_steps=2, num_parallel_samples=3, A_training=dict(trajectory_steps=2, num_trajectories=4), seed=0,
        progress=False, trainer_kwargs=dict(max_epochs=1, enable_progress_bar=False),
    )
    args.update(kw)
    estimator = VSMDEstimator(**args)
    estimator.model_kwargs["denoiser_blocks"] = 1  # the network layer's option: a one-block denoiser, fast tests
    return estimator


@pytest.fixture(scope="module")
def predictor():
    return tiny().train(dataset(signal()))


# ---------------------------------------------------------------- prediction input
def test_inf_in_the_prediction_context_raises_naming_series_and_time(predictor):
    target = signal()
    target[1, T - 3] = np.inf
    with pytest.raises(ValueError, match=r"series 1, time index 77 \(2021-01-04 05:00\) is inf"):
        list(predictor.predict(dataset(target)))
    target[1, T - 3] = 1e39  # finite in float64, inf in the model's float32
    with pytest.raises(ValueError, match="series 1, time index 77"):
        list(predictor.predict(dataset(target)))


def test_all_nan_context_raises_instead_of_forecasting_around_zero(predictor):
    target = signal()
    target[2, -8:] = np.nan
    with pytest.raises(ValueError, match=r"series \[2\] have no observed"):
        list(predictor.predict(dataset(target)))
    target[2, -8:-1] = np.nan
    target[2, -1] = 4.0  # one observed value in the context is enough
    (forecast,) = predictor.predict(dataset(target))
    assert np.isfinite(forecast.samples).all()


def test_frequency_mismatch_raises(predictor):
    daily = dataset(signal(), freq="D", start=pd.Period("2021-01-01", freq="D"))
    with pytest.raises(ValueError, match="frequency is 'D' but the estimator was built with freq='h'"):
        list(predictor.predict(daily))
    with pytest.raises(ValueError, match="frequency is 'D'"):
        tiny().train(daily)


@pytest.mark.parametrize("start", ["2021-01-01", pd.Timestamp("2021-01-01"), pd.Timestamp("2021-01-01", tz="UTC"),
                                   np.datetime64("2021-01-01T00:00")])
def test_plain_dict_entries_are_read_in_the_estimators_frequency(start):
    entries = [{"start": start, "target": signal()}]
    est = tiny(num_batches_per_epoch=1, target="delta")
    predictor = est.train(entries)
    (forecast,) = predictor.predict(entries)
    assert forecast.start_date == START + T and forecast.samples.shape == (3, H, D)
    assert isinstance(entries[0]["start"], type(start))  # the caller's entries are left as they were


@pytest.mark.parametrize("start, message", [(None, "no 'start' field"), ("soon", "'soon' is not a date"),
                                            (17, "17 is not a date")])
def test_plain_dict_entries_with_a_bad_start_raise(predictor, start, message):
    entry = {"target": signal()} if start is None else {"start": start, "target": signal()}
    with pytest.raises(ValueError, match=message):
        list(predictor.predict([entry]))
    with pytest.raises(ValueError, match=message):
        tiny().train([entry])


@pytest.mark.parametrize("num_samples", [-5, 0, 2.5, True, "3"])
def test_bad_num_samples_raise_at_the_call(predictor, num_samples):
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        predictor.predict(dataset(signal()), num_samples=num_samples)


def test_num_samples_sets_the_number_of_sample_paths():
    predictor = tiny(num_batches_per_epoch=1, target="delta").train(dataset(signal()))
    (forecast,) = predictor.predict(dataset(signal()), num_samples=5.0)
    assert forecast.samples.shape == (5, H, D)


# ---------------------------------------------------------------- training input
def test_empty_training_data_raises():
    with pytest.raises(ValueError, match="dataset is empty"):
        tiny().train(ListDataset([], freq="h", one_dim_target=False))


def test_inf_in_training_data_fails_up_front_naming_series_and_time(monkeypatch):
    import lightning.pytorch as pl

    target = signal()
    target[2, 40] = -np.inf

    def no_trainer(*args, **kwargs):
        raise AssertionError("the data must be checked before a Trainer is built")

    monkeypatch.setattr(pl, "Trainer", no_trainer)
    with pytest.raises(ValueError, match=r"entry #1: series 2, time index 40 \(2021-01-02 16:00\) is -inf"):
        tiny().train(dataset(signal(), target))


def test_all_nan_series_warn_and_all_nan_data_raise():
    target = signal()
    target[1] = np.nan
    with pytest.warns(UserWarning, match=r"series \[1\] are entirely NaN"):
        tiny().train(dataset(target))
    with pytest.raises(ValueError, match="every value of the dataset is NaN"):
        tiny().train(dataset(np.full((D, T), np.nan)))


# ---------------------------------------------------------------- construction
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prediction_length=2.7), "prediction_length"),
        (dict(prediction_length=0), "prediction_length"),
        (dict(context_length=-3), "context_length"),
        (dict(sde_kwargs={"prior": "foo"}), "prior"),
        (dict(sde="vsdm", sde_kwargs={"damping_ratio": 0.7}), "damping_ratio"),
        (dict(sde="vp", sde_kwargs={"damping_ratio": 0.5}), "damping_ratio"),
        (dict(sampler="rk4"), "unknown sampler"),
        (dict(A_training={"warmup": 0.8, "cooldown": 0.4}), "warmup"),
        (dict(lags_seq=[0, 1]), "lags_seq"),
        (dict(dropout_rate=-0.1), "dropout_rate"),
        (dict(dropout_rate=1.0), "dropout_rate"),
        (dict(dropout_rate=float("nan")), "dropout_rate"),
        (dict(weight_decay=-1e-2), "weight_decay"),
        (dict(weight_decay=float("inf")), "weight_decay"),
        (dict(lr=float("inf")), "lr"),
        (dict(A_training={"lr": float("inf")}), "lr"),
        (dict(sde_kwargs={"beta": float("inf")}), "beta"),
        (dict(naive_share=-0.1), "naive_share"),
        (dict(naive_share=1.5), "naive_share"),
        (dict(seed=-1), "seed"),
        (dict(seed=2.7), "seed"),
        (dict(seed=2**32), "seed"),
    ],
)
def test_bad_hyper_parameters_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny(**kwargs)


def test_whole_number_floats_are_accepted():
    est = tiny(prediction_length=4.0, context_length=np.int64(8))
    assert est.prediction_length == 4 and type(est.prediction_length) is int and est.context_length == 8


def test_edge_values_of_the_ranges_are_accepted():
    est = tiny(dropout_rate=0.0, weight_decay=0.0, naive_share=1.0, seed=2**32 - 1)
    assert est.seed == 2**32 - 1 and est.module_kwargs["weight_decay"] == 0.0
    assert tiny(seed=np.int64(3), naive_share=0).seed == 3


# ---------------------------------------------------------------- files
def test_serialize_creates_the_folder(predictor, tmp_path):
    from gluonts.model.predictor import Predictor

    path = tmp_path / "new" / "model"
    predictor.serialize(path)
    assert Predictor.deserialize(path) == predictor


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("prediction-net-state.pt", b"", "prediction-net-state.pt: file is empty"),
        ("prediction-net-state.pt", b"junk" * 100, "prediction-net-state.pt is not a readable torch state dict"),
        ("prediction-net-state.pt", "object", "prediction-net-state.pt is not a readable torch state dict"),
        ("predictor.json", None, "predictor.json: not valid JSON"),
        ("gluonts-config.json", b"", "gluonts-config.json: file is empty"),
        ("gluonts-config.json", b"{", "gluonts-config.json: not valid JSON"),
    ],
)
def test_damaged_predictor_files_are_named(predictor, tmp_path, name, content, message):
    from vsmd_ts.timeseries import PredictorFileError, VSMDPredictor

    predictor.serialize(tmp_path)
    path = tmp_path / name
    if content == "object":
        content = _pickled_object()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2] if content is None else content)
    with pytest.raises(PredictorFileError, match=message) as err:
        VSMDPredictor.deserialize(tmp_path)
    assert "weights_only" not in str(err.value)
    from gluonts.model.predictor import Predictor

    with pytest.raises(PredictorFileError, match=message):
        Predictor.deserialize(tmp_path)


@pytest.mark.parametrize("name", ["gluonts-config.json", "predictor.json", "prediction-net-state.pt"])
def test_missing_predictor_files_are_named(predictor, tmp_path, name):
    from gluonts.model.predictor import Predictor

    from vsmd_ts.timeseries import PredictorFileError, VSMDPredictor

    predictor.serialize(tmp_path)
    (tmp_path / name).unlink()
    for load in (Predictor.deserialize, VSMDPredictor.deserialize):
        with pytest.raises(PredictorFileError, match=f"{name}: file missing") as err:
            load(tmp_path)
        message = str(err.value)
        assert "type.txt" not in message and f"{tmp_path} is not a saved VSMD predictor" in message
        assert isinstance(err.value, FileNotFoundError)  # what GluonTS raised for a missing file


def test_a_folder_that_is_no_predictor_is_named(tmp_path):
    from gluonts.model.predictor import Predictor

    from vsmd_ts.timeseries import PredictorFileError

    (tmp_path / "notes.txt").write_text("not a predictor")
    with pytest.raises(PredictorFileError, match="gluonts-config.json: file missing.* is not a saved VSMD predictor"):
        Predictor.deserialize(tmp_path)
    with pytest.raises(PredictorFileError, match="nowhere: no such folder"):
        Predictor.deserialize(tmp_path / "nowhere")


def test_weights_of_another_network_are_named(predictor, tmp_path):
    from vsmd_ts.timeseries import PredictorFileError, VSMDPredictor

    predictor.serialize(tmp_path)
    torch.save({"w": torch.zeros(2)}, tmp_path / "prediction-net-state.pt")
    with pytest.raises(PredictorFileError, match="weights do not fit the network"):
        VSMDPredictor.deserialize(tmp_path)


@pytest.fixture(scope="module")
def lightning_checkpoint(tmp_path_factory):
    """``last.ckpt`` of a one-epoch run (2 steps) with a Lightning ModelCheckpoint."""
    import lightning.pytorch as pl

    folder = tmp_path_factory.mktemp("checkpoints")
    callback = pl.callbacks.ModelCheckpoint(dirpath=str(folder), save_last=True)
    tiny(trainer_kwargs=dict(max_epochs=1, enable_progress_bar=False, callbacks=[callback])).train(dataset(signal()))
    return folder / "last.ckpt"


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "does not exist"),
        ("empty", "is empty"),
        ("truncated", "truncated or damaged"),
        ("random bytes", "truncated or damaged"),
        ("text", "truncated or damaged"),
        ("pickled object", "holds a pickled argparse.Namespace"),
        ("toys checkpoint", "is a vsmd_ts.toys checkpoint"),
        ("weights only", "holds only weights"),
        ("another size", "a model of another size"),
    ],
)
def test_bad_checkpoints_to_resume_from_are_named_before_lightning_reads_them(
    lightning_checkpoint, tmp_path, monkeypatch, kind, message
):
    import lightning.pytorch as pl

    from vsmd_ts.training import CheckpointError

    path, est = tmp_path / "bad.ckpt", tiny()
    good = lightning_checkpoint.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "text":
        path.write_text("epoch,loss\n1,0.5\n")
    elif kind == "pickled object":
        path.write_bytes(_pickled_object())
    elif kind == "toys checkpoint":
        torch.save({"state_dict": {"model.net.inp.weight": torch.zeros(8, 2)}, "vsmd": {"toy_config": {}}}, path)
    elif kind == "weights only":
        torch.save({"state_dict": torch.load(lightning_checkpoint, weights_only=True)["state_dict"]}, path)
    elif kind == "another size":
        path, est = lightning_checkpoint, tiny(hidden_size=8)

    def no_trainer(*args, **kwargs):
        raise AssertionError("the checkpoint must be checked before a Trainer is built")

    monkeypatch.setattr(pl, "Trainer", no_trainer)
    with pytest.raises(CheckpointError, match=message) as err:
        est.train(dataset(signal()), ckpt_path=str(path))
    assert str(path) in str(err.value) and "or train without ckpt_path" in str(err.value)
    assert "Weights only load failed" not in str(err.value) and "torch.load" not in str(err.value)


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")  # the run has no ModelCheckpoint
def test_training_resumes_from_a_good_checkpoint(lightning_checkpoint):
    out = tiny(trainer_kwargs=dict(max_epochs=2, enable_progress_bar=False)).train_model(
        dataset(signal()), ckpt_path=lightning_checkpoint)
    assert out.trainer.global_step == 4  # 2 steps from the checkpoint, 2 more


def _pickled_object():
    import argparse

    buffer = io.BytesIO()
    torch.save(argparse.Namespace(weights=1), buffer)  # loading it needs weights_only=False
    return buffer.getvalue()


def _archive_bytes():
    return EMBEDDED["exchange_rate_nips"].read_bytes()


@pytest.mark.parametrize(
    "damage",
    ["truncated", "not gzip", "garbage", "bad json"],
)
def test_damaged_dataset_archive_names_the_file(tmp_path, damage):
    folder = tmp_path / "exchange_rate_nips"
    folder.mkdir()
    path = folder / "exchange_rate_nips.tar.gz"
    good = _archive_bytes()
    if damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "not gzip":
        path.write_bytes(gzip.decompress(good))  # a plain tar named .tar.gz
    elif damage == "garbage":
        path.write_bytes(b"<html>404 Not Found</html>")
    else:
        with tarfile.open(path, "w:gz") as tar:
            data = b'{"start": "1990-01-01", "target": [1.0, 2.0\n'
            info = tarfile.TarInfo("exchange_rate_nips/train/train.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DatasetCorruptError, match=str(path)) as err:
        load_benchmark("exchange_rate_nips", str(tmp_path), download=False)
    assert isinstance(err.value, DatasetNotFoundError)  # callers reporting a missing dataset report this too
    if damage == "bad json":
        assert "train/train.json, line 1" in str(err.value)


def test_damaged_raw_exchange_file_names_the_file(tmp_path):
    folder = tmp_path / "exchange_rate_nips"
    folder.mkdir()
    path = folder / "exchange_rate.txt.gz"
    path.write_bytes(gzip.compress(b"1.0,2.0\n" * 10)[:-12])
    with pytest.raises(DatasetCorruptError, match="exchange_rate.txt.gz"):
        load_benchmark("exchange_rate_nips", str(tmp_path), download=False)


def test_embedded_dataset_is_the_gluonts_archive_and_loads_offline():
    sha = hashlib.sha256(_archive_bytes()).hexdigest()
    assert sha == "83f3cf364ae7854b0a74ef9825c47b8314896de820de877fd466cdffd94027d1"
    data = load_benchmark("exchange_rate_nips", download=False)  # no data_dir, no network
    (train,) = list(data.train)
    test = list(data.test)
    assert train["target"].shape == (8, 6071) and [e["target"].shape[1] for e in test] == [6101, 6131, 6161, 6191, 6221]
    # the test windows extend the training range
    np.testing.assert_array_equal(test[-1]["target"][:, :6071], train["target"])
    assert np.isfinite(train["target"]).all() and 0.006 < train["target"].min() < train["target"].max() < 2.2


# ---------------------------------------------------------------- noise
@pytest.mark.parametrize("progress", [False, True])
def test_progress_governs_the_training_bar(progress, capfd):
    out = tiny(progress=progress, trainer_kwargs=dict(max_epochs=1)).train_model(dataset(signal()))
    assert (out.trainer.progress_bar_callback is not None) == progress
    assert ("Epoch 1/1" in "".join(capfd.readouterr())) == progress
    # an explicit trainer setting decides for the training bar
    est = tiny(progress=False, trainer_kwargs=dict(max_epochs=1, enable_progress_bar=True))
    out = est.train_model(dataset(signal()))
    assert out.trainer.progress_bar_callback is not None


def test_training_prints_no_warnings_or_tips(caplog):
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = tiny().train_model(dataset(signal()))
    messages = [str(w.message) for w in caught if "lightning" in w.filename or "gluonts" in w.filename]
    assert messages == []
    assert not any("Tip:" in r.getMessage() for r in caplog.records)
    # the loader has a length, so the bar shows k/2 and the run length is known
    assert out.trainer.num_training_batches == 2


# ---------------------------------------------------------------- run length of the A schedule
@pytest.mark.parametrize(
    "trainer_kwargs",
    [dict(max_epochs=2), dict(max_epochs=2, accumulate_grad_batches=2), dict(max_epochs=3, limit_train_batches=1),
     dict(max_epochs=5, max_steps=3)],
)
def test_schedule_length_is_the_number_of_steps_taken(trainer_kwargs):
    """The A schedule's fractions refer to the optimiser steps the trainer really takes."""
    import lightning.pytorch as pl

    seen = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.append(module._total_steps())

    est = tiny(num_batches_per_epoch=4, trainer_kwargs=dict(enable_progress_bar=False, callbacks=[Record()],
                                                           **trainer_kwargs))
    out = est.train_model(dataset(signal()))
    assert set(seen) == {out.trainer.global_step}, (seen, out.trainer.global_step)


def test_non_finite_forecasts_raise_instead_of_being_returned(predictor, monkeypatch):
    net = predictor.prediction_net

    def nan_forward(*args, num_parallel_samples=None, **kwargs):
        samples = net.model(*args, num_parallel_samples=num_parallel_samples, **kwargs)
        return samples.masked_fill(torch.rand_like(samples) < 0.1, float("nan"))

    monkeypatch.setattr(net, "forward", nan_forward)
    with pytest.raises(FloatingPointError, match="non-finite samples"):
        list(predictor.predict(dataset(signal())))


# ---------------------------------------------------------------- training health (issue 28)
def test_values_out_of_float32_range_fail_before_training_and_large_units_train(predictor, monkeypatch):
    import lightning.pytorch as pl

    huge = signal()
    huge[1, 40] = 3e38  # finite in float32: its increments overflow, and it ended training with NaN weights
    spike = signal()
    spike[2, 50] = 1e20  # in range, but ~1e19 times the values before it: scaled, its square overflows float32

    def no_trainer(*args, **kwargs):
        raise AssertionError("the data must be checked before a Trainer is built")

    with monkeypatch.context() as patch:
        patch.setattr(pl, "Trainer", no_trainer)
        with pytest.raises(ValueError, match=r"entry #0: series 1, time index 40 \(2021-01-02 16:00\) is 3e\+38, "
                                             r"out of range for float32 training.*rescale the data"):
            tiny().train(dataset(huge))
        with pytest.raises(ValueError, match=r"entry #0: series 1, time index 40 .* out of range"):
            tiny().train(dataset(signal()), validation_data=dataset(huge))
        with pytest.raises(ValueError, match=r"entry #0: series 2, time index 50 \(2021-01-03 02:00\) is 1e\+20, "
                                             r"\S+ times the largest magnitude .* of the 11 steps before it"):
            tiny().train(dataset(spike))
    with pytest.raises(ValueError, match=r"series 1, time index 40 .* out of range for float32 forecasting"):
        list(predictor.predict(dataset(huge)))
    # legitimate magnitudes train and forecast
    large = signal() * 1e12
    large[0, 30] *= 1e6  # a spike a million times the series' magnitude is in range
    (forecast,) = tiny().train(dataset(large)).predict(dataset(large))
    assert np.isfinite(forecast.samples).all()


def test_a_non_finite_loss_stops_training_naming_the_step_and_member(monkeypatch):
    import lightning.pytorch as pl

    from vsmd_ts.timeseries import TrainingDivergedError, VSMDLightningModule

    member_loss = VSMDLightningModule._member_loss

    def nan_at_step_3(self, member, objective, batch):
        loss, stage = member_loss(self, member, objective, batch)
        return (loss * float("nan") if self.global_step == 3 and member is self.members[1] else loss), stage

    monkeypatch.setattr(VSMDLightningModule, "_member_loss", nan_at_step_3)
    steps = []

    class Steps(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            steps.append(trainer.global_step)

    est = tiny(ensemble_size=2, trainer_kwargs=dict(max_epochs=3, enable_progress_bar=False, precision="bf16-mixed",
                                                    callbacks=[Steps()]))
    with pytest.raises(TrainingDivergedError, match=r"training diverged at step 3 \(epoch 1, batch 1; counted from "
                                                    r"0\): the training loss is not finite \(member 1: nan\)") as err:
        est.train(dataset(signal()))
    assert steps == [0, 1, 2, 3]  # stopped at once
    assert isinstance(err.value, FloatingPointError)
    message = str(err.value)
    assert "non-finite weight(s): member 0 'rnn.weight_ih_l0'" in message  # the clipped NaN gradient reached all
    assert "lr=0.001" in message and "trainer_kwargs={'precision': '32-true'}" in message


def test_a_non_finite_weight_stops_training_naming_member_and_parameter():
    import lightning.pytorch as pl

    from vsmd_ts.timeseries import TrainingDivergedError

    class Poison(pl.Callback):  # runs before the module's own end-of-batch check
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step == 2:
                with torch.no_grad():
                    module.members[1].denoiser.inp.weight.view(-1)[5] = float("inf")

    est = tiny(ensemble_size=2, trainer_kwargs=dict(max_epochs=2, enable_progress_bar=False, callbacks=[Poison()]))
    with pytest.raises(TrainingDivergedError, match=r"at step 1 \(epoch 0, batch 1; counted from 0\): the optimiser "
                                                    r"step left 1 non-finite weight\(s\): member 1 "
                                                    r"'denoiser.inp.weight' \(1 of \d+\)\."):
        est.train(dataset(signal()))


def test_non_finite_weights_are_neither_serialised_nor_returned(tmp_path):
    import lightning.pytorch as pl

    from vsmd_ts.timeseries import TrainingDivergedError

    est = tiny()
    module = est.create_lightning_module()
    predictor = est.create_predictor(est.create_transformation(), module)
    predictor.serialize(tmp_path / "finite")
    with torch.no_grad():
        module.members[0].rnn.weight_hh_l0[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"not serialising the predictor to .*bad: its network has 1 "
                                                 r"non-finite weight\(s\): member 0 'rnn.weight_hh_l0' \(1 of 64\)"):
        predictor.serialize(tmp_path / "bad")
    assert not (tmp_path / "bad").exists()

    class Poison(pl.Callback):  # after the last step's check: only the final check sees it
        def on_train_end(self, trainer, module):
            with torch.no_grad():
                module.members[0].rnn.weight_hh_l0[0, 0] = float("nan")

    est = tiny(trainer_kwargs=dict(max_epochs=1, enable_progress_bar=False, callbacks=[Poison()]))
    with pytest.raises(TrainingDivergedError, match=r"training ended with 1 non-finite weight\(s\): member 0 "
                                                    r"'rnn.weight_hh_l0' \(1 of 64\); no predictor is returned"):
        est.train_model(dataset(signal()))
