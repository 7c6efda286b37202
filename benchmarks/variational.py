"""Does the package's A update find the minimiser of the variational loss? (issue 14)

Data are independent Gaussian coordinates, ``x_0 ~ N(0, diag(axis_var))``, so
every forward marginal is Gaussian and its score is exact. Two computations
of the A that Algorithm 1 converges to, per axis:

* **reference** (numpy/scipy only, float64, nothing from ``vsmd_ts``): the
  forward marginal covariance ``P(t)`` and the covariance ``C(t)`` of the
  backward process (prior at ``T``, exact score of ``P``) come from their
  moment ODEs (DOP853, rtol 1e-11); the variational loss of eq. (13) with
  the ``"score"`` policy is then the deterministic
  ``L(A; A_f) = int_eps^T g^2 [c^T C c / 2 - c^T C P^{-1} e_K + A_v] dt``
  with ``c = (A_x(A_v), A_v)`` (VSDM: ``c = A``). Algorithm 1 simulates with
  ``A_f`` and minimises over ``A``, so what it converges to is the
  self-consistent minimiser ``A* = argmin_A L(A; A*)``: found by direct
  minimisation over ``A`` (``scipy.optimize.minimize_scalar``) iterated
  from ``A_f = 0`` until it stops moving;
* **package**: ``VSMDObjective`` with an exact-score network, Euler-Maruyama
  trajectories from the prior (``VariationalScoreUpdater``), each forward
  step one refresh, from ``A = 0``; ``--update newton`` solves each
  forward phase exactly, ``--update gradient`` takes ``--A-steps`` AdamW
  steps at ``--A-lr``. ``A_package`` is the mean over the last half of the
  refreshes (the iterates scatter by Monte Carlo noise).

Usage::

    python benchmarks/variational.py --quick                  # < 3 min
    python benchmarks/variational.py --out runs/variational   # full grid
    python benchmarks/variational.py --out runs/variational --table-only
    python benchmarks/variational.py --reference-only --priors data fixed --betas 2 5 10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp
from scipy.linalg import solve_continuous_lyapunov
from scipy.optimize import minimize_scalar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vsmd_ts.diffusion import AlternationSchedule, VariationalScoreUpdater, VSMDObjective, make_optimizer, make_sde  # noqa: E402

GAMMA, A_MAX, T, EPS = 2.0, 0.4, 1.0, 1e-3
DAMPING = {"vsuld": 0.7, "vscld": 1.0, "vsdm": None}
PRIORS = ("data", "transition", "stationary", "fixed")
DATA = {"anisotropic": (1.0, 64.0), "isotropic": (1.0, 1.0)}
ODE = dict(method="DOP853", rtol=1e-11, atol=1e-13)


# ------------------------------------------------------------------ reference
def _blocks(sde: str, A_v: float):
    """Drift block ``F`` and noise block ``Q`` per unit beta (numpy)."""
    if sde == "vsdm":
        return np.array([[-0.5 * (1 - 2 * A_v)]]), np.array([[1.0]])
    omega2 = GAMMA**2 * (1 - 2 * A_v) ** 2 / (4 * DAMPING[sde])
    return np.array([[0.0, 0.5], [-0.5 * omega2, -0.5 * GAMMA * (1 - 2 * A_v)]]), np.diag([0.0, GAMMA])


def _control(sde: str, A_v: float) -> np.ndarray:
    if sde == "vsdm":
        return np.array([A_v])
    return np.array([(1 - GAMMA**2 * (1 - 2 * A_v) ** 2 / (4 * DAMPING[sde])) / (2 * GAMMA), A_v])


def _forward_cov(F, Q, beta, P0):
    K = F.shape[0]
    rhs = lambda t, p: (beta * (F @ p.reshape(K, K) + p.reshape(K, K) @ F.T) + beta * Q).ravel()  # noqa: E731
    return solve_ivp(rhs, (0.0, T), P0.ravel(), dense_output=True, **ODE).sol


def loss_moments(sde: str, A_f: float, beta: float, var: float, prior: str):
    """``(int g^2 C, int g^2 C P^{-1} e_K, int g^2)`` over ``[eps, T]`` for simulation at ``A_f``."""
    F, Q = _blocks(sde, A_f)
    K = F.shape[0]
    e = np.eye(K)[-1]
    P = _forward_cov(F, Q, beta, np.diag([var, 1.0][:K]))
    if prior == "data":
        C_T = P(T).reshape(K, K)
    elif prior == "transition":
        C_T = _forward_cov(F, Q, beta, np.diag([0.0, 1.0][:K]))(T).reshape(K, K)
    elif prior == "stationary":
        C_T = solve_continuous_lyapunov(F, -Q)
    else:
        C_T = np.eye(K)
    g2 = beta * Q[-1, -1]

    def rhs(t, y):  # backward covariance and the running integrals, integrated from T down to eps
        C = y[: K * K].reshape(K, K)
        Pinv_e = np.linalg.solve(P(t).reshape(K, K), e)
        M = beta * F + g2 * np.outer(e, Pinv_e)
        dC = M @ C + C @ M.T - beta * Q
        return np.concatenate([dC.ravel(), -g2 * C.ravel(), -g2 * C @ Pinv_e, [-g2]])

    y0 = np.concatenate([C_T.ravel(), np.zeros(K * K + K + 1)])
    y = solve_ivp(rhs, (T, EPS), y0, **ODE).y[:, -1]
    return y[K * K : 2 * K * K].reshape(K, K), y[2 * K * K : 2 * K * K + K], y[-1]


def reference_loss(sde: str, A_v: float, moments) -> float:
    IC, ICP, I1 = moments
    c = _control(sde, A_v)
    return 0.5 * c @ IC @ c - c @ ICP + A_v * I1


def reference_minimiser(sde: str, beta: float, var: float, prior: str, tol: float = 1e-7, max_iter: int = 200):
    """Self-consistent minimiser ``A* = argmin_A L(A; A*)`` from ``A_f = 0``; ``(A*, iterations)``."""
    A_f = 0.0
    for it in range(1, max_iter + 1):
        m = loss_moments(sde, A_f, beta, var, prior)
        res = minimize_scalar(lambda a: reference_loss(sde, a, m), bounds=(-A_MAX + 1e-9, A_MAX - 1e-9),
                              method="bounded", options={"xatol": 1e-10})
        if abs(res.x - A_f) < tol:
            return float(res.x), it
        A_f = float(res.x)
    raise RuntimeError(f"no fixed point after {max_iter} iterations ({sde}, {prior}, beta {beta}, var {var})")


# -------------------------------------------------------------------- package
class ExactNoiseNet(torch.nn.Module):
    """Noise predictor whose score is the exact last-channel score of ``N(0, diag(var))`` data.

    ``ScoreModel`` turns ``eps_hat`` into ``-eps_hat / L_KK``, so this returns
    ``L_KK (P_t^{-1} a)_K`` with ``P_t`` the forward marginal under the SDE's
    current A (it follows A as it changes).
    """

    def __init__(self, sde, var):
        super().__init__()
        self.sde = [sde]  # not a submodule: A must not be counted twice
        K = sde.num_channels
        S0 = torch.zeros(sde.data_shape + (K, K), dtype=torch.float64)
        S0[..., 0, 0] = torch.as_tensor(var, dtype=torch.float64)
        if K == 2:
            S0[..., 1, 1] = 1.0
        self.register_buffer("S0", S0)
        self.cache = {}

    def forward(self, a, t, cond=None):
        sde = self.sde[0]
        key = (float(t[0]), tuple(sde.A().detach().flatten().tolist()))
        if key not in self.cache:  # the grid and A repeat: one transition per (time, A)
            P = sde.transition(t[0], sigma0=self.S0).cov
            row = torch.linalg.inv(P)[..., -1, :] * sde.noise_scale(t[:1])[0].double()[..., None]
            self.cache = {k: v for k, v in self.cache.items() if k[1] == key[1]}
            self.cache[key] = row
        row = self.cache[key]
        return sum(row[..., j] * a[:, j].double() for j in range(a.shape[1])).to(a.dtype)


def package_minimiser(sde_name, beta, var, prior, update="newton", rounds=12, A_steps=1, A_lr=0.05,
                      num_trajectories=2048, traj_steps=100, sampler="euler_maruyama", seed=0):
    """Run the package's A update from ``A = 0``; ``(mean over the last half of rounds, their std, trace)``."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    sde = make_sde(sde_name, (len(var),), beta=beta)
    net = ExactNoiseNet(sde, var)
    model = torch.nn.ModuleDict({"sde": sde})
    opt = make_optimizer(model, lr=0.0, A_lr=A_lr)
    updater = VariationalScoreUpdater(traj_steps, "score", prior=prior, data_var=torch.tensor(var), sampler=sampler)
    schedule = AlternationSchedule(warmup=0.0, cooldown=0.0, cycle=1.0, forward_fraction=1.0)
    objective = VSMDObjective(sde, net, schedule, updater, num_trajectories, A_update=update, refresh_every=A_steps)
    x0 = torch.zeros(num_trajectories, len(var))
    total = rounds * A_steps
    trace = []
    for step in range(total):
        loss, stage = objective(step, total, x0, generator=gen)
        assert stage == "forward"
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % A_steps == 0:
            trace.append(sde.A().detach().double().clone())
    tail = torch.stack(trace[rounds // 2 :])
    return tail.mean(0).tolist(), tail.std(0).tolist(), [a.tolist() for a in trace], objective.A_status(warn=False)


# ----------------------------------------------------------------------- main
def run_config(sde, prior, beta, args) -> list:
    """Records of one (SDE, prior, beta): anisotropic and isotropic axes in one package run."""
    var = [v for name in DATA for v in DATA[name]]
    labels = [name for name in DATA for _ in DATA[name]]
    ref = {v: reference_minimiser(sde, beta, v, prior)[0] for v in sorted(set(var))}
    t0 = time.perf_counter()
    mean, std, trace, status = package_minimiser(
        sde, beta, var, prior, args.update, args.refreshes, args.A_steps, args.A_lr,
        args.trajectories, args.traj_steps, args.sampler, args.seed,
    )
    seconds = time.perf_counter() - t0
    tail = len(trace) - len(trace) // 2
    return [
        {"sde": sde, "prior": prior, "beta": beta, "axis_var": v, "data": lab, "A_reference": round(ref[v], 5),
         "A_package": round(m, 5), "A_package_se": round(s / tail**0.5, 5), "refreshes": args.refreshes,
         "trajectories": args.trajectories, "traj_steps": args.traj_steps, "sampler": args.sampler,
         "update": args.update, "A_steps": args.A_steps, "A_lr": args.A_lr if args.update == "gradient" else None,
         "last_refresh_gap": round(status["gap"], 6), "package_seconds": round(seconds, 1)}
        for v, lab, m, s in zip(var, labels, mean, std)
    ]


def table(records) -> str:
    """Markdown table: one row per (SDE, prior, beta), anisotropic axes and the isotropic mean."""
    lines = ["| SDE | prior | beta | var-1 axis: reference / package | var-64 axis: reference / package "
             "| isotropic (var 1): package | max abs diff |", "|---|---|---|---|---|---|---|"]
    keys = sorted({(r["sde"], r["prior"], r["beta"]) for r in records}, key=lambda k: (k[2], k[0], PRIORS.index(k[1])))
    for key in keys:
        rows = [r for r in records if (r["sde"], r["prior"], r["beta"]) == key]
        an = {r["axis_var"]: r for r in rows if r["data"] == "anisotropic"}
        iso = [r["A_package"] for r in rows if r["data"] == "isotropic"]
        cell = lambda r: f"{r['A_reference']:+.4f} / {r['A_package']:+.4f} ± {r['A_package_se']:.4f}"  # noqa: E731
        diff = max(abs(r["A_reference"] - r["A_package"]) for r in rows)
        lines.append(f"| {key[0]} | {key[1]} | {key[2]:g} | {cell(an[1.0])} | {cell(an[64.0])} | "
                     f"{', '.join(f'{a:+.4f}' for a in iso)} | {diff:.4f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sdes", nargs="+", default=["vsuld", "vscld", "vsdm"], choices=list(DAMPING))
    p.add_argument("--priors", nargs="+", default=list(PRIORS), choices=PRIORS)
    p.add_argument("--betas", nargs="+", type=float, default=[2.0, 5.0])
    p.add_argument("--update", default="newton", choices=("newton", "gradient"))
    p.add_argument("--refreshes", type=int, default=8, help="trajectory refreshes (fixed-point iterations)")
    p.add_argument("--A-steps", type=int, default=1, help="A steps per refresh")
    p.add_argument("--A-lr", type=float, default=0.01, help="AdamW learning rate of A (--update gradient)")
    p.add_argument("--trajectories", type=int, default=4096)
    p.add_argument("--traj-steps", type=int, default=100)
    p.add_argument("--sampler", default="splitting", choices=("splitting", "euler_maruyama"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/variational", help="folder for records.jsonl and table.md")
    p.add_argument("--quick", action="store_true", help="smoke run: beta 5, priors data and fixed, small sizes")
    p.add_argument("--table-only", action="store_true", help="only rebuild table.md from --out/records.jsonl")
    p.add_argument("--reference-only", action="store_true", help="only print the reference minimisers of the grid")
    args = p.parse_args(argv)
    if args.quick:
        args.betas, args.priors, args.refreshes, args.trajectories, args.traj_steps = [5.0], ["data", "fixed"], 4, 512, 50
    torch.set_num_threads(1)
    if args.reference_only:
        print("| SDE | prior | beta | A* var-1 axis | A* var-64 axis | difference |\n|---|---|---|---|---|---|")
        for sde in args.sdes:
            for prior in args.priors:
                for beta in args.betas:
                    a1, a64 = (reference_minimiser(sde, beta, v, prior)[0] for v in (1.0, 64.0))
                    print(f"| {sde} | {prior} | {beta:g} | {a1:+.4f} | {a64:+.4f} | {a1 - a64:+.4f} |", flush=True)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "records.jsonl"
    records = [json.loads(line) for line in path.open()] if path.exists() else []
    done = {(r["sde"], r["prior"], r["beta"]) for r in records}
    for beta in [] if args.table_only else args.betas:
        for sde in args.sdes:
            for prior in args.priors:
                if (sde, prior, beta) in done:
                    continue
                new = run_config(sde, prior, beta, args)
                with path.open("a") as f:
                    f.writelines(json.dumps(r) + "\n" for r in new)
                records += new
                print(json.dumps({k: new[0][k] for k in ("sde", "prior", "beta", "package_seconds")}),
                      [(r["axis_var"], r["A_reference"], r["A_package"]) for r in new], flush=True)
    (out / "table.md").write_text(table(records) + "\n")
    print(table(records))


if __name__ == "__main__":
    main()
