"""benchmarks/covariates.py: its data, what each model is shown, and quick end-to-end runs."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import covariates  # noqa: E402

ETTH1 = ROOT.parent / "shared" / "data"
needs_etth1 = pytest.mark.skipif(not (ETTH1 / "ett" / "ETTh1.csv").is_file(), reason="ETTh1.csv not available")
METRICS = ["CRPS", "CRPS-Sum", "ProbTS-CRPS", "ProbTS-NMAE", "energy_score", "coverage_90"]


def check_records(out, dataset, models, split="test"):
    for model in models:
        record = json.loads((out / "runs" / f"{dataset}_{split}_{model}_seed0_quick.json").read_text())
        assert record["quick"] and record["seed"] == 0 and record["sde"] == model and record["command"]
        assert record["train_cpu_s"] > 0 and record["machine"]["cpu_count"] and record["date"]
        ev = record["evaluations"][0]
        assert ev["windows"] == covariates.QUICK["windows"] and ev["num_samples"] == covariates.QUICK["num_samples"]
        assert all(np.isfinite(ev["metrics"][key]) for key in METRICS), ev["metrics"]
        assert (out / "figures" / f"{record['name']}.png").is_file()
        if model.startswith("vsmd") and record["resolved_config"]["naive_share"] > 0:
            # the same models without the pooled naive paths, scored on the same windows
            share0 = record["metrics_naive_share_0"]
            assert all(np.isfinite(share0[key]) for key in METRICS) and share0["CRPS"] != ev["metrics"]["CRPS"]


def test_synthetic_data_is_fixed_and_the_covariate_drives_the_target():
    a, b = covariates.synthetic(), covariates.synthetic()
    assert np.array_equal(a.target, b.target) and np.array_equal(a.covariates, b.covariates)
    assert a.target.shape == (2400,) and a.covariates.shape == (1, 2400) and a.known
    assert a.ends["test"] == list(range(1704, 2401, 24)) and a.ends["validation"] == list(range(1464, 1681, 24))
    cycle = 10 + 2 * np.sin(2 * np.pi * np.arange(2400) / 24)
    assert np.corrcoef(a.target - cycle, a.covariates[0])[0, 1] > 0.95


def test_covariates_after_the_forecast_start_are_never_shown_as_past_or_lagged():
    data = covariates.synthetic()
    H, end = covariates.H, 1700
    past = covariates.covariate_fields(data, "past", end, predict=True)["past_feat_dynamic_real"]
    lag = covariates.covariate_fields(data, "lag", end, predict=True)["feat_dynamic_real"]
    known = covariates.covariate_fields(data, "known", end, predict=True)["feat_dynamic_real"]
    assert past.shape == (1, end) and lag.shape == known.shape == (1, end + H)
    # the horizon's lagged values are the H values before the forecast start
    assert np.array_equal(lag[:, end:], data.covariates[:, end - H:end])
    assert covariates.covariate_fields(data, "lag", end, predict=False)["feat_dynamic_real"].shape == (1, end)
    assert [covariates.covariate_form(m, data) for m in ("vsmd", "deepar", "vsmd-nocov")] == ["known", "known", None]
    with pytest.raises(SystemExit):
        covariates.parse_args(["--out", "x", "--model", "vsmd-lagcov"])


@pytest.fixture
def in_process(monkeypatch):
    """The parent's runs in this process, one after another: five Python processes would take longer to start than
    the runs take (``crps_sum.run_processes`` itself is tested in test_benchmark_script.py)."""
    def run(command, jobs, log_path, parallel, env):
        assert env["OMP_NUM_THREADS"] == "1" and "benchmarks/covariates.py" in env["VSMD_BENCH_COMMAND"]
        for model, seed in jobs:
            assert covariates.main(command[2:] + ["--single", model, str(seed)]) == 0
        return []

    monkeypatch.setattr(covariates, "run_processes", run)


def test_synthetic_quick_run_writes_records_summary_and_charts(tmp_path, in_process):
    models = ["vsmd", "vsmd-nocov", "deepar", "deepar-nocov"]
    assert covariates.main(["--dataset", "synthetic", "--quick", "--seeds", "0", "--out", str(tmp_path)]) == 0
    check_records(tmp_path, "synthetic", models)
    summary = (tmp_path / "summary.md").read_text()
    for model, shown in zip(models, ["feat_dynamic_real: x", "none"] * 2):
        assert f"| {model} | {shown} | 0 |" in summary


@needs_etth1
def test_etth1_ot_uses_the_loader_s_rows_and_windows():
    from vsmd_ts.timeseries.data import load_benchmark, read_wide_csv

    data = covariates.etth1_ot(str(ETTH1))
    loader = load_benchmark("etth1", str(ETTH1), download=False)
    assert data.train_end == 8640 and data.ends["test"] == list(range(11544, 14401, 24))
    assert data.ends["validation"] == list(range(8664, 11521, 24))
    values, _, _, names = read_wide_csv(ETTH1 / "ett" / "ETTh1.csv")
    assert np.array_equal(data.target, values[names.index("OT"), :14400]) and not data.known
    assert data.covariate_names == ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL"]
    assert np.allclose(data.covariates[:, :8640].mean(1), 0, atol=1e-4)
    assert data.start == list(loader.test)[0]["start"]
    forms = {m: covariates.covariate_form(m, data) for m in covariates.MODELS}
    assert forms == {"vsmd": "past", "vsmd-nocov": None, "vsmd-lagcov": "lag", "deepar": "lag", "deepar-nocov": None}


@needs_etth1
def test_etth1_ot_quick_runs_of_every_model(tmp_path, in_process):
    assert covariates.main(["--dataset", "etth1-ot", "--data-dir", str(ETTH1), "--quick", "--seeds", "0",
                            "--out", str(tmp_path)]) == 0
    check_records(tmp_path, "etth1-ot", covariates.MODELS)
    record = json.loads((tmp_path / "runs" / "etth1-ot_test_vsmd_seed0_quick.json").read_text())
    assert record["covariates"]["form"] == "past" and record["windows_end"] == [14328, 14400]
    assert record["resolved_config"]["num_past_feat_dynamic_real"] == 6
    summary = (tmp_path / "summary.md").read_text()
    assert "| deepar | feat_dynamic_real: HUFL, HULL, MUFL, MULL, LUFL, LULL, 24 steps earlier | 0 |" in summary


def test_a_missing_etth1_file_is_a_clear_error(tmp_path, capsys):
    assert covariates.main(["--dataset", "etth1-ot", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "ETTh1.csv" in err and "Traceback" not in err
