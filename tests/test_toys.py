"""Tests of the 2-D toy front end (vsmd_ts.toys): datasets, metrics, training, sampling, CLI, plots."""

import json
import math

import pytest
import torch

from vsmd_ts.diffusion import ResidualMLP, ScoreModel, make_sde
from vsmd_ts.toys import (
    DATASETS,
    ToyConfig,
    generate,
    get_dataset,
    load_checkpoint,
    iqr_ratio,
    marginal_pmf_rmse,
    model_from_checkpoint,
    outside_fraction,
    plot_sample_grid,
    plot_samples,
    plot_trajectories,
    pmf,
    pmf_rmse,
    sample_dataset,
    std_ratio,
    straightness,
    train,
)
from vsmd_ts.toys.__main__ import main

def _close(a, b, rtol=1e-5, atol=1e-8):
    # torch.testing.assert_close costs seconds of imports on its first call
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    assert a.shape == b.shape and torch.allclose(a, b.to(a.dtype), rtol=rtol, atol=atol), (a, b)


TINY = dict(hidden=32, num_blocks=1, batch_size=128, num_trajectories=32, trajectory_steps=10, progress=False, log_every=5)


# ----------------------------------------------------------------- datasets
@pytest.mark.parametrize("name", DATASETS)
def test_dataset_shape_dtype_and_seed(name):
    x = sample_dataset(name, 1000, seed=3)
    assert x.shape == (1000, 2) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    assert torch.equal(x, sample_dataset(name, 1000, seed=3))
    assert not torch.equal(x, sample_dataset(name, 1000, seed=4))


@pytest.mark.parametrize("stretched, base, axis, factor", [("spiral-8y", "spiral", 1, 8.0), ("checkerboard-6x", "checkerboard", 0, 6.0)])
def test_stretch_is_exact_on_one_axis(stretched, base, axis, factor):
    x = sample_dataset(stretched, 10_000, seed=0)
    y = sample_dataset(base, 10_000, seed=0)  # same raw draws
    assert get_dataset(stretched).stretched_axis == axis and get_dataset(base).stretched_axis is None
    scale = torch.ones(2)
    scale[axis] = factor
    _close(x, y * scale, rtol=1e-6, atol=1e-6)
    # unstretched data have unit pooled std; the stretched axis is `factor` times wider
    assert abs(float(y.std()) - 1.0) < 0.05
    ratio = x.std(0) / y.std(0)
    assert abs(float(ratio[axis]) - factor) < 1e-3 and abs(float(ratio[1 - axis]) - 1.0) < 1e-6


def test_spiral_and_checkerboard_geometry():
    ds = get_dataset("checkerboard-6x")
    raw = ds.sample(5000, torch.Generator().manual_seed(1), dtype=torch.float64) * ds.scale / torch.tensor([6.0, 1.0], dtype=torch.float64)
    assert (raw.abs() <= 2 * math.pi + 1e-9).all()
    s = torch.sin(raw)
    assert (s[:, 0] * s[:, 1] < 0).all()  # only the "black" cells
    # the four quadrants of the board are equally populated
    quad = (raw[:, 0] > 0).long() * 2 + (raw[:, 1] > 0).long()
    counts = torch.bincount(quad, minlength=4).float() / len(raw)
    assert (counts - 0.25).abs().max() < 0.03

    sp = get_dataset("spiral")
    r = (sp.sample(5000, torch.Generator().manual_seed(2), dtype=torch.float64) * sp.scale).norm(dim=1)
    assert 0.2 < float(r.min()) and float(r.max()) < 3.5 * math.pi + 1.5  # radius pi/2 .. 3.5 pi plus noise


def test_dataset_errors():
    with pytest.raises(ValueError, match="unknown toy dataset"):
        get_dataset("moons")
    with pytest.raises(ValueError, match="positive int"):
        sample_dataset("spiral", 0)
    with pytest.raises(ValueError, match="positive int"):
        sample_dataset("spiral", 2.5)
    with pytest.raises(ValueError, match="either seed or generator"):
        sample_dataset("spiral", 5, seed=1, generator=torch.Generator())


# ------------------------------------------------------------------ metrics
def test_pmf_rmse_zero_for_identical_and_grows_with_shift():
    x = sample_dataset("spiral-8y", 20_000, seed=0)
    assert pmf_rmse(x, x) == 0.0
    assert torch.equal(marginal_pmf_rmse(x, x), torch.zeros(2))
    sd = x.std(0)
    values = [pmf_rmse(x + torch.tensor([s, 0.0]) * sd, x) for s in (0.05, 0.2, 1.0)]
    assert 0 < values[0] < values[1] < values[2]
    # a shift along y shows in the y marginal only
    m = marginal_pmf_rmse(x + torch.tensor([0.0, 0.5]) * sd, x)
    assert m[0] == 0 and m[1] > 0


def test_pmf_normalised_and_clipped():
    lo, hi = torch.zeros(2), torch.ones(2)
    x = torch.tensor([[0.5, 0.5], [5.0, -5.0], [0.01, 0.99]])
    p = pmf(x, lo, hi, bins=10)
    assert p.shape == (10, 10) and abs(float(p.sum()) - 1.0) < 1e-12
    assert p[9, 0] == pytest.approx(1 / 3)  # the far point is clipped into the corner cell
    assert p[0, 9] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="bins"):
        pmf(x, lo, hi, bins=0)
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        pmf_rmse(torch.zeros(5), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="dimensions"):
        pmf_rmse(torch.zeros(5, 3), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="NaN"):
        pmf_rmse(torch.full((5, 2), float("nan")), torch.zeros(5, 2))


def test_scale_ratios_and_outside_fraction():
    x = torch.randn(5000, 2)
    half = torch.tensor([1.0, 0.5], dtype=torch.float64)
    _close(std_ratio(x * half.float(), x), half)
    _close(iqr_ratio(x * half.float(), x), half)
    assert outside_fraction(x, x) == 0.0
    # one far outlier dominates the std ratio but not the IQR ratio
    y = x.clone()
    y[0] = 1e3
    assert float(std_ratio(y, x)[0]) > 5 and abs(float(iqr_ratio(y, x)[0]) - 1) < 0.01
    assert outside_fraction(y, x) == pytest.approx(1 / 5000)


def test_straightness_zero_for_lines_and_grows_with_curvature():
    ts = torch.linspace(1.0, 1e-3, 41)
    start, end = torch.randn(100, 2), torch.randn(100, 2)
    u = ((ts[0] - ts) / (ts[0] - ts[-1]))[:, None, None]
    line = start + u * (end - start)
    assert torch.allclose(straightness(line, ts), torch.zeros(2, dtype=torch.float64), atol=1e-10)
    # a bump on axis 0 only: straightness grows with its height, axis 1 stays 0
    bump = torch.sin(math.pi * u)
    values = []
    for h in (0.1, 0.5, 2.0):
        s = straightness(line + h * bump * torch.tensor([1.0, 0.0]), ts)
        assert s[1] < 1e-10
        values.append(float(s[0]))
    assert 0 < values[0] < values[1] < values[2]
    # analytic value: int (h pi cos(pi u) / (t0 - tn))^2 dt = (h pi)^2 / (2 (t0 - tn)), to O(step^2)
    assert values[1] == pytest.approx((0.5 * math.pi) ** 2 / (2 * float(ts[0] - ts[-1])), rel=0.01)
    # a constant-speed path is straight; the same path at varying speed is not
    warped = start + (u**2) * (end - start)
    assert float(straightness(warped, ts).min()) > 0
    # per-particle values average to the definition; the median ignores one wild path
    curved = line + 0.5 * bump
    per = straightness(curved, ts, reduce="none")
    assert per.shape == (100, 2)
    _close(per.mean(0), straightness(curved, ts))
    wild = curved.clone()
    wild[:, 0] += 100 * bump[:, 0]
    assert straightness(wild, ts)[0] > 10 * straightness(curved, ts)[0]
    _close(straightness(wild, ts, reduce="median"), straightness(curved, ts, reduce="median"), rtol=0.05, atol=0)
    with pytest.raises(ValueError, match="reduce"):
        straightness(line, ts, reduce="max")
    with pytest.raises(ValueError, match="monotone"):
        straightness(line, torch.cat([ts[:20], ts[19:40]]))
    with pytest.raises(ValueError, match="shape"):
        straightness(line[0], ts)


# ------------------------------------------------------------------- priors
def test_data_prior_is_per_axis_and_reduces_to_transition():
    sde = make_sde("cld", (2,), beta=5.0)

    def prior_cov(sde, kind, data_var=1.0):
        return sde.prior_cov(kind, data_var)
    trans = prior_cov(sde, "transition")
    zero = prior_cov(sde, "data", [0.0, 0.0])
    # data variance 0 and v_0 ~ N(0, 1): the v part is the marginal velocity of the transition prior
    _close(zero[..., 0, 0], trans[..., 0, 0])
    big = prior_cov(sde, "data", [1.0, 64.0])
    # the surviving data part e^{FT} diag(var, 0) e^{F^T T} is added per axis
    phi_xx = sde.transition(torch.tensor(1.0)).mean_coef[..., 0, 0]
    _close(big[..., 0, 0] - zero[..., 0, 0], phi_xx**2 * torch.tensor([1.0, 64.0], dtype=torch.float64))
    assert big[1, 0, 0] > 5 * big[0, 0, 0]  # the stretched axis gets a wider prior
    for kind in ("transition", "data", "stationary"):
        c = prior_cov(sde, kind, [1.0, 64.0])
        assert c.shape == (2, 2, 2) and (torch.linalg.eigvalsh(c) > 0).all()
    net = ResidualMLP((2,), 2, hidden=8, num_blocks=1)
    with pytest.raises(ValueError, match="needs the per-axis"):
        generate(ScoreModel(sde, net), 4, steps=2, prior="data")
    with pytest.raises(ValueError, match="unknown prior"):
        generate(ScoreModel(sde, net), 4, steps=2, prior="gauss")


# ----------------------------------------------------------------- training
@pytest.mark.parametrize("sde, prior", [("vsuld", "transition"), ("cld", "data"), ("vsdm", "transition")])
def test_few_steps_reduce_loss_and_update_A(sde, prior):
    cfg = ToyConfig(dataset="spiral-8y", sde=sde, beta=5.0, prior=prior, steps=60, lr=3e-3, A_lr=3e-2, seed=0, **TINY)
    summary = train(cfg)
    assert summary["eval_loss_end"] < 0.8 * summary["eval_loss_start"]
    assert summary["ema_eval_loss_end"] < summary["eval_loss_start"]
    stages = {k for row in summary["history"] for k in row if k.startswith("loss_")}
    if sde.startswith("vs"):
        assert "loss_forward" in stages  # A was trained by stochastic approximation
        assert summary["A_v_end"] != summary["A_v_start"]
    else:
        assert stages == {"loss_dsm"} and summary["A_v_end"] == []
    model = summary["ema_model"]
    out = generate(model, 64, steps=5, prior=prior, data_var=summary["data_var"], seed=1, record=True)
    assert out.x.shape == (64, 2) and out.traj.shape == (6, 64, 2) and out.nfe == 10
    _close(out.traj[-1], out.x)
    again = generate(model, 64, steps=5, prior=prior, data_var=summary["data_var"], seed=1)
    assert torch.equal(out.x, again.x) and again.traj is None


def test_training_is_reproducible():
    cfg = ToyConfig(dataset="checkerboard-6x", sde="vscld", steps=12, **TINY)
    a, b = train(cfg), train(cfg)
    assert a["eval_loss_end"] == b["eval_loss_end"] and a["A_v_end"] == b["A_v_end"]


def test_config_errors():
    with pytest.raises(ValueError, match="unknown toy dataset"):
        train(ToyConfig(dataset="swissroll"))
    with pytest.raises(ValueError, match="unknown sde"):
        train(ToyConfig(sde="ddpm"))
    with pytest.raises(ValueError, match="batch_size"):
        train(ToyConfig(batch_size=0))
    with pytest.raises(ValueError, match="unknown config fields"):
        ToyConfig.from_dict({"dataset": "spiral", "width": 3})
    with pytest.raises(ValueError, match="damping_ratio"):
        train(ToyConfig(sde="cld", damping_ratio=0.7, **TINY))


def test_toy_config_is_a_fit_config_with_toy_defaults():
    from dataclasses import fields

    from vsmd_ts.toys.train import _fit_config
    from vsmd_ts.training import FitConfig

    cfg = ToyConfig(steps=1000)
    assert isinstance(cfg, FitConfig)
    fit = _fit_config(cfg, [1.0, 64.0])
    shared = {f.name for f in fields(FitConfig)} - {"lr_warmup", "data_var"}
    assert all(getattr(fit, k) == getattr(cfg, k) for k in shared)
    assert (fit.lr_warmup, fit.data_var, fit.prior, fit.ema_warmup) == (20, [1.0, 64.0], "transition", False)
    assert _fit_config(ToyConfig(steps=1000, lr_schedule="constant"), [1.0, 1.0]).lr_warmup == 0
    assert _fit_config(ToyConfig(steps=1000, lr_warmup=7), [1.0, 1.0]).lr_warmup == 7


# ------------------------------------------------------------ CLI and plots
def test_cli_train_sample_and_plots(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--dataset", "spiral-8y", "--sde", "vsuld", "--beta", "5", "--damping-ratio", "0.7", "--out", str(out),
            "--steps", "24", "--hidden", "16", "--num-blocks", "1", "--batch-size", "64", "--num-trajectories", "16",
            "--trajectory-steps", "5", "--log-every", "4", "--no-progress"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert (out / "last.ckpt").is_file() and (out / "metrics.csv").is_file() and (out / "summary.json").is_file()
    ckpt = load_checkpoint(out)
    assert ckpt["vsmd"]["toy_config"]["damping_ratio"] == 0.7 and ckpt["vsmd"]["toy_config"]["sde"] == "vsuld"
    assert ckpt["global_step"] == 24
    model, cfg, data_var = model_from_checkpoint(out / "last.ckpt")
    assert cfg.dataset == "spiral-8y" and data_var[1] > 30 * data_var[0]
    assert model.sde.learns_A and model.sde.damping_ratio == 0.7 and not model.training
    raw, _, _ = model_from_checkpoint(out, ema=False)
    assert [round(float(a), 6) for a in raw.sde.A_v.detach()] == report["A_v_end"]  # the raw weights are the trained ones

    samples, png, paths = tmp_path / "s.pt", tmp_path / "s.png", tmp_path / "p.png"
    args = ["sample", "--checkpoint", str(out), "--num", "200", "--steps", "4", "--metrics", "--out", str(samples),
            "--plot", str(png), "--trajectories", str(paths), "--no-progress"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["nfe"] == 8 and report["pmf_rmse"] > 0 and len(report["straightness"]) == 2
    saved = torch.load(samples, weights_only=True)
    assert saved["x"].shape == (200, 2) and saved["traj"].shape == (5, 200, 2)
    for f in (png, paths):
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main(["sample", "--checkpoint", str(tmp_path / "missing"), "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_plot_functions(tmp_path):
    true = sample_dataset("checkerboard-6x", 500, seed=0)
    plot_samples(true + 0.1, true, tmp_path / "a.png", title="t")
    plot_sample_grid([("a", true), ("b", true * 0.5)], true, tmp_path / "b.png", ncols=2)
    traj = torch.randn(6, 10, 2).cumsum(0)
    plot_trajectories(traj, torch.linspace(1, 0.001, 6), tmp_path / "c.png", num=3, true=true)
    for name in "abc":
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="traj"):
        plot_trajectories(traj, torch.linspace(1, 0.001, 5), tmp_path / "d.png")


def test_benchmark_script_quick(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "toys.py"
    spec = importlib.util.spec_from_file_location("bench_toys", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--quick", "--out", str(tmp_path / "runs"), "--datasets", "spiral-8y", "--configs", "VSULD-5",
            "--seeds", "0", "--figures", str(tmp_path / "fig"), "--table", str(tmp_path / "t.md")]
    assert bench.main(args) == 0
    record = json.loads((tmp_path / "runs" / "spiral-8y" / "VSULD-5" / "seed0.json").read_text())
    assert len(record["straightness"]) == 2 and record["curve"] and len(record["A_v_end"]) == 2
    table = (tmp_path / "t.md").read_text()
    assert "| VSULD-5 |" in table and "noise floor" in table
    assert (tmp_path / "fig" / "spiral-8y_samples.png").is_file()
    # a second call resumes from the records instead of training again
    assert bench.main(args + ["--summary-only"]) == 0
