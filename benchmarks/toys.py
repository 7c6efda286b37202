"""Benchmark of the 2-D toy experiments (the paper's section 5.1).

Trains CLD-5, ULD-5 (R = 0.7), VSCLD-5, VSULD-5 (R = 0.7), CLD-10, ULD-10 and
VSDM-5 (the number is beta) on the stretched datasets spiral-8y and
checkerboard-6x for several seeds, all with the same network, budget and
hyper-parameters, and reports mean +- std over seeds of

* PMF-RMSE: RMSE between 100 x 100 histograms of 10 000 generated points and
  100 000 true points (probability-flow ODE, Heun, 50 steps, EMA weights);
* straightness per axis of the same probability-flow paths: the mean over
  particles (the definition) and the median (robust to a few diverging paths);
* per-axis interquartile-range ratio generated / true (1 is right; below 1 the
  axis is squashed), the fraction of points outside the true box and the 1-D
  marginal RMSE;
* the PMF-RMSE curve during training (2 000 points, 25 Heun steps) for the
  convergence-speed comparison;
* A_v at the end of training (VS models) and CPU seconds.

Each run writes a JSON record (and a few samples for figures) under ``--out``
and is skipped when its record exists, so an interrupted benchmark resumes.

ASBM rows (opt-in with ``--configs``): ``ASBM-VP-4`` (ASBM's VP base, beta
0.1 -> 4) and ``ASBM-CLD-4`` (momentum base), each trained by stage 1 (at
most ``--asbm-stage1-steps``, the prior check may end it earlier) and stage 2
(``--steps`` steps, as every other row), against their memoryless twins
``VP-20`` (plain DSM, same network) and ``CLD-10``, and VSULD-5. Their main
metrics come from the SB's probability-flow ODE (Heun, both networks, prior
N(0, I)), so straightness compares ODE paths with ODE paths; the record adds
the stage-1 prior checks. ``VP-4`` and ``CLD-4`` (DSM on the same bases,
independent coupling) separate the effect of the coupling from that of the
base. ``--nfe 5 10 20 50`` adds, for every row, PMF-RMSE and IQR ratios at
those network calls per sample with ``--nfe-samplers`` (default the reverse
SDE, Euler-Maruyama: for ASBM the backward network alone; an ODE sampler
there runs the SB's PF-ODE at two calls per evaluation).

Usage::

    python benchmarks/toys.py --out runs/toys_bench --figures benchmarks/figures/toys \\
        --table runs/toys_bench/table.md          # full grid, ~45 min of one CPU core
    python benchmarks/toys.py --quick --out /tmp/toys_quick   # smoke test, seconds
    python benchmarks/toys.py --configs ASBM-VP-4 VP-20 ASBM-CLD-4 CLD-10 VSULD-5 --nfe 5 10 20 50 \\
        --seeds 0 1 2 3 4 --out runs/toys_asbm --table runs/toys_asbm/table.md   # ASBM against its twins
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vsmd_ts.toys import ToyConfig, evaluate, get_dataset, plot_sample_grid, plot_trajectories, pmf_rmse, train  # noqa: E402
from vsmd_ts.toys.metrics import iqr_ratio  # noqa: E402
from vsmd_ts.toys.sampling import asbm_sampling_model, generate, steps_for_nfe  # noqa: E402

# name -> (sde, beta, damping ratio, method)
CONFIGS = {
    "CLD-5": ("cld", 5.0, None, "vsmd"),
    "ULD-5": ("uld", 5.0, 0.7, "vsmd"),
    "VSCLD-5": ("vscld", 5.0, None, "vsmd"),
    "VSULD-5": ("vsuld", 5.0, 0.7, "vsmd"),
    "CLD-10": ("cld", 10.0, None, "vsmd"),
    "ULD-10": ("uld", 10.0, 0.7, "vsmd"),
    "VSDM-5": ("vsdm", 5.0, None, "vsmd"),
    # ASBM on its non-memoryless bases, their memoryless twins (plain DSM) and DSM on the same bases
    "ASBM-VP-4": ("vp", 4.0, None, "asbm"),
    "ASBM-CLD-4": ("cld", 4.0, None, "asbm"),
    "VP-20": ("vp", 20.0, None, "vsmd"),
    "VP-4": ("vp", 4.0, None, "vsmd"),
    "CLD-4": ("cld", 4.0, None, "vsmd"),
}
DEFAULT_CONFIGS = ("CLD-5", "ULD-5", "VSCLD-5", "VSULD-5", "CLD-10", "ULD-10", "VSDM-5")
# rows whose probability-flow paths --paths draws: two momentum SDEs, and each ASBM row beside its memoryless twin
PATH_CONFIGS = ("CLD-5", "VSULD-5", "ASBM-VP-4", "VP-20", "ASBM-CLD-4", "CLD-10")
DATASETS = ("spiral-8y", "checkerboard-6x")
TRUE_SEED = 2**20  # reference true samples, the same for every run


def _parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS))
    p.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS), choices=list(CONFIGS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=1500, help="training steps (same for every configuration)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--num-blocks", type=int, default=3)
    p.add_argument("--prior", default="transition", choices=("transition", "data", "stationary", "fixed"))
    p.add_argument("--num", type=int, default=10_000, help="generated points for the final metrics")
    p.add_argument("--num-true", type=int, default=100_000, help="true points of the reference histogram")
    p.add_argument("--sample-steps", type=int, default=50, help="Heun steps for the final metrics")
    p.add_argument("--curve-every", type=int, default=250, help="steps between PMF-RMSE evaluations during training")
    p.add_argument("--nfe", nargs="*", type=int, default=[], help="network calls per sample of the NFE sweep (none: no sweep)")
    p.add_argument("--nfe-samplers", nargs="+", default=["euler_maruyama"], help="samplers of the NFE sweep")
    p.add_argument("--asbm-stage1-steps", type=int, default=ToyConfig.asbm_stage1_steps,
                   help="step budget of ASBM's stage 1 (stage 2 runs --steps)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/toys_bench")
    p.add_argument("--figures", help="folder for sample-grid PNGs (seed 0)")
    p.add_argument("--paths", action="store_true", help="with --figures: also the paths of " + ", ".join(PATH_CONFIGS))
    p.add_argument("--table", help="write the markdown tables here too")
    p.add_argument("--summary-only", action="store_true", help="only rebuild the tables from existing records")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (overrides sizes)")
    p.add_argument("--progress", action="store_true")
    return p


def _record_path(out: Path, dataset: str, name: str, seed: int) -> Path:
    return out / dataset / name / f"seed{seed}.json"


def nfe_sweep(args, model, cfg, data_var, dataset: str, seed: int) -> list:
    """PMF-RMSE and IQR ratios at each of ``args.nfe`` network calls per sample, per sampler of ``args.nfe_samplers``."""
    true = get_dataset(dataset).sample(args.num_true, torch.Generator().manual_seed(TRUE_SEED))
    rows = []
    for sampler in args.nfe_samplers:
        m = asbm_sampling_model(model, sampler) if cfg.method == "asbm" else model
        for nfe in args.nfe:
            try:
                steps = steps_for_nfe(nfe, sampler, getattr(m, "networks_per_call", 1))
            except ValueError:
                continue  # this sampler cannot spend exactly nfe calls
            out = generate(m, args.num, steps, sampler, cfg.prior, data_var, seed)
            rows.append({"sampler": sampler, "nfe": out.nfe, "pmf_rmse": pmf_rmse(out.x, true),
                         "iqr_ratio": iqr_ratio(out.x, true).tolist()})
    return rows


def run_one(args, dataset: str, name: str, seed: int) -> dict:
    sde, beta, R, method = CONFIGS[name]
    cfg = ToyConfig(
        method=method, dataset=dataset, sde=sde, beta=beta, damping_ratio=R,
        prior=args.prior if method == "vsmd" else None,  # ASBM samples from its energy prior N(0, I)
        hidden=args.hidden, num_blocks=args.num_blocks, steps=args.steps, batch_size=args.batch_size, seed=seed,
        eval_every=args.curve_every, eval_num=args.eval_num, eval_steps=args.eval_steps,
        num_trajectories=args.num_trajectories, trajectory_steps=args.trajectory_steps,
        log_every=50, progress=args.progress, **(args.asbm if method == "asbm" else {}),
    )
    cpu0 = time.process_time()
    summary = train(cfg)
    model = summary["ema_model"]
    # ASBM: the SB's probability-flow ODE (both networks), the twins': their own
    pf_model = asbm_sampling_model(model, "heun") if method == "asbm" else model
    res = evaluate(pf_model, dataset, args.num, args.sample_steps, cfg.prior, summary["data_var"],
                   seed=seed, num_true=args.num_true, true_seed=TRUE_SEED, progress=args.progress)
    samples = res["samples"]
    extra = {}
    if method == "asbm":
        extra = {k: summary[k] for k in ("stage1_steps", "stage1_passed", "prior_checks")}
    if args.nfe:
        extra["nfe_sweep"] = nfe_sweep(args, model, cfg, summary["data_var"], dataset, seed)
    record = {
        "dataset": dataset, "config": name, "seed": seed,
        **{k: v for k, v in res.items() if k not in ("samples", "true")}, **extra,
        "curve": summary["eval_curve"],
        "A_v_end": summary["ema_A_v_end"], "eval_loss_start": summary["eval_loss_start"],
        "eval_loss_end": summary["ema_eval_loss_end"], "train_cpu_seconds": summary["train_cpu_seconds"],
        "cpu_seconds": round(time.process_time() - cpu0, 1), "train_config": cfg.to_dict(),
        "eval": {"num": args.num, "num_true": args.num_true, "sample_steps": args.sample_steps, "true_seed": TRUE_SEED},
    }
    path = _record_path(Path(args.out), dataset, name, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"x": samples.x[:3000], "traj": samples.traj[:, :16], "ts": samples.ts}, path.with_suffix(".pt"))
    path.write_text(json.dumps(record, indent=1))
    return record


def _floor(args, dataset: str) -> float:
    """PMF-RMSE of fresh true samples (same sizes): the noise floor of the metric."""
    ds = get_dataset(dataset)
    true = ds.sample(args.num_true, torch.Generator().manual_seed(TRUE_SEED))
    vals = [pmf_rmse(ds.sample(args.num, torch.Generator().manual_seed(10_000 + s)), true) for s in args.seeds]
    return sum(vals) / len(vals)


def _ms(values, scale=1.0, digits=2):
    v = [x * scale for x in values]
    if not v:
        return "-"
    m = sum(v) / len(v)
    if len(v) == 1:
        return f"{m:.{digits}f}"
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))  # sample std over seeds
    return f"{m:.{digits}f} ± {sd:.{digits}f}"


def tables(args, records) -> str:
    lines = []
    for dataset in args.datasets:
        stretched = get_dataset(dataset).stretched_axis
        ax = ["x1", "x2"]
        tag = [f"{a}{' (stretched)' if i == stretched else ''}" for i, a in enumerate(ax)]
        floor = _floor(args, dataset)
        lines += [
            f"### {dataset}",
            "",
            f"PMF-RMSE x 1e4 (noise floor, true vs true at the same sizes: {floor * 1e4:.2f}); "
            "straightness S per axis (mean over particles = the definition; median in brackets); "
            "IQR ratio generated/true per axis (1 is right); % of points outside the true box.",
            "",
            f"| model | PMF-RMSE | S {tag[0]} | S {tag[1]} | IQR ratio {ax[0]} | IQR ratio {ax[1]} | outside % | A_v (end) "
            "| CPU s / run |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name in args.configs:
            rs = records.get((dataset, name), [])
            if not rs:
                continue
            A = rs[0]["A_v_end"]
            A_txt = "-" if not A else ", ".join(_ms([r["A_v_end"][j] for r in rs], digits=3) for j in range(len(A)))
            S = [
                f"{_ms([r['straightness'][j] for r in rs])} ({_ms([r['straightness_median'][j] for r in rs])})"
                for j in range(2)
            ]
            lines.append(
                f"| {name} | {_ms([r['pmf_rmse'] for r in rs], 1e4)} | {S[0]} | {S[1]}"
                f" | {_ms([r['iqr_ratio'][0] for r in rs])} | {_ms([r['iqr_ratio'][1] for r in rs])}"
                f" | {_ms([r['outside'] for r in rs], 100)} | {A_txt} | {_ms([r['cpu_seconds'] for r in rs], digits=0)} |"
            )
        steps = sorted({c["step"] for rs in records.values() for r in rs for c in r["curve"] if r["dataset"] == dataset})
        if steps:
            lines += [
                "",
                f"Convergence: PMF-RMSE x 1e4 of the EMA model during training ({args.eval_num} points, "
                f"{args.eval_steps} Heun steps; noise floor at that size is higher).",
                "",
                "| model | " + " | ".join(f"step {s}" for s in steps) + " |",
                "|---|" + "---|" * len(steps),
            ]
            for name in args.configs:
                rs = records.get((dataset, name), [])
                if not rs:
                    continue
                cells = []
                for s in steps:
                    vals = [c["pmf_rmse"] for r in rs for c in r["curve"] if c["step"] == s]
                    cells.append(_ms(vals, 1e4))
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += _nfe_table(args, records, dataset) + _prior_check_table(args, records, dataset)
        lines.append("")
    return "\n".join(lines)


def _nfe_sweeps(args, records, dataset: str) -> dict:
    """``{(row, sampler): {nfe: [PMF-RMSE per seed]}}`` of the rows that have an NFE sweep, in ``--configs`` order."""
    cells = {}
    for name in args.configs:
        for r in records.get((dataset, name), []):
            for row in r.get("nfe_sweep", []):
                cells.setdefault((name, row["sampler"]), {}).setdefault(row["nfe"], []).append(row["pmf_rmse"])
    return cells


def _nfe_table(args, records, dataset: str) -> list:
    """PMF-RMSE x 1e4 per sampler and NFE (rows that have an NFE sweep)."""
    cells = _nfe_sweeps(args, records, dataset)
    if not cells:
        return []
    nfes = sorted({n for by_nfe in cells.values() for n in by_nfe})
    lines = ["", "PMF-RMSE x 1e4 against network calls per sample (NFE); euler_maruyama = reverse SDE "
             "(ASBM: backward network alone), an ODE sampler on ASBM = the SB's PF-ODE (2 networks per evaluation).", "",
             "| model | sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---|---|" + "---|" * len(nfes)]
    for (name, sampler), by_nfe in cells.items():
        lines.append(f"| {name} | {sampler} | " + " | ".join(_ms(by_nfe.get(n, []), 1e4) for n in nfes) + " |")
    return lines


def _prior_check_table(args, records, dataset: str) -> list:
    """ASBM's stage 1: steps, passes and the last prior check of the EMA control."""
    rows = [(name, records[(dataset, name)]) for name in args.configs
            if records.get((dataset, name)) and "prior_checks" in records[(dataset, name)][0]]
    if not rows:
        return []
    lines = ["", "ASBM stage 1: last prior check of the forward control (endpoints vs N(0, I); ASBM passes when the top "
             "eigenvalue is not above the prior draws' and the relative errors of mean and variance of the squared norm "
             "of the endpoints are both below 0.08; mean/cov err: largest absolute error).", "",
             "| model | stage-1 steps | passed | top eigenvalue | prior's | sq. norm mean rel. err | sq. norm var rel. err |"
             " mean err | cov err |", "|---|---|---|---|---|---|---|---|---|"]
    for name, rs in rows:
        last = [r["prior_checks"][-1] for r in rs if r["prior_checks"]]
        lines.append(
            f"| {name} | {_ms([r['stage1_steps'] for r in rs], digits=0)} | {sum(r['stage1_passed'] for r in rs)}/{len(rs)}"
            + "".join(f" | {_ms([c[k] for c in last])}" for k in ("top_eig", "prior_top_eig", "sq_norm_mean_rel_err",
                                                                 "sq_norm_var_rel_err", "mean_err", "cov_err")) + " |")
    return lines


def plot_nfe_curves(curves: dict, dataset: str, path: Path) -> None:
    """PMF-RMSE x 1e4 against NFE, mean and std over seeds, one line per (row, sampler) of :func:`_nfe_sweeps`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    one_sampler = len({sampler for _, sampler in curves}) == 1
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for (name, sampler), by_nfe in curves.items():
        nfes = sorted(by_nfe)
        mean = [statistics.mean(by_nfe[n]) * 1e4 for n in nfes]
        std = [statistics.stdev(by_nfe[n]) * 1e4 if len(by_nfe[n]) > 1 else 0.0 for n in nfes]
        ax.errorbar(nfes, mean, yerr=std, marker="o", capsize=3, ls="-" if name.startswith("ASBM") else "--",
                    label=name if one_sampler else f"{name}, {sampler}")
    ax.set_xscale("log")
    ticks = sorted({n for by_nfe in curves.values() for n in by_nfe})
    ax.set_xticks(ticks, [str(n) for n in ticks])
    ax.minorticks_off()
    ax.set_xlabel("network calls per sample (NFE)")
    ax.set_ylabel("PMF-RMSE x 1e4 (lower is better)")
    ax.set_title(f"{dataset}: PMF-RMSE against NFE (mean ± std over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def figures(args, folder: Path, records: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    seed = args.seeds[0]
    for dataset in args.datasets:
        true = get_dataset(dataset).sample(3000, torch.Generator().manual_seed(TRUE_SEED))
        panels, trajs = [], {}
        for name in args.configs:
            path = _record_path(Path(args.out), dataset, name, seed).with_suffix(".pt")
            if path.is_file():
                saved = torch.load(path, weights_only=True)
                panels.append((name, saved["x"]))
                trajs[name] = saved
        if not panels:
            continue
        plot_sample_grid(panels, true, folder / f"{dataset}_samples.png", ncols=4, max_points=1500, dpi=80,
                         title=f"{dataset}: PF-ODE samples (seed {seed}), prior {args.prior}")
        for name in PATH_CONFIGS if args.paths else ():
            if name in trajs:
                t = trajs[name]
                plot_trajectories(t["traj"], t["ts"], folder / f"{dataset}_{name}_paths.png", num=8, true=true,
                                  title=f"{name} on {dataset}: probability-flow paths")
        curves = _nfe_sweeps(args, records, dataset)
        if curves:
            plot_nfe_curves(curves, dataset, folder / f"{dataset}_pmf_vs_nfe.png")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    args.eval_num, args.eval_steps, args.num_trajectories, args.trajectory_steps = 2000, 25, 512, 100
    args.asbm = {"asbm_stage1_steps": args.asbm_stage1_steps}
    if args.quick:
        args.steps, args.hidden, args.num_blocks, args.batch_size = 20, 16, 1, 64
        args.num, args.num_true, args.sample_steps, args.curve_every = 300, 2000, 5, 10
        args.eval_num, args.eval_steps, args.num_trajectories, args.trajectory_steps = 200, 5, 16, 5
        args.asbm = dict(asbm_stage1_steps=8, asbm_cm_steps=2, asbm_am_steps=2, asbm_check_num=200,
                         asbm_am_sim_steps=4, asbm_cm_sim_steps=4)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    records = {}
    todo = [(d, c, s) for d in args.datasets for c in args.configs for s in args.seeds]
    for i, (dataset, name, seed) in enumerate(todo):
        path = _record_path(out, dataset, name, seed)
        if path.is_file():
            rec = json.loads(path.read_text())
        elif args.summary_only:
            continue
        else:
            rec = run_one(args, dataset, name, seed)
            print(f"[{i + 1}/{len(todo)}] {dataset} {name} seed {seed}: pmf_rmse {rec['pmf_rmse']:.3e}, "
                  f"S {rec['straightness'][0]:.3f}/{rec['straightness'][1]:.3f}, "
                  f"IQR ratio {rec['iqr_ratio'][0]:.2f}/{rec['iqr_ratio'][1]:.2f}, {rec['cpu_seconds']:.0f} s CPU", flush=True)
        records.setdefault((dataset, name), []).append(rec)
    text = tables(args, records)
    print(text)
    if args.table:
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        Path(args.table).write_text(text)
    if args.figures:
        figures(args, Path(args.figures), records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
