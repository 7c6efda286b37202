"""Train VSULD (beta = 5, R = 0.7) and CLD (beta = 5) on the spiral stretched 8x in Y and compare them.

About two minutes on one CPU core::

    python examples/toy_spiral.py --out runs/toy_spiral

Writes, per model, a scatter plot of 10 000 samples against the truth and the
probability-flow paths of a few particles, and prints the PMF-RMSE, the
per-axis interquartile-range ratio (below 1: the axis is squashed) and the
per-axis straightness.
"""

import argparse
from pathlib import Path

import torch

from vsmd_ts.toys import ToyConfig, evaluate, model_from_checkpoint, plot_samples, plot_trajectories, train


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/toy_spiral")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)  # small MLP: one thread is fastest
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    for sde, R in (("vsuld", 0.7), ("cld", None)):
        cfg = ToyConfig(dataset="spiral-8y", sde=sde, beta=5.0, damping_ratio=R, steps=args.steps, seed=args.seed)
        summary = train(cfg, out=out / sde)
        model, cfg, data_var = model_from_checkpoint(summary["checkpoint"])
        res = evaluate(model, cfg.dataset, num=10_000, steps=50, prior=cfg.prior, data_var=data_var, seed=args.seed)
        title = f"{sde}-5 on spiral-8y"
        plot_samples(res["samples"].x, res["true"], out / f"{sde}_samples.png", title=title)
        plot_trajectories(res["samples"].traj, res["samples"].ts, out / f"{sde}_paths.png", true=res["true"], title=title)
        print(
            f"{sde:6s} PMF-RMSE {res['pmf_rmse']:.2e}  IQR ratio x1/x2 {res['iqr_ratio'][0]:.2f}/{res['iqr_ratio'][1]:.2f}"
            f"  straightness x1/x2 {res['straightness'][0]:.2f}/{res['straightness'][1]:.2f}  A_v {summary['A_v_end']}"
        )
    print(f"plots in {out}")


if __name__ == "__main__":
    main()
