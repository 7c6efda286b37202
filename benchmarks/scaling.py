"""Cost against the number of series (issue 13): transition, training step, sampling.

Two parts, both written to ``--out`` (JSON) and printed as markdown tables:

``transition``
    Our fused float64 transition (``MomentumSDE.transition_entries``; the
    assembled ``transition`` blocks; the previous generic block algebra) against
    the authors' matrix-fraction route *without* their 1001-point quadrature:
    one float32 4 x 4 ``torch.linalg.matrix_exp`` per draw and coordinate,
    ``Sigma = C (e^M)^T`` and a float32 ``torch.linalg.cholesky`` (method.md
    1.3). Same batch, same process, interleaved repeats, medians.
``shapes``
    Synthetic data of the shapes of exchange, solar, electricity, traffic and
    wiki (``target_dim`` 8 ... 2000, their frequencies and horizons): seconds
    per training step (forward + backward + optimiser, ``batch_size`` windows
    of ``context + prediction`` steps), peak RSS growth, and sampling seconds
    per forecast window (``num_samples`` paths, default NFE). A log-log fit
    of cost against ``target_dim`` gives the slope.

The machine these numbers were taken on is shared; every timing is a median
of repeats measured under contention. Compare ratios within one run.

``lstm``
    The electricity-shaped LSTM's forward + backward with oneDNN's and ATen's
    CPU kernels, interleaved (``module.RNN_ONEDNN`` chooses).

``ddp``
    A tiny CPU DDP training run (gloo) on exchange-shaped synthetic data that
    records each rank's batches; ``--compare-to`` checks them against a
    one-process run's (the ranks must split its batches row by row).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/scaling.py transition --threads 1
    OMP_NUM_THREADS=1 python benchmarks/scaling.py shapes --threads 1 --shapes exchange,solar,electricity,traffic,wiki
    python benchmarks/scaling.py plot
    OMP_NUM_THREADS=2 python benchmarks/scaling.py lstm --threads 1,2
    OMP_NUM_THREADS=1 python benchmarks/scaling.py ddp --processes 1 --ddp-dir runs/ddp_ref
    OMP_NUM_THREADS=1 python benchmarks/scaling.py ddp --ddp-dir runs/ddp_check --compare-to runs/ddp_ref
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vsmd_ts.diffusion import MomentumSDE  # noqa: E402
from vsmd_ts.diffusion.linalg import cholesky_block, congruence, expm_block, lyapunov_integral  # noqa: E402


def matrix_exp_baseline(sde: MomentumSDE, t: torch.Tensor):
    """The authors' route without quadrature: float32 4 x 4 matrix exponentials.

    ``M = F B`` per draw and coordinate, ``exp([[M, gamma B e_vv], [0, -M^T]])``;
    its upper-left block is ``e^M`` and ``Sigma = C (e^M)^T`` with ``C`` the
    upper-right block (``Sigma_0 = 0``), then a float32 Cholesky.
    Returns ``(e^M, Sigma, L)`` of shape ``(N, D, 2, 2)``.
    """
    F = sde.drift_matrix().to(torch.float32)  # (D, 2, 2)
    B = sde.beta_int(t).to(torch.float32).reshape(-1, 1, 1, 1)
    N, D = t.shape[0], F.shape[0]
    big = torch.zeros(N, D, 4, 4)
    M = F * B
    big[..., :2, :2] = M
    big[..., 1, 3] = (sde.gamma * B).reshape(N, 1)
    big[..., 2:, 2:] = -M.transpose(-1, -2)
    E = torch.linalg.matrix_exp(big)
    Phi = E[..., :2, :2]
    Sigma = E[..., :2, 2:] @ Phi.transpose(-1, -2)
    L = torch.linalg.cholesky(Sigma)
    return Phi, Sigma, L


def generic_blocks(sde: MomentumSDE, t: torch.Tensor):
    """The previous transition: generic float64 block algebra (expm + Lyapunov series)."""
    B = sde._time_view(sde.beta_int(t.double()))
    F = sde.drift_matrix()
    Phi = expm_block(F * B)
    cov = lyapunov_integral(F, sde.noise_block("cpu"), B, sde.stationary_cov())
    S0 = sde._initial_cov("cpu")
    if bool((S0 != 0).any()):
        cov = cov + congruence(Phi, S0)
    return Phi, cov, cholesky_block(cov)


def _median_times(fns: dict, repeats: int, cpu: dict = None) -> dict:
    """Interleaved repeats (fairer under changing load); median wall seconds per function.

    ``cpu``, when given, receives the median CPU seconds of this process
    (``time.process_time``), which a busy machine inflates far less than wall time.
    """
    times = {name: [] for name in fns}
    cpu_times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - t0)
            cpu_times[name].append(time.process_time() - c0)
    if cpu is not None:
        cpu.update({name: statistics.median(v) for name, v in cpu_times.items()})
    return {name: statistics.median(v) for name, v in times.items()}


def bench_transition(N: int, D: int, repeats: int, initial_velocity: str, seed: int = 0, compile: bool = False) -> dict:
    """Seconds per transition of an ``N x D`` batch for each route; also the max error vs float64."""
    g = torch.Generator().manual_seed(seed)
    sde = MomentumSDE((D,), beta=10.0, damping_ratio=0.7, initial_velocity=initial_velocity)
    sde.A.set_(0.3 * (torch.rand(D, generator=g) - 0.5))
    t = sde.eps + (sde.T - sde.eps) * torch.rand(N, generator=g, dtype=torch.float64)
    t32 = t.float()
    with torch.no_grad():
        fns = {
            "fused_entries": lambda: sde.transition_entries(t),
            "fused_blocks": lambda: sde.transition(t),
            "generic_blocks": lambda: generic_blocks(sde, t),
            "matrix_exp_f32": lambda: matrix_exp_baseline(sde, t32),
        }
        compile_seconds = None
        if compile:  # torch.compile of the fused moments (graph breaks at the small-time row selection)
            from vsmd_ts.diffusion import linalg

            compiled = torch.compile(linalg.oscillator_moments, dynamic=False)
            k = sde._omega2_k(True)[1]
            B = sde.beta_int(t).reshape(-1, 1)
            fns["fused_entries_compiled"] = lambda: compiled(B, k, sde.damping_ratio, sde.gamma, sde.initial_cov_last)
            t0 = time.perf_counter()
            fns["fused_entries_compiled"]()
            compile_seconds = time.perf_counter() - t0
            got = fns["fused_entries_compiled"]()[2][-1]
            want = sde.transition_entries(t)[2][-1]
            compile_err = float(((got - want).abs() / want).max())
        for fn in fns.values():  # warm-up
            fn()
        med = _median_times(fns, repeats)
        ref = sde.transition(t)
        old = generic_blocks(sde, t)
        base = matrix_exp_baseline(sde, t32)
    out = {"N": N, "D": D, "initial_velocity": initial_velocity, "repeats": repeats, "seconds": med}
    out["speedup_vs_matrix_exp"] = {k: med["matrix_exp_f32"] / v for k, v in med.items()}
    if compile:
        out["compile_seconds"] = compile_seconds
        out["max_rel_err_L_vv_compiled_vs_eager"] = compile_err
    out["max_rel_err_L_vv_vs_generic"] = float(((ref.chol[..., 1, 1] - old[2][..., 1, 1]).abs() / old[2][..., 1, 1]).max())
    if initial_velocity == "sample":  # the baseline conditions on v_0 (Sigma_0 = 0)
        out["max_rel_err_L_vv_matrix_exp_f32"] = float(
            ((base[2][..., 1, 1].double() - ref.chol[..., 1, 1]).abs() / ref.chol[..., 1, 1]).max()
        )
    return out


# ---------------------------------------------------------------- shapes
# (freq, prediction_length, target_dim) of the GluonTS "_nips" versions used by TimeGrad
SHAPES = {
    "exchange": ("B", 30, 8),
    "solar": ("h", 24, 137),
    "electricity": ("h", 24, 370),
    "traffic": ("h", 24, 963),
    "wiki": ("D", 30, 2000),
}


def _estimator_config() -> dict:
    """The electricity configuration of ``benchmarks/configs.py`` for every shape, so that
    only ``target_dim`` (and the shape's frequency/horizon) changes along the curve."""
    from benchmarks.configs import config_for

    cfg = dict(config_for("electricity_nips", "vsuld")["estimator"])
    cfg.pop("num_batches_per_epoch", None)
    return cfg


def _synthetic_batch(model, batch_size: int, seed: int = 0) -> dict:
    """One training batch of positive seasonal series with the model's input shapes."""
    g = torch.Generator().manual_seed(seed)
    P, H, D, F = model._past_length, model.prediction_length, model.target_dim, model.num_time_features
    t = torch.arange(P + H, dtype=torch.float32)
    level = torch.exp(3 + torch.randn(batch_size, 1, D, generator=g))
    phase = 6.3 * torch.rand(batch_size, 1, D, generator=g)
    season = 1 + 0.5 * torch.sin(2 * math.pi * t[None, :, None] / 24 + phase)
    values = level * season * (1 + 0.1 * torch.randn(batch_size, P + H, D, generator=g))
    feat = torch.randn(batch_size, P + H, F, generator=g)
    return {
        "past_target": values[:, :P].clamp_min(0),
        "past_observed_values": torch.ones(batch_size, P, D),
        "past_time_feat": feat[:, :P],
        "future_time_feat": feat[:, P:],
        "future_target": values[:, P:].clamp_min(0),
        "future_observed_values": torch.ones(batch_size, H, D),
    }


def _peak_rss_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def bench_shape(shape: str, threads: int, repeats: int, sample_repeats: int, num_samples: int, sample_steps: int = 2) -> dict:
    """Training-step, A-refresh and sampling cost of one shape (run in a fresh process for the memory peak)."""
    from vsmd_ts import VSMDEstimator
    from vsmd_ts.diffusion.nets import ScoreModel

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rss_start = _peak_rss_gib()
    freq, H, D = SHAPES[shape]
    cfg = _estimator_config()
    est = VSMDEstimator(freq=freq, prediction_length=H, target_dim=D, num_parallel_samples=num_samples, progress=False, **cfg)
    module = est.create_lightning_module()
    model, objective = module.model, module.objective
    batch = _synthetic_batch(model, est.batch_size)
    opt = module.configure_optimizers()
    out = {"shape": shape, "target_dim": D, "freq": freq, "prediction_length": H, "threads": threads,
           "batch_size": est.batch_size, "context_length": est.context_length, "lags": est.lags_seq,
           "rnn_input_size": model.rnn.input_size, "parameters": sum(p.numel() for p in module.parameters())}

    def training_inputs():
        inputs = {k: batch[k] for k in module.inputs}  # the past and future inputs the model reads
        return model.training_inputs(**inputs, future_target=batch["future_target"],
                                     future_observed_values=batch["future_observed_values"])

    def train_step():
        opt.zero_grad(set_to_none=True)
        x0, cond, mask = training_inputs()
        loss, stage = objective(0, 1000, x0, cond, mask)  # step 0: a score (DSM) step
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 10.0)
        opt.step()
        return x0, cond

    x0, cond = train_step()  # warm-up
    out["rows_per_step"] = x0.shape[0]
    cpu = {}
    timings = _median_times({"train_step": train_step}, repeats, cpu)
    with torch.no_grad():
        t = model.sde.eps + (model.sde.T - model.sde.eps) * torch.rand(x0.shape[0])
        x0d = x0.detach()
        parts = {
            "perturb (transition + a_t)": lambda: model.sde.perturb(x0d, t),
            "rnn_encode (forward only)": training_inputs,
        }
        timings.update(_median_times(parts, repeats))
        t0 = time.perf_counter()
        n = min(objective.num_trajectories, x0.shape[0])
        objective.updater.refresh(ScoreModel(model.sde, model.denoiser), model.sde, n, cond[:n].detach(), None, x0.device)
        timings["A_refresh (once per A phase)"] = time.perf_counter() - t0
        module.eval()
        # every forecast step costs the same (one RNN step + one sampler run of num_samples paths),
        # so time the first `sample_steps` steps and scale to the horizon
        steps = min(sample_steps, H)
        window = {k: v[:1] for k, v in batch.items() if not k.startswith("future_")}
        window["future_time_feat"] = batch["future_time_feat"][:1, :steps]
        model.prediction_length = steps
        sample = lambda: model(**window)  # noqa: E731
        sample_cpu = {}
        timings["sample_window"] = _median_times({"s": sample}, sample_repeats, sample_cpu)["s"] * H / steps
        cpu["sample_window"] = sample_cpu["s"] * H / steps
        model.prediction_length = H
        out["sample_steps_timed"] = steps
    out["seconds"] = timings
    out["cpu_seconds"] = cpu
    out["nfe_per_step"] = model.nfe_per_step
    out["num_samples"] = num_samples
    out["peak_rss_gib"] = _peak_rss_gib()
    out["rss_after_imports_gib"] = rss_start
    return out


# ---------------------------------------------------------------- DDP check
def ddp_check(out_dir: str, processes: int = 2, epochs: int = 2, batches: int = 10, compare_to: str = None) -> None:
    """Tiny exchange-shaped DDP run on CPU (gloo): trains, and records each rank's batches.

    Lightning's launcher re-runs this script once per extra rank; every rank
    writes its training batches (``past_target``) to ``out_dir``. With
    ``compare_to`` (the folder of a ``processes=1`` run) rank 0 checks that
    the ranks' batches, interleaved row by row, are the single process's.
    """
    import lightning.pytorch as pl

    from vsmd_ts import VSMDEstimator
    from vsmd_ts.timeseries.data import synthetic_like

    class Batches(pl.Callback):
        def __init__(self):
            self.seen = []

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.seen.append(batch["past_target"].clone())

        def on_train_end(self, trainer, module):
            torch.save(self.seen, Path(out_dir) / f"rank{trainer.global_rank}.pt")
            losses = {k: float(v) for k, v in trainer.callback_metrics.items()}
            (Path(out_dir) / f"rank{trainer.global_rank}.json").write_text(json.dumps(
                {"rank": trainer.global_rank, "world_size": trainer.world_size,
                 "batch_rows": [len(b) for b in self.seen], "metrics": losses}))

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    data = synthetic_like("exchange_rate_nips", seed=0, train_length=400)
    est = VSMDEstimator(
        freq=data.freq, prediction_length=data.prediction_length, target_dim=data.target_dim, hidden_size=16,
        num_layers=1, denoiser_hidden=32, batch_size=16, num_batches_per_epoch=batches,
        sampler_steps=4, num_parallel_samples=8, A_training=dict(num_trajectories=16, trajectory_steps=5), seed=0,
        progress=False,
        trainer_kwargs=dict(max_epochs=epochs, accelerator="cpu", devices=processes, enable_progress_bar=False,
                            callbacks=[Batches()],
                            **({"strategy": "ddp_find_unused_parameters_true"} if processes > 1 else {})),
    )
    est.model_kwargs["denoiser_blocks"] = 1  # the network layer's option: a small, fast denoiser
    predictor = est.train(data.train)
    forecast = next(iter(predictor.predict(data.test)))
    report = {"forecast_shape": list(forecast.samples.shape),
              "finite": bool(torch.isfinite(torch.as_tensor(forecast.samples)).all())}
    if compare_to and os.environ.get("LOCAL_RANK", "0") == "0":
        ranks = [torch.load(Path(out_dir) / f"rank{r}.pt") for r in range(processes)]
        single = torch.load(Path(compare_to) / "rank0.pt")
        joined = []
        for shares in zip(*ranks):
            full = torch.empty(sum(len(s) for s in shares), *shares[0].shape[1:], dtype=shares[0].dtype)
            for r, share in enumerate(shares):
                full[r::processes] = share
            joined.append(full)
        report["batches_equal_single_process"] = len(joined) == len(single) and all(
            torch.equal(a, b) for a, b in zip(joined, single))
        report["rows_per_rank"] = sorted({len(b) for shares in ranks for b in shares})
    print(json.dumps(report))


def lstm_kernels(threads: int, repeats: int = 7, width: int = 2595, steps: int = 96, batch: int = 32) -> dict:
    """Median seconds of an electricity-shaped LSTM (2 x 128) forward + backward with oneDNN's
    kernels and with ATen's, interleaved in one process (``module.RNN_ONEDNN`` picks between them)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(width, 128, num_layers=2, batch_first=True)
    x = torch.randn(batch, steps, width)
    seconds = {"oneDNN": [], "ATen": []}
    enabled = torch.backends.mkldnn.enabled
    try:
        for rep in range(repeats + 1):  # the first round warms up
            for name, flag in (("oneDNN", True), ("ATen", False)):
                torch.backends.mkldnn.enabled = flag
                t0 = time.perf_counter()
                lstm(x)[0].sum().backward()
                if rep:
                    seconds[name].append(time.perf_counter() - t0)
                lstm.zero_grad()
    finally:
        torch.backends.mkldnn.enabled = enabled
    return {"threads": threads, **{k: round(statistics.median(v), 4) for k, v in seconds.items()}}


# ---------------------------------------------------------------- reporting
def fit_slope(dims, values) -> float:
    """Least-squares slope of ``log(value)`` against ``log(target_dim)``."""
    import numpy as np

    return float(np.polyfit(np.log(dims), np.log(values), 1)[0])


def shapes_table(rows: list) -> str:
    lines = ["| shape | D | threads | rows/step | RNN input | train step s (CPU s) | perturb s | RNN encode s | A refresh s "
             "| sample s/window (CPU s) | peak RSS GiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["threads"], r["target_dim"])):
        s, c = r["seconds"], r.get("cpu_seconds", {})
        cpu_step = f" ({c['train_step']:.2f})" if "train_step" in c else ""
        cpu_sample = f" ({c['sample_window']:.1f})" if "sample_window" in c else ""
        lines.append(
            f"| {r['shape']} | {r['target_dim']} | {r['threads']} | {r['rows_per_step']} | {r['rnn_input_size']} | "
            f"{s['train_step']:.2f}{cpu_step} | "
            f"{s['perturb (transition + a_t)']:.3f} | {s['rnn_encode (forward only)']:.3f} | "
            f"{s['A_refresh (once per A phase)']:.2f} | {s['sample_window']:.1f}{cpu_sample} | {r['peak_rss_gib']:.2f} |"
        )
    for threads in sorted({r["threads"] for r in rows}):
        sub = sorted((r for r in rows if r["threads"] == threads), key=lambda r: r["target_dim"])
        if len(sub) >= 2:
            dims = [r["target_dim"] for r in sub]
            for label, key in (("wall", "seconds"), ("CPU", "cpu_seconds")):
                if all(key in r for r in sub):
                    lines.append("")
                    lines.append(
                        f"{threads} thread(s), {label} seconds: log-log slope against D: train step "
                        f"{fit_slope(dims, [r[key]['train_step'] for r in sub]):.2f}, sampling "
                        f"{fit_slope(dims, [r[key]['sample_window'] for r in sub]):.2f}"
                    )
            lines.append("")
            lines.append(f"peak RSS slope {fit_slope(dims, [r['peak_rss_gib'] for r in sub]):.2f}")
    return "\n".join(lines)


def transition_table(rows: list) -> str:
    lines = ["| N x D | v_0 | fused entries s | fused blocks s | generic blocks s (before) | matrix_exp f32 s | speed-up entries / blocks / generic |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        s, x = r["seconds"], r["speedup_vs_matrix_exp"]
        lines.append(
            f"| {r['N']} x {r['D']}, {r.get('threads', '?')} thr | {r['initial_velocity']} | {s['fused_entries']:.3f} | {s['fused_blocks']:.3f} | "
            f"{s['generic_blocks']:.3f} | {s['matrix_exp_f32']:.3f} | "
            f"{x['fused_entries']:.1f}x / {x['fused_blocks']:.1f}x / {x['generic_blocks']:.1f}x |"
        )
        if "fused_entries_compiled" in s:
            lines.append(
                f"| (threads {r.get('threads')}) torch.compile of the fused entries: {s['fused_entries_compiled']:.3f} s "
                f"({x['fused_entries_compiled']:.1f}x), compile {r['compile_seconds']:.0f} s, "
                f"max rel. diff of L_vv vs eager {r['max_rel_err_L_vv_compiled_vs_eager']:.1e} | | | | | |"
            )
    return "\n".join(lines)


def plot(rows: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for threads, marker in ((1, "o"), (2, "s")):
        sub = sorted((r for r in rows if r["threads"] == threads), key=lambda r: r["target_dim"])
        if len(sub) < 2:
            continue
        dims = [r["target_dim"] for r in sub]
        for key, label in (("train_step", "train step"), ("sample_window", "sampling / window")):
            for kind, style in (("cpu_seconds", "-"), ("seconds", ":")):
                if not all(kind in r for r in sub):
                    continue
                vals = [r[kind][key] for r in sub]
                name = "CPU" if kind == "cpu_seconds" else "wall, contended"
                ax.loglog(dims, vals, style, marker=marker,
                          label=f"{label} {name}, {threads} thr (slope {fit_slope(dims, vals):.2f})")
    ax.set_xlabel("target_dim D")
    ax.set_ylabel("seconds (median of repeats)")
    ax.set_title("VSMD cost against the number of series")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _run_child(args: list) -> dict:
    import subprocess

    env = dict(os.environ, OMP_NUM_THREADS=str(args[args.index("--threads") + 1]))
    res = subprocess.run([sys.executable, __file__, "_one", *args], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["transition", "shapes", "plot", "ddp", "lstm", "_one"])
    p.add_argument("--out", default="benchmarks/results_scaling.json")
    p.add_argument("--threads", default="1", help="comma-separated thread counts")
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--shape", help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sample-repeats", type=int, default=2)
    p.add_argument("--num-samples", type=int, default=100)
    p.add_argument("--sample-steps", type=int, default=2, help="forecast steps timed (scaled to the horizon)")
    p.add_argument("--sizes", default="3840x370", help="transition batches NxD, comma-separated")
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the fused moments")
    p.add_argument("--only", default="sample,marginal", help="initial-velocity conventions for the transition part")
    p.add_argument("--ddp-dir", default="runs/ddp_check")
    p.add_argument("--processes", type=int, default=2, help="ddp: training processes")
    p.add_argument("--compare-to", help="ddp: folder of a --processes 1 run whose batches the ranks must split")
    p.add_argument("--figure", default="benchmarks/figures/scaling/cost_vs_target_dim.png")
    args = p.parse_args(argv)
    if args.what == "_one":
        print(json.dumps(bench_shape(args.shape, int(args.threads), args.repeats, args.sample_repeats, args.num_samples,
                                     args.sample_steps)))
        return
    if args.what == "ddp":
        ddp_check(args.ddp_dir, args.processes, compare_to=args.compare_to)
        return
    if args.what == "lstm":
        for threads in map(int, args.threads.split(",")):
            print(json.dumps(lstm_kernels(threads, args.repeats)))
        return
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    if args.what == "transition":
        rows = []
        for threads in map(int, args.threads.split(",")):
            torch.set_num_threads(threads)
            for size in args.sizes.split(","):
                N, D = map(int, size.split("x"))
                for iv in args.only.split(","):
                    rows.append({**bench_transition(N, D, args.repeats, iv, compile=args.compile), "threads": threads})
                    print(transition_table(rows[-1:]), flush=True)
        results["transition_compiled" if args.compile else "transition"] = rows
        print(transition_table(rows))
    elif args.what == "shapes":
        rows = [r for r in results.get("shapes", []) if not (r["shape"] in args.shapes.split(",")
                                                               and str(r["threads"]) in args.threads.split(","))]
        for threads in args.threads.split(","):
            for shape in args.shapes.split(","):
                row = _run_child(["--shape", shape, "--threads", threads, "--repeats", str(args.repeats),
                                  "--sample-repeats", str(args.sample_repeats), "--num-samples", str(args.num_samples),
                                  "--sample-steps", str(args.sample_steps)])
                rows.append(row)
                results["shapes"] = rows
                out.write_text(json.dumps(results, indent=1))  # keep what is done if the run is cut short
                print(shapes_table([row]), flush=True)
        print(shapes_table(rows))
    if args.what == "plot":
        print(transition_table(results.get("transition", []) + results.get("transition_compiled", [])))
        print()
        print(shapes_table(results.get("shapes", [])))
    if args.what in ("shapes", "plot") and results.get("shapes"):
        plot(results["shapes"], Path(args.figure))
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
