import json
import sys
from pathlib import Path

import numpy as np
import pytest

from test_data_metrics import write_fake_archive

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import crps_sum  # noqa: E402

TINY = ["max_epochs=1", "num_batches_per_epoch=2", "hidden_size=8", "denoiser_hidden=16", "num_samples=4",
        "batch_size=4"]


def quick_run(tmp_path, *options):
    """One tiny VSMD run on a fake exchange archive with ``options``: ``(out, record)``."""
    write_fake_archive(tmp_path / "data", T=200)
    out = tmp_path / "out"
    code = crps_sum.main(["--dataset", "exchange_rate_nips", "--data-dir", str(tmp_path / "data"), "--sde", "vsuld",
                          "--seeds", "0", "--out", str(out), "--quick", *options, "--save-samples", "--set", *TINY])
    assert code == 0
    (run,) = list((out / "runs").glob("*.json"))
    return out, json.loads(run.read_text())


def test_benchmark_script_smoke(tmp_path):
    out, record = quick_run(tmp_path, "--eval-samplers", "heun:2:1", "splitting:3")
    assert record["quick"] and record["seed"] == 0 and record["epochs_completed"] == 1
    # the record holds the configuration the estimator resolved from its and the registry's defaults
    resolved = record["resolved_config"]
    assert resolved["beta"] == 10.0 and resolved["damping_ratio"] == 0.7 and resolved["hidden_size"] == 8
    assert resolved["max_epochs"] == 1 and resolved["sampler"] == "sde_pc2"
    # one trained model, two samplers: Heun takes 2 score calls per step, splitting one
    assert [(e["sampler"], e["sampler_steps"], e["nfe_per_step"]) for e in record["evaluations"]] == [
        ("heun", 2, 4), ("splitting", 3, 3)]
    for ev in record["evaluations"]:
        assert np.isfinite(ev["metrics"]["CRPS-Sum"]) and ev["metrics"]["CRPS-Sum"] > 0
        assert 0 <= ev["metrics"]["coverage_90"] <= 1
    assert record["peak_rss_mb"] > 0 and record["train_time_s"] > 0
    summary = (out / "summary.md").read_text()
    # a sampler without its own grid spacing takes the config's (rho 2 by default)
    assert "| vsuld | heun | 4 | 0 |" in summary and "| vsuld | splitting rho 2 | 3 | 0 |" in summary
    assert list((out / "figures").glob("*.png"))
    # --save-samples: one archive per evaluation, the truth and the last observed value of the test windows
    from vsmd_ts.timeseries.data import load_benchmark

    data = load_benchmark("exchange_rate_nips", str(tmp_path / "data"), False)
    H = data.prediction_length
    full = [np.asarray(entry["target"]).T for entry in data.test]
    for name in ("heun-2", "splitting-3"):
        z = np.load(out / "samples" / f"{record['name']}_{name}.npz")
        assert z["samples"].shape == (len(full), 4, H, data.target_dim)
        np.testing.assert_allclose(z["truth"], np.stack([a[-H:] for a in full]), rtol=1e-6)
        np.testing.assert_allclose(z["last"], np.stack([a[-H - 1] for a in full]), rtol=1e-6)


def test_benchmark_script_missing_dataset_message(tmp_path, capsys):
    code = crps_sum.main(["--dataset", "solar_nips", "--data-dir", str(tmp_path), "--no-download", "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "solar_nips.tar.gz" in err and "Traceback" not in err


def test_repeated_set_options_accumulate():
    # a second --set used to replace the first one silently (max_epochs=2 was dropped)
    args = crps_sum.parse_args(["--out", "x", "--set", "max_epochs=2", "--set", "ensemble_size=1", "beta=8"])
    assert args.set == ["max_epochs=2", "ensemble_size=1", "beta=8"]
    assert crps_sum.parse_args(["--out", "x"]).set == []


def test_set_options_route_sde_parameters_and_A_training_fields():
    cfg = {"estimator": {"hidden_size": 128, "sde_kwargs": {"gamma": 1.5}}, "num_samples": 100}
    out = crps_sum.apply_set(cfg, ["beta=8", "damping_ratio=0.5", "A_training.lr=0.01", "A_training.cycle=0.2",
                                   "max_epochs=3", "precision=bf16-mixed", "ensemble_size=1", "lags_seq=[1,2]"])
    assert out["estimator"] == {"hidden_size": 128, "sde_kwargs": {"gamma": 1.5, "beta": 8, "damping_ratio": 0.5},
                                "A_training": {"lr": 0.01, "cycle": 0.2}, "ensemble_size": 1, "lags_seq": [1, 2]}
    assert out["max_epochs"] == 3 and out["precision"] == "bf16-mixed" and out["num_samples"] == 100
    from vsmd_ts import VSMDEstimator

    est = VSMDEstimator(freq="B", prediction_length=30, target_dim=8, **out["estimator"])  # a valid configuration
    assert est.model_kwargs["beta"] == 8.0 and est.A_training.lr == 0.01


def test_eval_sampler_spec_parses_grid_and_paths():
    assert crps_sum.parse_eval_sampler("splitting:40", 1.0) == ("splitting", 40, 1.0, None)
    assert crps_sum.parse_eval_sampler("sde_pc2:20:2", 1.0) == ("sde_pc2", 20, 2.0, None)
    assert crps_sum.parse_eval_sampler("sde_pc2:20:2:1000", 1.0) == ("sde_pc2", 20, 2.0, 1000)
    with pytest.raises(ValueError, match="SAMPLER:STEPS"):
        crps_sum.parse_eval_sampler("sde_pc2:20:2:1000:7", 1.0)


def test_benchmark_script_evaluates_naive_shares_from_one_training(tmp_path):
    out, record = quick_run(tmp_path, "--eval-naive-shares", "0", "1")
    assert [e["naive_share"] for e in record["evaluations"]] == [0.0, 1.0]
    model, naive = (np.load(out / "samples" / f"{record['name']}_sde_pc2-10_share{s}.npz")["samples"] for s in (0, 1))
    assert model.shape == naive.shape and not np.allclose(model, naive)
    summary = (out / "summary.md").read_text()
    assert "naive share 0 |" in summary and "naive share 1 |" in summary
