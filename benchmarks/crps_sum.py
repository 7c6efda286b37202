"""CRPS-Sum benchmark of the VSMD forecasters in the standard multivariate protocol.

    python benchmarks/crps_sum.py --dataset exchange_rate_nips --sde vsuld vscld cld vsdm vp \\
        --seeds 0 1 2 --out runs/exchange
    python benchmarks/crps_sum.py --quick --out runs/quick            # exchange, a few minutes
    python benchmarks/crps_sum.py --split validation --val-windows 25 ...   # model selection, never on test
    python benchmarks/crps_sum.py --split validation --val-end 4571 ...     # a fold in an earlier period
    python benchmarks/crps_sum.py --sde rw --seeds 0 1 2 3 4 --out runs/rw  # naive random walk, no training
    python benchmarks/crps_sum.py --synthetic-like electricity_nips --out runs/elec-speed

Protocol (TimeGrad / GluonTS ``*_nips``): ``MultivariateGrouper`` on train and test (5 rolling
windows for exchange, 7 for the others), 100 sample paths, ``MultivariateEvaluator`` over the
quantiles 0.05 ... 0.95 with a sum aggregate. Reported: CRPS (``mean_wQuantileLoss``), CRPS-Sum
(``m_sum_mean_wQuantileLoss``), ND-Sum, NRMSE-Sum, energy score, 50%/90% interval coverage,
training and sampling wall and CPU time, NFE per forecast step and peak memory (RSS); also the
summed series' coverage, a PIT histogram and the exact sample CRPS-Sum (see ``metrics.py``).
The naive baselines ``rw`` and ``snaive`` run through the same windows and scorer; their
covariance window is chosen on the ``--val-windows`` validation windows of the training range.

Each (sde, seed) runs in its own process (clean peak-memory numbers, ``--jobs`` in parallel)
and writes ``<out>/runs/<name>.json``; the parent writes ``<out>/summary.md`` (mean ± std over
seeds) and fan charts under ``<out>/figures/``; ``--save-samples`` also keeps every forecast's sample
paths under ``<out>/samples/``. Hyper-parameters live in ``benchmarks/configs.py``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# the script's checkout: used without an install, and over an editable install of another checkout (whose finder
# runs after sys.path); a regular install in site-packages comes first
sys.path.append(str(HERE.parent))
from configs import config_for  # noqa: E402

from vsmd_ts.diffusion import SDE_NAMES  # noqa: E402  (torch only: quick to import)

DEFAULT_DATA = HERE.parent.parent / "shared" / "data"
SDES = list(SDE_NAMES)
# naive forecasters (vsmd_ts.timeseries.baselines), run as "models" next to the SDEs: no training, their one
# hyper-parameter (the covariance window) chosen on the validation windows of the training range
BASELINES = ["rw", "snaive"]
WINDOW_CANDIDATES = {"rw": [20, 50, 100, 200, 500], "snaive": [168, 336, 672, 1344]}
# the window is a property of the data, not of the path seed: choose it once, with many paths and a fixed seed
SELECTION = {"seed": 0, "num_samples": 500}
DATASETS = ["exchange_rate_nips", "electricity_nips", "solar_nips", "etth1"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="exchange_rate_nips", choices=DATASETS)
    p.add_argument("--csv", default=None,
                   help="a wide CSV instead of --dataset (time column + one column per series): 60 / 20 / 20 %% of its "
                        "rows train / validate / test, a window every --prediction-length rows; needs --prediction-length")
    p.add_argument("--prediction-length", type=int, default=None, help="horizon of a --csv dataset")
    p.add_argument("--freq", default=None, help="frequency of a --csv dataset (default: inferred)")
    p.add_argument("--sde", nargs="+", default=SDES, choices=SDES + BASELINES,
                   help="models to run: SDEs and/or the naive baselines 'rw' (Gaussian random walk) and "
                        "'snaive' (seasonal naive; season and window chosen on validation)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA) if DEFAULT_DATA.exists() else None,
                   help="folder with <dataset>/<dataset>.tar.gz (default ../shared/data when present); "
                        "otherwise GluonTS downloads the data")
    p.add_argument("--no-download", action="store_true", help="never fall back to GluonTS's download")
    p.add_argument("--split", choices=["test", "validation"], default="test",
                   help="'validation': train on the training range minus its last windows and evaluate on those")
    p.add_argument("--val-windows", type=int, default=25,
                   help="number of validation windows: non-overlapping windows of prediction_length ending at the end "
                        "of the training range (used by --split validation and by the baselines' window choice)")
    p.add_argument("--val-end", type=int, default=None,
                   help="with --split validation: the validation windows end at this step of the training range "
                        "(default: its end) and nothing after it is used; earlier ends give backtest folds in "
                        "other periods")
    p.add_argument("--eval-samplers", nargs="+", default=None, metavar="SAMPLER:STEPS[:RHO[:PATHS]]",
                   help="evaluate each trained model with these samplers, optionally on a time grid of spacing RHO "
                        "and with PATHS sample paths per window (default: the config's; overrides --eval-steps)")
    p.add_argument("--eval-steps", nargs="+", type=int, default=None,
                   help="sampler step counts to evaluate each trained model with (default: the config's)")
    p.add_argument("--eval-naive-shares", nargs="+", type=float, default=None, metavar="SHARE",
                   help="evaluate each trained model (with each sampler) at these naive_share values too: the share "
                        "acts at sampling only, so one training gives every row (default: the resolved share)")
    p.add_argument("--quick", action="store_true", help="short smoke run (results marked quick)")
    p.add_argument("--synthetic-like", choices=DATASETS, default=None,
                   help="random data of this dataset's shape: speed and memory only, never accuracy")
    p.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                   help="override estimator arguments or max_epochs / num_samples / precision, e.g. --set beta=8 "
                        "A_training.lr=0.01 max_epochs=10 (the SDE's beta, damping_ratio, gamma and A_max go into "
                        "sde_kwargs, A_training.FIELD into A_training)")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (one process each)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (per process with --processes)")
    p.add_argument("--processes", type=int, default=1,
                   help="data-parallel training processes per run (Lightning DDP on CPU, gloo); the ranks split every "
                        "batch, so the optimisation is the single-process one with a share of the work per process")
    p.add_argument("--max-train-minutes", type=float, default=30.0, help="wall-clock cap on training (safety)")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--save-samples", action="store_true",
                   help="also write every evaluation's sample paths to <out>/samples/<run>_<sampler>-<steps>.npz "
                        "(samples: windows x paths x H x D, truth: windows x H x D, last: windows x D)")
    p.add_argument("--single", nargs=2, metavar=("SDE", "SEED"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.csv is not None:
        if args.prediction_length is None:
            p.error("--csv needs --prediction-length")
        args.dataset = Path(args.csv).stem.lower()
    return args


def load_data(args, seed: int = 0):
    """The dataset of ``args``: ``--csv``, ``--synthetic-like`` or ``--dataset``."""
    from vsmd_ts.timeseries.data import load_benchmark, load_csv_dataset, synthetic_like

    if args.synthetic_like:
        return synthetic_like(args.synthetic_like, seed=seed)
    if args.csv:
        return load_csv_dataset(args.csv, args.prediction_length, freq=args.freq)
    return load_benchmark(args.dataset, args.data_dir, not args.no_download)


def apply_set(cfg: dict, items) -> dict:
    """``cfg`` with the ``--set KEY=VALUE`` overrides: ``max_epochs``, ``num_samples`` and ``precision`` (Lightning's,
    e.g. bf16-mixed) of the run; any other key an estimator argument, the SDE's parameters (``beta``,
    ``damping_ratio``, ``gamma``, ``A_max``) into its ``sde_kwargs`` and ``A_training.FIELD`` into its
    ``A_training`` (:func:`~vsmd_ts.timeseries.checks.estimator_kwargs_from_text`)."""
    from vsmd_ts.timeseries.checks import estimator_kwargs_from_text

    estimator, run_keys = cfg["estimator"], ("max_epochs", "num_samples", "precision")
    for item in items:
        key, _, text = item.partition("=")
        if key in run_keys:
            cfg[key] = text if key == "precision" else int(text)
    for key, value in estimator_kwargs_from_text(i for i in items if i.partition("=")[0] not in run_keys).items():
        estimator[key] = {**(estimator.get(key) or {}), **value} if key in ("sde_kwargs", "A_training") else value
    return cfg


def run_name(args, sde: str, seed: int) -> str:
    dataset = args.synthetic_like or args.dataset
    tag = "synthetic" if args.synthetic_like else args.split
    if args.split == "validation" and args.val_end is not None and not args.synthetic_like:
        tag += f"-end{args.val_end}"
    return f"{dataset}_{tag}_{sde}_seed{seed}" + ("_quick" if args.quick else "")


def machine() -> dict:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def load_split(args, seed: int):
    """``(data, train, test)`` for ``args.split``: validation = ``--val-windows`` windows carved from the training range."""
    synthetic = args.synthetic_like is not None
    data = load_data(args, seed)
    train, test = data.train, data.test
    if args.split == "validation" and not synthetic:
        train, test = validation_split(data, args.val_windows, args.val_end)
    if synthetic:
        test = [list(test)[-1]]  # one window is enough to time sampling
    return data, train, test


def validation_split(data, val_windows: int, val_end=None):
    """``(fit, validation)``: a CSV benchmark's own validation windows (trained on its training range), else
    ``val_windows`` windows carved from the end of the training range (or of its first ``val_end`` steps)."""
    from vsmd_ts.timeseries.data import holdout_windows

    if data.validation is not None and val_end is None:
        return data.train, data.validation
    return holdout_windows(data.train, data.prediction_length, val_windows, data.freq, val_end)


def record_header(name: str, dataset: str, split: str, sde: str, seed: int, quick: bool = False) -> dict:
    """The fields every benchmark record starts with (also the peer scripts' records)."""
    return {
        "name": name, "dataset": dataset, "split": split, "quick": quick, "sde": sde, "seed": seed,
        "machine": machine(), "date": datetime.date.today().isoformat(),
        "command": os.environ.get("VSMD_BENCH_COMMAND", " ".join(["python"] + [shlex.quote(a) for a in sys.argv])),
    }


def base_record(args, sde: str, seed: int, dataset: str, synthetic: bool) -> dict:
    record = record_header(run_name(args, sde, seed), dataset, "synthetic" if synthetic else args.split, sde, seed,
                           args.quick)
    record["val_windows"] = args.val_windows if args.split == "validation" else None
    record["val_end"] = args.val_end if args.split == "validation" else None
    return record


def run_one(args, sde: str, seed: int) -> dict:
    """Train and evaluate one (sde, seed); runs in its own process."""
    import torch
    from gluonts.evaluation import make_evaluation_predictions

    from vsmd_ts import VSMDEstimator
    from vsmd_ts.timeseries.metrics import evaluate_forecasts
    from vsmd_ts.timeseries.plots import plot_fan_chart

    warnings.simplefilter("ignore", FutureWarning)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    if sde in BASELINES:
        return run_baseline(args, sde, seed)
    out = Path(args.out)
    synthetic = args.synthetic_like is not None
    dataset = args.synthetic_like or args.dataset
    data, train, test = load_split(args, seed)

    cfg = apply_set(config_for("csv" if args.csv else dataset, sde, args.quick), args.set)
    if synthetic and not any(s.startswith("max_epochs=") for s in args.set):
        cfg["max_epochs"] = 1
    trainer_kwargs = {
        "max_time": datetime.timedelta(minutes=args.max_train_minutes),
        "enable_progress_bar": args.progress,
        **{key: cfg[key] for key in ("max_epochs", "precision") if key in cfg},
    }
    if args.processes > 1:
        trainer_kwargs.update(accelerator="cpu", devices=args.processes, strategy="ddp_find_unused_parameters_true")
    estimator = VSMDEstimator(
        freq=data.freq, prediction_length=data.prediction_length, target_dim=data.target_dim, sde=sde, seed=seed,
        progress=args.progress, trainer_kwargs=trainer_kwargs, **cfg["estimator"],
    )
    t0, c0 = time.perf_counter(), time.process_time()
    out_train = estimator.train_model(train)
    train_time, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    if out_train.trainer.global_rank != 0:
        return None  # Lightning re-ran this script for the extra rank: rank 0 evaluates and writes the record
    epochs_done = out_train.trainer.current_epoch
    predictor = out_train.predictor
    net = predictor.prediction_net
    model = net.model
    A_all = torch.cat([m.sde.control_trace().detach().flatten() for m in net.members]) if model.sde.learns_A else None

    record = base_record(args, sde, seed, dataset, synthetic)
    resolved = {**{k: v for kwargs in estimator.resolved_kwargs() for k, v in kwargs.items()}, "max_epochs": estimator.trainer_kwargs["max_epochs"],
                "precision": out_train.trainer.precision,  # "auto" resolved
                "time_grid_rho": model.time_grid_rho,
                "batch_size": estimator.batch_size, "num_batches_per_epoch": estimator.num_batches_per_epoch}
    record.update({
        "config": cfg,
        "resolved_config": resolved,
        "epochs_completed": epochs_done,
        "train_time_s": train_time,
        "train_cpu_s": train_cpu,  # of rank 0's process
        "processes": args.processes,
        "train_s_per_epoch": train_time / max(epochs_done, 1),
        "A_mean": float(A_all.mean()) if A_all is not None else None,
        "A_min_max": [float(A_all.min()), float(A_all.max())] if A_all is not None else None,
        "evaluations": [],
    })
    rho = resolved["time_grid_rho"]
    evals = [(resolved["sampler"], steps, rho, None) for steps in args.eval_steps or [resolved["sampler_steps"]]]
    if args.eval_samplers:
        evals = [parse_eval_sampler(item, rho) for item in args.eval_samplers]
    shares = args.eval_naive_shares or [net.naive_share]
    evals = [(*e, share) for e in evals for share in shares]
    for i, (sampler, steps, rho, paths, share) in enumerate(evals):
        net.set_sampler(sampler, steps, rho)
        net.naive_share = share
        paths = paths or cfg["num_samples"]
        torch.manual_seed(seed)
        t0, c0 = time.perf_counter(), time.process_time()
        forecast_it, ts_it = make_evaluation_predictions(test, predictor, num_samples=paths)
        forecasts, tss = list(forecast_it), list(ts_it)
        sample_time, sample_cpu = time.perf_counter() - t0, time.process_time() - c0
        ev = {"sampler": model.sampler_name, "sampler_steps": steps, "time_grid_rho": rho, "nfe_per_step": model.nfe_per_step,
              "sample_time_s": sample_time, "sample_cpu_s": sample_cpu, "num_samples": paths, "naive_share": share,
              "windows": len(forecasts)}
        if synthetic:
            ev["metrics"] = None  # random data: no accuracy
        else:
            ev["metrics"] = evaluate_forecasts(forecasts, tss)
            if args.save_samples:
                tag = f"_share{share:g}" if args.eval_naive_shares else ""
                save_samples(out, f"{record['name']}_{model.sampler_name}-{steps}{tag}", forecasts, tss)
            if i == 0 and seed == args.seeds[0]:
                plot_fan_chart(forecasts[-1], tss[-1], out / "figures" / f"{record['name']}.png", dims=(0, 1, 2, 3),
                               title=f"{sde} on {dataset} ({args.split}), seed {seed}, {ev['nfe_per_step']} NFE/step")
        record["evaluations"].append(ev)
    record["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        record["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return record


def baseline_predictor(name: str, data, setting: tuple, num_samples: int, seed: int):
    """``setting``: ``(window,)`` for ``rw``, ``(season, window)`` for ``snaive``."""
    from vsmd_ts.timeseries.baselines import RandomWalkPredictor, SeasonalNaivePredictor

    if name == "rw":
        return RandomWalkPredictor(data.prediction_length, window=setting[-1], num_samples=num_samples, seed=seed)
    return SeasonalNaivePredictor(data.prediction_length, season_length=setting[0], window=setting[-1],
                                  num_samples=num_samples, seed=seed)


def baseline_settings(name: str, freq: str) -> list:
    """Candidate settings of a naive baseline: ``(window,)`` or ``(season, window)`` tuples."""
    if name == "rw":
        return [(w,) for w in WINDOW_CANDIDATES["rw"]]
    from vsmd_ts.timeseries.features import is_sub_daily, season_length

    # the season is chosen on validation too: the data's main cycle, and for sub-daily data also the week
    day = season_length(freq)
    seasons = [day, 7 * day] if is_sub_daily(freq) and day > 1 else [day]
    return [(s, w) for s in seasons for w in WINDOW_CANDIDATES["snaive"]]


def run_baseline(args, name: str, seed: int) -> dict:
    """Score a naive baseline: its covariance window (and season) chosen on validation windows.

    The validation windows are the CSV benchmark's own or ``--val-windows`` windows of the training range.
    The choice minimises the exact sample CRPS-Sum (``crps_sum_exact``: fast, and it covers the tails the
    19-quantile version leaves out) on validation windows only (never the test windows), with ``SELECTION``
    paths and seed, so every seed gets the same window; ``--set window=W`` (and ``season=S``) skips it.
    ``seed`` seeds the test path draws. Its "training" time is the choice's.
    """
    from gluonts.evaluation import make_evaluation_predictions

    from vsmd_ts.timeseries.metrics import crps_sum_exact, evaluate_forecasts
    from vsmd_ts.timeseries.plots import plot_fan_chart

    synthetic = args.synthetic_like is not None
    dataset = args.synthetic_like or args.dataset
    data, _, test = load_split(args, seed)
    settings = dict(kv.partition("=")[::2] for kv in args.set)
    num_samples = int(settings.get("num_samples", 50 if args.quick else 100))
    t0, c0 = time.perf_counter(), time.process_time()
    val_scores, val_count = {}, None
    if "window" in settings or synthetic:  # random data: timing only, no choice to make
        window = int(settings.get("window", WINDOW_CANDIDATES[name][1]))
        setting = (window,) if name == "rw" else (int(settings.get("season", 24)), window)
    else:
        _, val = validation_split(data, args.val_windows, args.val_end if args.split == "validation" else None)
        n_sel = 100 if args.quick else SELECTION["num_samples"]
        H = data.prediction_length
        for cand in baseline_settings(name, data.freq):
            f_it, t_it = make_evaluation_predictions(val, baseline_predictor(name, data, cand, n_sel, SELECTION["seed"]),
                                                     n_sel)
            forecasts, tss = list(f_it), list(t_it)
            val_scores[cand] = crps_sum_exact([f.samples for f in forecasts], [ts.to_numpy()[-H:] for ts in tss])
        setting = min(val_scores, key=val_scores.get)
        val_count = len(forecasts)
        val_scores = {"/".join(map(str, k)): v for k, v in val_scores.items()}
    window = setting[-1]
    choose_time, choose_cpu = time.perf_counter() - t0, time.process_time() - c0
    predictor = baseline_predictor(name, data, setting, num_samples, seed)
    record = base_record(args, name, seed, dataset, synthetic)
    record.update({
        "config": {"window": window, "season": setting[0] if name == "snaive" else None, "num_samples": num_samples,
                   "window_val_crps_sum": val_scores,
                   "window_val_windows": val_count, "window_criterion": "CRPS-Sum-exact",
                   "window_selection": SELECTION if val_scores else None},
        "epochs_completed": 0, "train_time_s": choose_time, "train_cpu_s": choose_cpu, "train_s_per_epoch": None,
        "A_mean": None, "A_min_max": None,
    })
    t0, c0 = time.perf_counter(), time.process_time()
    forecasts, tss = map(list, make_evaluation_predictions(test, predictor, num_samples))
    ev = {"sampler": "none", "sampler_steps": 0, "nfe_per_step": 0, "sample_time_s": time.perf_counter() - t0,
          "sample_cpu_s": time.process_time() - c0, "num_samples": num_samples, "windows": len(forecasts)}
    ev["metrics"] = None if synthetic else evaluate_forecasts(forecasts, tss)
    if args.save_samples and not synthetic:
        save_samples(Path(args.out), record["name"], forecasts, tss)
    if not synthetic and seed == args.seeds[0]:
        plot_fan_chart(forecasts[-1], tss[-1], Path(args.out) / "figures" / f"{record['name']}.png", dims=(0, 1, 2, 3),
                       title=f"{name} ({'season %d, ' % setting[0] if name == 'snaive' else ''}window {window}) on "
                             f"{dataset} ({args.split}), seed {seed}")
    record["evaluations"] = [ev]
    record["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return record


def save_samples(out: Path, name: str, forecasts, tss) -> Path:
    """Write the forecasts' sample paths, the truth and the last observed value before each window to an ``.npz``."""
    H = forecasts[0].samples.shape[1]
    frames = [ts.to_numpy() for ts in tss]
    path = out / "samples" / f"{name}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, samples=np.stack([f.samples for f in forecasts]), truth=np.stack([a[-H:] for a in frames]),
                        last=np.stack([a[-H - 1] for a in frames]))
    return path


def parse_eval_sampler(item: str, rho: float = 1.0) -> tuple:
    """``"SAMPLER:STEPS[:RHO[:PATHS]]"`` -> ``(sampler, steps, rho, paths)``.

    ``rho`` defaults to the config's; ``paths`` (sample paths per window) to the benchmark's ``num_samples``
    (``None``). More paths than the protocol's 100 shrink the Monte Carlo noise of a score, e.g. to compare
    two samplers of the same model within 2 %.
    """
    parts = item.split(":")
    if len(parts) not in (2, 3, 4):
        raise ValueError(f"--eval-samplers item {item!r} is not SAMPLER:STEPS, SAMPLER:STEPS:RHO or SAMPLER:STEPS:RHO:PATHS")
    return (parts[0], int(parts[1]), float(parts[2]) if len(parts) >= 3 else rho,
            int(parts[3]) if len(parts) == 4 else None)


def _fmt(values, digits=4):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def summarize(out: Path, records) -> str:
    """Markdown table: one row per (sde, NFE), mean ± std over seeds."""
    lines = []
    first = records[0]
    title = f"{first['dataset']} ({first['split']}{', QUICK' if first['quick'] else ''})"
    lines.append(f"### {title}\n")
    lines.append(f"date {first['date']}; machine {first['machine']['processor']}, {first['machine']['cpu_count']} cores, "
                 f"torch {first['machine']['torch']}; command: `{first['command']}`\n")
    if first["split"] == "synthetic":
        lines.append("| sde | seeds | epochs | s / epoch | sampling s / window | NFE / step | peak RSS MB |")
        lines.append("|---|---|---|---|---|---|---|")
    else:
        lines.append("| sde | sampler | NFE / step | seeds | CRPS-Sum | CRPS | ND-Sum | NRMSE-Sum | energy | cov 50% | cov 90% | train min | "
                     "sampling s | peak RSS MB | CRPS-Sum exact | cov 50% sum | cov 90% sum | train CPU min | sampling CPU s | "
                     "ProbTS CRPS | ProbTS NMAE |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    by_key = {}
    for r in records:
        for ev in r["evaluations"]:
            sampler = ev["sampler"] + (f" rho {ev['time_grid_rho']:g}" if ev.get("time_grid_rho", 1.0) != 1.0 else "")
            if ev.get("num_samples") != r.get("config", {}).get("num_samples", ev.get("num_samples")):
                sampler += f", {ev['num_samples']} paths"  # not the run's protocol number of paths
            if len({e.get("naive_share") for e in r["evaluations"]}) > 1:
                sampler += f", naive share {ev['naive_share']:g}"
            by_key.setdefault((r["sde"], sampler, ev["nfe_per_step"]), []).append((r, ev))
    order = {s: i for i, s in enumerate(SDES)}
    for (sde, sampler, nfe), rows in sorted(by_key.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1], kv[0][2])):
        seeds = ",".join(str(r["seed"]) for r, _ in rows)
        if first["split"] == "synthetic":
            lines.append(f"| {sde} | {seeds} | {rows[0][0]['epochs_completed']} | {_fmt([r['train_s_per_epoch'] for r, _ in rows], 1)} | "
                         f"{_fmt([e['sample_time_s'] / e['windows'] for _, e in rows], 1)} | {nfe} | {_fmt([r['peak_rss_mb'] for r, _ in rows], 0)} |")
            continue
        m = lambda key: [e["metrics"].get(key) for _, e in rows]  # noqa: E731
        lines.append(
            f"| {sde} | {sampler} | {nfe} | {seeds} | {_fmt(m('CRPS-Sum'))} | {_fmt(m('CRPS'))} | {_fmt(m('ND-Sum'))} | {_fmt(m('NRMSE-Sum'))} | "
            f"{_fmt(m('energy_score'), 3)} | {_fmt(m('coverage_50'), 2)} | {_fmt(m('coverage_90'), 2)} | "
            f"{_fmt([r['train_time_s'] / 60 for r, _ in rows], 1)} | {_fmt([e['sample_time_s'] for _, e in rows], 0)} | "
            f"{_fmt([r['peak_rss_mb'] for r, _ in rows], 0)} | {_fmt(m('CRPS-Sum-exact'))} | {_fmt(m('coverage_50_sum'), 2)} | "
            f"{_fmt(m('coverage_90_sum'), 2)} | {_fmt([r.get('train_cpu_s', 0) / 60 for r, _ in rows], 1)} | "
            f"{_fmt([e.get('sample_cpu_s') for _, e in rows], 0)} | {_fmt(m('ProbTS-CRPS'))} | {_fmt(m('ProbTS-NMAE'))} |"
        )
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


def run_processes(command: list, jobs: list, log_path, parallel: int, env: dict) -> list:
    """Run ``command + ["--single", model, seed]`` for each ``(model, seed)`` of ``jobs``, ``parallel`` at a time, each
    in its own process (clean peak-memory and CPU-time numbers) writing its output to ``log_path(model, seed)``;
    returns the failed runs, described."""
    from tqdm.auto import tqdm

    running, failed = [], []
    bar = tqdm(total=len(jobs), desc="benchmark runs")
    queue = list(jobs)
    while queue or running:
        while queue and len(running) < parallel:
            model, seed = queue.pop(0)
            log = open(log_path(model, seed), "w")
            proc = subprocess.Popen(command + ["--single", model, str(seed)], stdout=log, stderr=subprocess.STDOUT,
                                    env=env)
            running.append((proc, model, seed, log))
        time.sleep(0.5)
        for item in list(running):
            proc, model, seed, log = item
            if proc.poll() is not None:
                running.remove(item)
                log.close()
                bar.update(1)
                if proc.returncode != 0:
                    failed.append(f"{model} seed {seed} (see {log.name})")
    bar.close()
    return failed


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    if args.single:
        sde, seed = args.single[0], int(args.single[1])
        record = run_one(args, sde, seed)
        if record is not None:
            (out / "runs" / f"{record['name']}.json").write_text(json.dumps(record, indent=1))
        return 0
    if not args.synthetic_like:
        # fail early, in the parent, with the loader's clear message
        from vsmd_ts.timeseries.data import DatasetNotFoundError

        try:
            load_data(args)
        except (DatasetNotFoundError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    jobs = [(sde, seed) for sde in args.sde for seed in args.seeds]
    env = dict(os.environ, VSMD_BENCH_COMMAND=" ".join(["python", "benchmarks/crps_sum.py"] + [shlex.quote(a) for a in (argv or sys.argv[1:])]),
               OMP_NUM_THREADS=str(args.threads))
    base = [sys.executable, str(Path(__file__).resolve())] + [a for a in (argv or sys.argv[1:])]
    failed = run_processes(base, jobs, lambda sde, seed: out / "runs" / f"{run_name(args, sde, seed)}.log", args.jobs, env)
    return report(out, {run_name(args, sde, seed) for sde, seed in jobs}, failed, summarize)


def report(out: Path, names, failed: list, summarize) -> int:
    """Print ``summarize(out, records)`` of the records ``<out>/runs/<name>.json`` of ``names`` and the failed runs;
    the exit status (1 if any run failed)."""
    records = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json")) if p.stem in names]
    if records:
        print(summarize(out, records))
    if failed:
        print("failed runs: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
