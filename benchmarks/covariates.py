"""Covariate benchmark: VSMD and DeepAR with and without the same covariates, scored like ``crps_sum.py``.

Each model is trained and scored with and without covariates on two univariate hourly targets (horizon 24), five
seeds, in ``crps_sum.py``'s protocol: one process per (model, seed), 100 paths per window, ``evaluate_forecasts``.

Examples
--------
The full benchmark (5 seeds, every model) and a smoke run::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/covariates.py --dataset synthetic --seeds 0 1 2 3 4 \\
        --out runs/cov_synthetic
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/covariates.py --dataset etth1-ot --data-dir ../shared/data \\
        --seeds 0 1 2 3 4 --out runs/cov_etth1_ot
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/covariates.py --dataset etth1-ot --data-dir ../shared/data \\
        --split validation --seeds 0 1 2 3 4 --out runs/cov_etth1_ot_val
    python benchmarks/covariates.py --dataset synthetic --quick --out runs/cov_quick    # smoke run, tiny budgets

Notes
-----
Data:

* ``synthetic``: 2,400 hourly steps drawn once from ``DATA_SEED``: ``y_t = 10 + 2 sin(2 pi t / 24) + 2 x_t +
  0.3 e_t`` with ``x_t`` a unit-variance AR(1) (coefficient 0.8) known over the horizon and ``e_t`` white noise.
  Training rows ``[0, 1440)``; 10 validation windows ending 1464 ... 1680 and 30 test windows ending
  1704 ... 2400, a window every 24 steps, each forecast from all rows before it. Only a model that reads ``x``
  can know the horizon beyond the cycle: without it the spread of ``y`` about the cycle is about 2, with it 0.3.
* ``etth1-ot``: ETTh1's oil temperature ``OT`` from ``load_benchmark("etth1", data_dir)`` (rows, training range
  ``[0, 8640)`` and its 120 validation / 120 test windows); the six loads HUFL, HULL, MUFL, MULL, LUFL, LULL are
  covariates known only up to the forecast start.

Covariates are standardised with their mean and standard deviation over the training rows. Models
(``--model``; a process per model and seed, ``--jobs`` at a time):

* ``vsmd``: ``VSMDEstimator``'s defaults with the covariates as they are known: ``feat_dynamic_real``
  (synthetic) or ``past_feat_dynamic_real`` (etth1-ot: read over the context, never over the horizon). As in
  every default run, a share of the paths (``naive_share``) comes from the naive forecast, which reads no
  covariates.
* ``deepar``: gluonts.torch's DeepAR with ``benchmarks/peers/deepar.py``'s configuration (GluonTS defaults,
  20 epochs x 50 batches of 32) and the covariates as ``feat_dynamic_real``. GluonTS 0.17's torch DeepAR has no
  past-only dynamic features, so on etth1-ot it gets the loads shifted by the horizon (at step ``t`` the value at
  ``t - 24``: known at the forecast start over the whole horizon), which sees nothing after the forecast start.
* ``vsmd-lagcov`` (etth1-ot only): VSMD with DeepAR's shifted loads as ``feat_dynamic_real``: the comparison
  with the same information.
* ``vsmd-nocov``, ``deepar-nocov``: the same models without covariates.

Every run forecasts 100 paths per window (``--quick``: 20 paths, the last 4 windows, tiny training budgets,
records marked quick), scored by ``evaluate_forecasts`` (CRPS, CRPS-Sum, ProbTS CRPS and NMAE, energy score,
coverage); training CPU seconds are measured in the run's process. Each (model, seed) writes
``<out>/runs/<dataset>_<split>_<model>_seed<seed>.json`` (``crps_sum.py``'s record: machine, date, command,
seed) and, for the first seed, a fan chart of the last window under ``<out>/figures/``; the parent writes
``<out>/summary.md``: mean ± std over seeds per model. Cost on a 2-core CPU, timed from one epoch: about 6
CPU-minutes per VSMD run (5 of them training) and 1.5 per DeepAR run on etth1-ot; 5 and under 1 on synthetic.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE / "peers")]
sys.path.append(str(HERE.parent))  # the checkout's vsmd_ts when it is not installed
from common import make_record, truth_frames  # noqa: E402
from crps_sum import DEFAULT_DATA, _fmt, report, run_processes  # noqa: E402

DATASETS = ["synthetic", "etth1-ot"]
MODELS = ["vsmd", "vsmd-nocov", "vsmd-lagcov", "deepar", "deepar-nocov"]
H = 24
DATA_SEED = 0
SYNTHETIC = {"train": 1440, "validation_windows": 10, "test_windows": 30}
LOADS = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL"]
NUM_SAMPLES = 100
QUICK = {"windows": 4, "num_samples": 20, "epochs": 1, "num_batches_per_epoch": 5, "sampler_steps": 5}


@dataclass
class CovariateData:
    """A univariate target with covariates: ``target`` ``(T,)``, ``covariates`` ``(k, T)`` standardised over the
    training rows ``[0, train_end)``; ``ends[split]``: the windows' ends (each forecasts its last ``H`` rows)."""

    name: str
    freq: str
    start: object  # pd.Period of row 0
    target: np.ndarray
    target_name: str
    covariates: np.ndarray
    covariate_names: List[str]
    known: bool  # covariates known over the horizon (else only up to the forecast start)
    train_end: int
    ends: Dict[str, List[int]]


def standardised(values: np.ndarray, train_end: int) -> np.ndarray:
    mean, std = values[:, :train_end].mean(1, keepdims=True), values[:, :train_end].std(1, keepdims=True)
    return ((values - mean) / np.maximum(std, 1e-8)).astype(np.float32)


def synthetic() -> CovariateData:
    """The synthetic data (module docstring), the same on every call."""
    import pandas as pd

    rng = np.random.default_rng(DATA_SEED)
    train, n_val, n_test = SYNTHETIC["train"], SYNTHETIC["validation_windows"], SYNTHETIC["test_windows"]
    T = train + H * (n_val + n_test)
    x = np.empty(T)
    x[0] = rng.standard_normal()
    for t in range(1, T):
        x[t] = 0.8 * x[t - 1] + 0.6 * rng.standard_normal()  # stationary variance 0.36 / (1 - 0.64) = 1
    t = np.arange(T)
    y = 10 + 2 * np.sin(2 * np.pi * t / 24) + 2 * x + 0.3 * rng.standard_normal(T)
    val_end = train + H * n_val
    return CovariateData(
        "synthetic", "h", pd.Period("2020-01-01 00:00", freq="h"), y.astype(np.float32), "y",
        standardised(x[None], train), ["x"], True, train,
        {"validation": list(range(train + H, val_end + 1, H)), "test": list(range(val_end + H, T + 1, H))})


def etth1_ot(data_dir) -> CovariateData:
    """ETTh1's ``OT`` with the six loads, on ``load_benchmark("etth1")``'s rows and windows."""
    from vsmd_ts.timeseries.data import load_benchmark

    data = load_benchmark("etth1", data_dir, download=False)
    windows = {"validation": list(data.validation), "test": list(data.test)}
    values = np.asarray(windows["test"][-1]["target"])  # the last test window holds every row
    train_end = np.asarray(list(data.train)[0]["target"]).shape[1]
    rows = [data.series_names.index(name) for name in LOADS + ["OT"]]
    return CovariateData(
        "etth1-ot", data.freq, windows["test"][0]["start"], values[rows[-1]], "OT",
        standardised(values[rows[:-1]], train_end), list(LOADS), False, train_end,
        {split: [np.asarray(e["target"]).shape[1] for e in entries] for split, entries in windows.items()})


def load_data(args) -> CovariateData:
    return synthetic() if args.dataset == "synthetic" else etth1_ot(args.data_dir)


def covariate_form(model: str, data: CovariateData) -> Optional[str]:
    """How ``model`` gets the covariates: ``None``, ``"known"`` (over the horizon), ``"past"`` (up to the forecast
    start) or ``"lag"`` (shifted by the horizon, as known-over-the-horizon features)."""
    if model.endswith("-nocov"):
        return None
    if model == "vsmd-lagcov" or (model == "deepar" and not data.known):
        return "lag"
    return "known" if data.known else "past"


def lagged(values: np.ndarray) -> np.ndarray:
    """``values`` shifted by the horizon: column ``t`` holds column ``t - H`` (the first ``H`` repeat column 0)."""
    return np.concatenate([np.repeat(values[:, :1], H, axis=1), values[:, :-H]], axis=1)


def covariate_fields(data: CovariateData, form: Optional[str], end: int, predict: bool) -> dict:
    """The covariate fields of an entry whose target is rows ``[0, end)``; at prediction, known-over-the-horizon
    features also cover the ``H`` rows to forecast."""
    if form is None:
        return {}
    if form == "past":
        return {"past_feat_dynamic_real": data.covariates[:, :end]}
    values = data.covariates if form == "known" else lagged(data.covariates)
    return {"feat_dynamic_real": values[:, :end + (H if predict else 0)]}


def datasets(data: CovariateData, form: Optional[str], ends: List[int], multivariate: bool):
    """``(train, windows)``: the training rows and one prediction entry per window end (its target stops ``H``
    rows before the end); targets ``(1, T)`` for VSMD (``multivariate``), ``(T,)`` for DeepAR."""
    from gluonts.dataset.common import ListDataset

    def entry(end, predict):
        target = data.target[:end]
        return {"start": data.start, "target": target[None] if multivariate else target,
                **covariate_fields(data, form, end, predict)}

    make = lambda entries: ListDataset(entries, freq=data.freq, one_dim_target=not multivariate)  # noqa: E731
    return make([entry(data.train_end, False)]), make([entry(end - H, True) for end in ends])


def num_covariates(data: CovariateData, form: Optional[str]) -> dict:
    if form is None:
        return {}
    return {"num_past_feat_dynamic_real" if form == "past" else "num_feat_dynamic_real": len(data.covariate_names)}


def run_vsmd(data, form, seed, quick, train, windows):
    """Train ``VSMDEstimator`` (its defaults) and forecast; ``(forecasts, times, config, extra, nfe_per_step)``."""
    import torch

    from vsmd_ts import VSMDEstimator

    estimator_kwargs = {"num_batches_per_epoch": QUICK["num_batches_per_epoch"],
                        "sampler_steps": QUICK["sampler_steps"]} if quick else {}
    trainer_kwargs = {"enable_progress_bar": False, **({"max_epochs": QUICK["epochs"]} if quick else {})}
    num_samples = QUICK["num_samples"] if quick else NUM_SAMPLES
    estimator = VSMDEstimator(freq=data.freq, prediction_length=H, target_dim=1, seed=seed, progress=False,
                              trainer_kwargs=trainer_kwargs, **estimator_kwargs, **num_covariates(data, form))
    t0, c0 = time.perf_counter(), time.process_time()
    out = estimator.train_model(train)
    times = {"train_time_s": time.perf_counter() - t0, "train_cpu_s": time.process_time() - c0}
    torch.manual_seed(seed)
    t0, c0 = time.perf_counter(), time.process_time()
    forecasts = list(out.predictor.predict(windows, num_samples=num_samples))
    times.update(sample_time_s=time.perf_counter() - t0, sample_cpu_s=time.process_time() - c0)
    model_kwargs, module_kwargs = estimator.resolved_kwargs()
    model = out.predictor.prediction_net.model
    config = {"estimator": estimator_kwargs, "trainer": trainer_kwargs, "num_samples": num_samples,
              "sampler": model.sampler_name}
    resolved = {**model_kwargs, **module_kwargs, "max_epochs": estimator.trainer_kwargs["max_epochs"],
                "precision": out.trainer.precision, "batch_size": estimator.batch_size,
                "num_batches_per_epoch": estimator.num_batches_per_epoch}
    extra = {"resolved_config": resolved, "epochs_completed": out.trainer.current_epoch}
    net = out.predictor.prediction_net
    if net.naive_share > 0:  # diagnosis: the same models without the pooled naive paths (which ignore covariates)
        net.naive_share = 0.0
        torch.manual_seed(seed)
        extra["forecasts_naive_share_0"] = list(out.predictor.predict(windows, num_samples=num_samples))
    return forecasts, times, config, extra, model.nfe_per_step


def run_deepar(data, form, seed, quick, train, windows):
    """Train DeepAR (``peers/deepar.py``'s configuration) and forecast; as :func:`run_vsmd`."""
    import lightning
    from gluonts.model.forecast import SampleForecast

    from deepar import CONFIG, make_estimator, train_seeded

    epochs = QUICK["epochs"] if quick else CONFIG["epochs"]
    batches = QUICK["num_batches_per_epoch"] if quick else CONFIG["num_batches_per_epoch"]
    num_samples = QUICK["num_samples"] if quick else NUM_SAMPLES
    with tempfile.TemporaryDirectory(prefix="deepar-") as workdir:  # its checkpoints, one folder per run
        estimator = make_estimator(data.freq, H, num_samples, epochs, workdir, num_batches_per_epoch=batches,
                                   **num_covariates(data, form))
        predictor, times = train_seeded(estimator, train, seed)
    lightning.seed_everything(seed, verbose=False)
    t0, c0 = time.perf_counter(), time.process_time()
    forecasts = [SampleForecast(f.samples[..., None], start_date=f.start_date)  # (S, H) -> (S, H, 1)
                 for f in predictor.predict(windows, num_samples=num_samples)]
    times.update(sample_time_s=time.perf_counter() - t0, sample_cpu_s=time.process_time() - c0)
    config = {**CONFIG, "series_embedding": False, "epochs": epochs, "num_batches_per_epoch": batches,
              "num_samples": num_samples}
    return forecasts, times, config, {}, None


def describe(data: CovariateData, form: Optional[str]) -> str:
    """The covariates a model reads, in words (the summary's column)."""
    names = ", ".join(data.covariate_names)
    return {None: "none", "known": f"feat_dynamic_real: {names}", "past": f"past_feat_dynamic_real: {names}",
            "lag": f"feat_dynamic_real: {names}, {H} steps earlier"}[form]


def run_name(dataset: str, split: str, model: str, seed: int, quick: bool) -> str:
    return f"{dataset}_{split}_{model}_seed{seed}" + ("_quick" if quick else "")  # common.make_record's name


def run_one(args, model: str, seed: int) -> dict:
    """Train and score one (model, seed); runs in its own process."""
    import torch

    from vsmd_ts.timeseries.plots import plot_fan_chart

    torch.set_num_threads(1)
    warnings.simplefilter("ignore", FutureWarning)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    data = load_data(args)
    form = covariate_form(model, data)
    ends = data.ends[args.split][-QUICK["windows"]:] if args.quick else data.ends[args.split]
    vsmd = model.startswith("vsmd")
    train, windows = datasets(data, form, ends, multivariate=vsmd)
    forecasts, times, config, extra, nfe = (run_vsmd if vsmd else run_deepar)(data, form, seed, args.quick, train,
                                                                              windows)
    tss = truth_frames([{"start": data.start, "target": data.target[None, :end]} for end in ends], H)
    config["covariates"] = describe(data, form)
    extra["covariates"] = {"form": form, "names": data.covariate_names if form else [], "known": data.known,
                           "standardised_over_rows": [0, data.train_end]}
    extra["windows_end"] = [ends[0], ends[-1]]
    if "forecasts_naive_share_0" in extra:
        from vsmd_ts.timeseries.metrics import evaluate_forecasts

        extra["metrics_naive_share_0"] = evaluate_forecasts(extra.pop("forecasts_naive_share_0"), tss)
    record = make_record(model, seed, forecasts, tss, config, times, dataset=data.name, split=args.split,
                         nfe_per_step=nfe, extra=extra, quick=args.quick)
    if seed == args.seeds[0]:
        plot_fan_chart(forecasts[-1], tss[-1], Path(args.out) / "figures" / f"{record['name']}.png", dims=(0,),
                       names=[data.target_name], title=f"{model} on {data.name} ({args.split}), seed {seed}")
    return record


def summarize(out: Path, records: List[dict]) -> str:
    """``<out>/summary.md``: one row per model, mean ± std over seeds."""
    first = records[0]
    lines = [f"### {first['dataset']} ({first['split']}{', QUICK' if first['quick'] else ''}), covariates\n",
             f"date {first['date']}; machine {first['machine']['processor']}, {first['machine']['cpu_count']} cores, "
             f"torch {first['machine']['torch']}; {first['evaluations'][0]['windows']} windows; "
             f"command: `{first['command']}`\n",
             "| model | covariates | seeds | CRPS | CRPS-Sum | ProbTS CRPS | ProbTS NMAE | energy | cov 90% | "
             "train CPU min | sampling CPU s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    by_model: Dict[str, List[dict]] = {}
    for r in records:
        by_model.setdefault(r["sde"], []).append(r)
    for model in sorted(by_model, key=lambda m: MODELS.index(m) if m in MODELS else len(MODELS)):
        rows = sorted(by_model[model], key=lambda r: r["seed"])
        m = lambda key: [r["evaluations"][0]["metrics"][key] for r in rows]  # noqa: E731
        lines.append(
            f"| {model} | {rows[0]['config']['covariates']} | {','.join(str(r['seed']) for r in rows)} | "
            f"{_fmt(m('CRPS'))} | {_fmt(m('CRPS-Sum'))} | {_fmt(m('ProbTS-CRPS'))} | {_fmt(m('ProbTS-NMAE'))} | "
            f"{_fmt(m('energy_score'), 3)} | {_fmt(m('coverage_90'), 2)} | "
            f"{_fmt([r['train_cpu_s'] / 60 for r in rows], 2)} | "
            f"{_fmt([r['evaluations'][0]['sample_cpu_s'] for r in rows], 1)} |")
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=DATASETS, default="synthetic")
    p.add_argument("--model", nargs="+", choices=MODELS, default=None,
                   help="models to run (default: all; vsmd-lagcov only on etth1-ot)")
    p.add_argument("--split", choices=["test", "validation"], default="test")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA) if DEFAULT_DATA.exists() else None,
                   help="folder with ett/ETTh1.csv (default ../shared/data when present)")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny budgets, the last windows only")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (one process each)")
    p.add_argument("--single", nargs=2, metavar=("MODEL", "SEED"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    known = args.dataset == "synthetic"
    if args.model is None:
        args.model = [m for m in MODELS if not (known and m == "vsmd-lagcov")]
    if known and "vsmd-lagcov" in args.model:
        p.error("vsmd-lagcov is for etth1-ot: on synthetic data DeepAR reads the known covariate as VSMD does")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    if args.single:
        record = run_one(args, args.single[0], int(args.single[1]))
        (out / "runs" / f"{record['name']}.json").write_text(json.dumps(record, indent=1))
        return 0
    from vsmd_ts.timeseries.data import DatasetNotFoundError

    try:  # fail early, in the parent, with the loader's message
        data = load_data(args)
    except (DatasetNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    jobs = [(model, seed) for model in args.model for seed in args.seeds]
    names = {model_seed: run_name(data.name, args.split, *model_seed, args.quick) for model_seed in jobs}
    env = dict(os.environ, OMP_NUM_THREADS="1",
               VSMD_BENCH_COMMAND=" ".join(["python", "benchmarks/covariates.py"] + [shlex.quote(a) for a in argv]))
    failed = run_processes([sys.executable, str(Path(__file__).resolve())] + argv, jobs,
                           lambda model, seed: out / "runs" / f"{names[model, seed]}.log", args.jobs, env)
    return report(out, set(names.values()), failed, summarize)


if __name__ == "__main__":
    sys.exit(main())
