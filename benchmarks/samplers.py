"""Sampler accuracy with the exact score of Gaussian data (issue 10).

For every SDE at two speeds (``beta`` = the estimator's default 10, VP
``beta_max`` = 20, and ``beta`` = 5) the score is the exact marginal score of
Gaussian data ``N(m, S)`` (anisotropic, correlated, non-zero mean; initial
velocity ``N(0, I)``), computed from the SDE's closed-form transition, and the
prior is drawn from the exact marginal at ``T``, so the error shown is the
integrator's alone. For every sampler x time grid x steps the generated data's

* ``mean_error``: ``max_i |mean_i - m_i| / sqrt(S_ii)`` (in data std), and
* ``cov_rel_error``: ``max_ij |Cov_ij - S_ij| / sqrt(S_ii S_jj)``

are reported with the NFE (read from ``SamplerOutput.nfe``) and the wall time
of the call. With an exact Gaussian score the PF-ODE is linear, so the
deterministic samplers are affine maps ``a -> M a + b``: they are applied to
the origin and the unit basis states (float64) and the prior's mean and
covariance are pushed through exactly, no sampling noise. ``sde_pc2`` is
affine in the prior draw and in its per-step standard normal draws, so its
output's mean and covariance are pushed through exactly as well (every noise
coordinate of every step probed by a unit vector). The other stochastic
samplers (``euler_maruyama``, ``splitting``) are run on ``--mc-samples``
prior draws; their records carry ``mc_floor``, the same errors measured on
that many exact data draws (the Monte Carlo noise level).

Usage::

    python benchmarks/samplers.py --out runs/samplers/records.json \\
        --table runs/samplers/table.md --figure-dir benchmarks/figures/samplers
    python benchmarks/samplers.py --quick --out /tmp/samplers_quick.json   # < 2 min
    python benchmarks/samplers.py --from-records a.json b.json --out all.json --table t.md   # merge runs
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vsmd_ts.diffusion import SDE_NAMES, get_sampler, make_sde, time_grid  # noqa: E402
from vsmd_ts.diffusion.gaussian import exact_score_fn, marginal as gaussian_marginal  # noqa: E402

SDES = SDE_NAMES
DETERMINISTIC = ("heun", "exp_heun", "exp_ab2", "exp_ab3", "exp_pc3")
STOCHASTIC = ("euler_maruyama", "splitting")  # Monte Carlo
NOISY_AFFINE = ("sde_pc2",)  # stochastic but affine in the prior draw and the per-step noise: pushed exactly
GRIDS = {"uniform": dict(rho=1.0), "rho1.5": dict(rho=1.5), "rho2": dict(rho=2.0), "log": dict(spacing="log")}
STEPS = (5, 10, 20, 40, 80)
DEFAULT = ("exp_pc3", "rho1.5", 20)  # recommended (sampler, grid, steps)
PAPER = ("heun", "uniform")  # the paper's sampler and grid (the estimator's default before 2026-11-23)

f64 = torch.float64
DATA_MEAN = torch.tensor([1.0, -2.0, 0.5], dtype=f64)
DATA_STD = torch.tensor([1.0, 3.0, 0.3], dtype=f64)
DATA_CORR = torch.tensor([[1.0, 0.6, -0.3], [0.6, 1.0, 0.2], [-0.3, 0.2, 1.0]], dtype=f64)
DATA_COV = DATA_CORR * DATA_STD[:, None] * DATA_STD[None]
A_V = torch.tensor([0.1, -0.15, 0.2])  # "learned" A_v of the VS SDEs, one per coordinate


def build_sde(name: str, beta: float):
    """The SDE as the estimator builds it; ``beta`` is ``beta_max`` for VP."""
    sde = make_sde(name, (3,), beta=beta)  # registry defaults: R = 0.7 for vsuld / uld
    if sde.learns_A:
        sde.A.set_(A_V)
    return sde


def marginal(sde, t: float):
    """Mean ``(K d,)`` and covariance ``(K d, K d)`` of ``a_t`` for the benchmark's Gaussian data."""
    return gaussian_marginal(sde, DATA_MEAN, DATA_COV, t)


def exact_score(sde):
    """``score_fn(a, t, cond)``: exact last-channel score of the Gaussian marginal."""
    return exact_score_fn(sde, DATA_MEAN, DATA_COV)


def errors(mean: torch.Tensor, cov: torch.Tensor):
    return (
        ((mean - DATA_MEAN).abs() / DATA_STD).max().item(),
        ((cov - DATA_COV).abs() / (DATA_STD[:, None] * DATA_STD[None])).max().item(),
    )


def run_affine(sde, sampler, ts, noisy: bool = False):
    """Push the exact prior through an affine sampler map; returns (mean, cov, nfe).

    The map is probed on one batch: the origin and each prior coordinate as a unit vector. With ``noisy`` the
    sampler is affine in its standard normal draws too (one ``torch.randn`` per step), and each noise coordinate of
    each step is probed the same way in its own row; without, the sampler must draw no noise at all."""
    d, K = len(DATA_MEAN), sde.num_channels
    n, noise_steps = K * d, (len(ts) - 1 if noisy else 0)
    rows = 1 + n + noise_steps * n
    a = torch.zeros(rows, K, d, dtype=f64)
    a.view(rows, n)[1 : n + 1] = torch.eye(n, dtype=f64)
    calls = []

    def probe(shape, generator=None, device=None, dtype=None):
        z = torch.zeros(shape, dtype=dtype)
        i = len(calls)
        z.view(rows, n)[1 + n + i * n : 1 + n + (i + 1) * n] = torch.eye(n, dtype=dtype)
        calls.append(i)
        return z

    with mock.patch.object(torch, "randn", probe):
        out = sampler(exact_score(sde), sde, a, ts)
    if len(calls) != noise_steps:
        raise RuntimeError(f"expected {noise_steps} noise draws (one per step if noisy), got {len(calls)}")
    o = out.state.reshape(rows, n)
    b, M, N = o[0], (o[1 : n + 1] - o[0]).T, o[n + 1 :] - o[0]
    mu, C = marginal(sde, float(ts[0]))
    return (M @ mu + b)[:d], (M @ C @ M.T + N.T @ N)[:d, :d], out.nfe


def run_mc(sde, sampler, ts, num: int, seed: int):
    """Sample ``num`` exact prior draws through a stochastic sampler; returns (mean, cov, nfe)."""
    g = torch.Generator().manual_seed(seed)
    mu, C = marginal(sde, float(ts[0]))
    z = torch.randn(num, len(mu), dtype=f64, generator=g)
    a = (mu + z @ torch.linalg.cholesky(C).T).reshape(num, sde.num_channels, len(DATA_MEAN))
    out = sampler(exact_score(sde), sde, a, ts, generator=g)
    x = out.state[:, 0]
    return x.mean(0), torch.cov(x.T), out.nfe


def mc_floor(num: int, seed: int):
    """The two errors measured on ``num`` exact data draws (the Monte Carlo noise level)."""
    g = torch.Generator().manual_seed(seed + 1)
    x = DATA_MEAN + torch.randn(num, 3, dtype=f64, generator=g) @ torch.linalg.cholesky(DATA_COV).T
    return errors(x.mean(0), torch.cov(x.T))


def benchmark(args):
    records = []
    floor = mc_floor(args.mc_samples, args.seed)
    for beta_kind in args.betas:
        for name in args.sdes:
            beta = (20.0 if name == "vp" else 10.0) if beta_kind == "default" else float(beta_kind)
            sde = build_sde(name, beta)
            for sampler_name in args.samplers:
                sampler = get_sampler(sampler_name)
                for grid in args.grids:
                    for steps in args.steps:
                        ts = time_grid(sde, steps, **GRIDS[grid]).to(f64)
                        start = time.perf_counter()
                        if sampler_name in STOCHASTIC:
                            mean, cov, nfe = run_mc(sde, sampler, ts, args.mc_samples, args.seed)
                        elif sampler_name in NOISY_AFFINE:
                            mean, cov, nfe = run_affine(sde, sampler, ts, noisy=True)
                        else:
                            mean, cov, nfe = run_affine(sde, sampler, ts)
                        wall = time.perf_counter() - start
                        me, ce = errors(mean, cov)
                        rec = {"sde": name, "beta": beta, "sampler": sampler_name, "grid": grid, "steps": steps,
                               "nfe": nfe, "mean_error": me, "cov_rel_error": ce,
                               "is_default": (sampler_name, grid, steps) == DEFAULT, "wall_s": wall}
                        if sampler_name in STOCHASTIC:
                            rec.update(mc_samples=args.mc_samples, mc_floor={"mean_error": floor[0], "cov_rel_error": floor[1]})
                        records.append(rec)
                        print(json.dumps(rec), flush=True)
    return records


def timing(args):
    """Wall time of one exchange-like forecast window: 30 sampler calls of 100 samples x 8 series
    through the estimator's default denoiser (random weights; the time, not the output, is measured)."""
    from vsmd_ts.diffusion import ResidualMLP, ScoreModel

    torch.manual_seed(args.seed)
    sde = make_sde("vsuld", (8,), beta=10.0, damping_ratio=0.7)
    net = ResidualMLP((8,), num_channels=2, hidden=128, num_blocks=3, cond_dim=64)
    torch.nn.init.normal_(net.out[-1].weight, std=0.1)
    score_fn, cond = ScoreModel(sde, net).eval(), torch.randn(100, 64)
    out = []
    for sampler_name, grid, steps in (("heun", "uniform", 20), ("exp_heun", "uniform", 10), ("exp_pc3", "rho1.5", 20),
                                      ("exp_pc3", "rho1.5", 10), ("splitting", "uniform", 40), ("sde_pc2", "rho2", 20)):
        ts, sampler = time_grid(sde, steps, **GRIDS[grid]), get_sampler(sampler_name)
        runs = []
        for _ in range(args.timing_repeats):
            start = time.perf_counter()
            with torch.no_grad():
                for _ in range(30):
                    nfe = sampler(score_fn, sde, sde.prior_sample(100), ts, cond=cond).nfe
            runs.append(time.perf_counter() - start)
        rec = {"sampler": sampler_name, "grid": grid, "steps": steps, "nfe": nfe, "window_s_median": sorted(runs)[len(runs) // 2],
               "window_s_all": runs}
        print(json.dumps(rec), flush=True)
        out.append(rec)
    return out


def _cell(r):
    return f"{100 * r['cov_rel_error']:.3g} / {100 * r['mean_error']:.2g}"


def write_table(records, path: Path):
    """Markdown: one table per (SDE, beta), rows sampler x grid, columns steps; cells 'cov % / mean %'."""
    lines = ["Cells: covariance error % / mean error % (of the data std); NFE = steps x (2 for heun and exp_heun, else 1).", ""]
    keys = sorted({(r["sde"], r["beta"]) for r in records}, key=lambda k: (SDES.index(k[0]), -k[1]))
    steps = sorted({r["steps"] for r in records})
    for sde, beta in keys:
        lines += [f"### {sde}, beta {beta:g}", "", "| sampler | grid | " + " | ".join(f"{s} steps" for s in steps) + " |",
                  "|---|---|" + "---|" * len(steps)]
        rows = {}
        for r in records:
            if (r["sde"], r["beta"]) == (sde, beta):
                rows.setdefault((r["sampler"], r["grid"]), {})[r["steps"]] = r
        for (sampler, grid), by_steps in rows.items():
            cells = [(f"**{_cell(by_steps[s])}**" if by_steps[s]["is_default"] else _cell(by_steps[s])) if s in by_steps else ""
                     for s in steps]
            lines.append(f"| {sampler} | {grid} | " + " | ".join(cells) + " |")
        lines.append("")
    path.write_text("\n".join(lines))


def plot(records, figure_dir: Path):
    """Log-log covariance error against NFE, one panel per SDE, one figure per beta kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = {"heun": "uniform", "exp_heun": "uniform", "euler_maruyama": "uniform", "splitting": "uniform",
             "exp_ab2": "rho1.5", "exp_ab3": "rho1.5", "exp_pc3": "rho1.5", "sde_pc2": "rho2"}
    figure_dir.mkdir(parents=True, exist_ok=True)
    for tag, pick in (("default_beta", lambda r: r["beta"] in (10.0, 20.0)), ("beta5", lambda r: r["beta"] == 5.0)):
        recs = [r for r in records if pick(r)]
        if not recs:
            continue
        fig, axes = plt.subplots(2, 3, figsize=(13, 7.5), sharex=True, sharey=True)
        for ax, sde in zip(axes.flat, SDES):
            for sampler, grid in shown.items():
                pts = sorted((r["nfe"], r["cov_rel_error"]) for r in recs
                             if r["sde"] == sde and r["sampler"] == sampler and r["grid"] == grid)
                if pts:
                    ax.loglog(*zip(*pts), "o-" if sampler.startswith(("exp_", "sde_")) else "s--", label=f"{sampler} ({grid})", ms=3,
                              color=f"C{list(shown).index(sampler)}")
            ax.axhline(0.02, color="grey", lw=0.8, ls=":")
            ax.axvline(20, color="grey", lw=0.8, ls=":")
            ax.set_title(f"{sde}, beta {next((r['beta'] for r in recs if r['sde'] == sde), '?'):g}")
            ax.set_ylim(1e-5, 1e2)
        for ax in axes[-1]:
            ax.set_xlabel("NFE")
        for ax in axes[:, 0]:
            ax.set_ylabel("relative covariance error")
        axes.flat[0].legend(fontsize=7)
        fig.suptitle("Exact Gaussian score: covariance error of generated data vs NFE (dotted: 2 %, 20 NFE)")
        fig.tight_layout()
        fig.savefig(figure_dir / f"error_vs_nfe_{tag}.png", dpi=110)
        plt.close(fig)


def _parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sdes", nargs="+", default=list(SDES))
    p.add_argument("--betas", nargs="+", default=["default", "5"], help="'default' (10, VP 20) and/or numbers")
    p.add_argument("--samplers", nargs="+", default=list(DETERMINISTIC + NOISY_AFFINE + STOCHASTIC))
    p.add_argument("--grids", nargs="+", default=list(GRIDS), choices=list(GRIDS))
    p.add_argument("--steps", nargs="+", type=int, default=list(STEPS))
    p.add_argument("--mc-samples", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="default beta; heun, exp_heun, exp_pc3; two grids; 10/20 steps")
    p.add_argument("--timing", action="store_true", help="only time one forecast window per sampler")
    p.add_argument("--timing-repeats", type=int, default=5)
    p.add_argument("--from-records", type=Path, nargs="+", help="skip the runs: merge these JSON files of records")
    p.add_argument("--out", type=Path, required=True, help="JSON file of records")
    p.add_argument("--table", type=Path, help="markdown table to write")
    p.add_argument("--figure-dir", type=Path, help="where to write the log-log plots")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    torch.set_num_threads(1)
    if args.quick:
        args.betas, args.grids, args.steps = ["default"], ["uniform", "rho1.5"], [10, 20]
        args.samplers = ["heun", "exp_heun", "exp_pc3", "sde_pc2", "euler_maruyama"]
        args.mc_samples = min(args.mc_samples, 20_000)
    if args.timing:
        records = timing(args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(records, indent=1))
        return records
    if args.from_records:
        records = [r for f in args.from_records for r in json.loads(f.read_text())]
    else:
        records = benchmark(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(records, indent=1))
    if args.table:
        write_table(records, args.table)
    if args.figure_dir:
        plot(records, args.figure_dir)
    return records


if __name__ == "__main__":
    main()
