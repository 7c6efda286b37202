"""Command line of the 2-D toy front end.

Examples
--------
Train VSULD (beta = 5, R = 0.7) on the spiral stretched 8x in Y, then draw
10 000 samples with their metrics, a scatter plot and a few paths::

    python -m vsmd_ts.toys train --dataset spiral-8y --sde vsuld --beta 5 --damping-ratio 0.7 --out runs/toy
    python -m vsmd_ts.toys sample --checkpoint runs/toy --num 10000 --metrics \\
        --plot runs/toy/samples.png --trajectories runs/toy/paths.png --out runs/toy/samples.pt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from vsmd_ts.diffusion import SAMPLERS, SDE_NAMES

from .data import DATASETS, get_dataset
from .plots import plot_samples, plot_trajectories
from .sampling import PRIORS, generate, metrics_dict
from .train import ToyConfig, load_checkpoint, model_from_checkpoint, train

_DEFAULTS = ToyConfig()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vsmd_ts.toys", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train",
        help="train (or resume) a toy model; writes OUT/last.ckpt",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    t.add_argument("--dataset", choices=DATASETS, default=_DEFAULTS.dataset)
    t.add_argument("--sde", choices=SDE_NAMES, default=_DEFAULTS.sde)
    t.add_argument("--beta", type=float, default=_DEFAULTS.beta, help="speed of the forward SDE (beta_max for vp)")
    t.add_argument("--damping-ratio", type=float, help="R for vsuld/uld (default 0.7)")
    t.add_argument("--prior", choices=PRIORS, default=_DEFAULTS.prior, help="sampling prior (transition: the paper's)")
    t.add_argument("--hidden", type=int, default=_DEFAULTS.hidden)
    t.add_argument("--num-blocks", type=int, default=_DEFAULTS.num_blocks)
    t.add_argument("--steps", type=int, default=_DEFAULTS.steps)
    t.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size)
    t.add_argument("--lr", type=float, default=_DEFAULTS.lr)
    t.add_argument("--lr-schedule", choices=("cosine", "constant"), default=_DEFAULTS.lr_schedule)
    t.add_argument("--A-lr", dest="A_lr", type=float, default=_DEFAULTS.A_lr, help="learning rate of A")
    t.add_argument("--ema-decay", type=float, default=_DEFAULTS.ema_decay)
    t.add_argument("--grad-clip", type=float, default=_DEFAULTS.grad_clip)
    t.add_argument("--warmup", type=float, default=_DEFAULTS.warmup, help="fraction of steps before the first A update")
    t.add_argument("--cooldown", type=float, default=_DEFAULTS.cooldown, help="fraction of steps after the last A update")
    t.add_argument("--cycle", type=float, default=_DEFAULTS.cycle, help="backward + forward cycle, fraction of steps")
    t.add_argument("--forward-fraction", type=float, default=_DEFAULTS.forward_fraction)
    t.add_argument("--num-trajectories", type=int, default=_DEFAULTS.num_trajectories)
    t.add_argument("--trajectory-steps", type=int, default=_DEFAULTS.trajectory_steps)
    t.add_argument("--frozen-policy", choices=("score", "score_minus_forward"), default=_DEFAULTS.frozen_policy)
    t.add_argument("--seed", type=int, default=_DEFAULTS.seed)
    t.add_argument("--log-every", type=int, default=_DEFAULTS.log_every)
    t.add_argument("--ckpt-every", type=int, default=_DEFAULTS.ckpt_every, help="steps between OUT/last.ckpt saves (0: end only)")
    t.add_argument("--max-minutes", type=float, help="stop and checkpoint after this much training time")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.ckpt")
    t.add_argument("--eval-every", type=int, default=_DEFAULTS.eval_every, help="PMF-RMSE of the EMA model every N steps (0: off)")
    t.add_argument("--threads", type=int, default=_DEFAULTS.threads, help="torch threads (0: leave as is)")
    t.add_argument("--no-progress", dest="progress", action="store_false")
    t.add_argument("--out", required=True, help="output folder (last.ckpt, metrics.csv, summary.json)")

    s = sub.add_parser(
        "sample",
        help="draw samples from a checkpoint (probability-flow ODE by default)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    s.add_argument("--checkpoint", required=True, help="last.ckpt or the run folder holding it")
    s.add_argument("--num", type=int, default=10_000)
    s.add_argument("--steps", type=int, default=50, help="sampler steps (Heun: 2 score evaluations each)")
    s.add_argument("--sampler", choices=sorted(SAMPLERS), default="heun")
    s.add_argument("--prior", choices=PRIORS, help="default: the one the model was trained with")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA")
    s.add_argument("--out", help="write {'x': (N, 2), 'traj', 'ts'} here (torch.save)")
    s.add_argument("--plot", help="PNG: samples next to the truth")
    s.add_argument("--trajectories", help="PNG: paths of a few particles")
    s.add_argument("--metrics", action="store_true", help="print PMF-RMSE and per-axis straightness (JSON)")
    s.add_argument("--threads", type=int, default=0)
    s.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def _train(args) -> dict:
    cfg = ToyConfig.from_dict({k: v for k, v in vars(args).items() if k not in ("command", "out")})
    summary = train(cfg, out=args.out)
    keys = ("start_step", "steps", "eval_loss_start", "eval_loss_end", "ema_eval_loss_end", "A_v_start", "A_v_end",
            "train_cpu_seconds", "checkpoint")
    return {k: summary[k] for k in keys}


def _sample(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    model, cfg, data_var = model_from_checkpoint(ckpt, ema=not args.raw)
    prior = args.prior or cfg.prior
    record = bool(args.metrics or args.trajectories or args.out)
    res = generate(model, args.num, args.steps, args.sampler, prior, data_var, args.seed, record=record, progress=args.progress)
    report = {"dataset": cfg.dataset, "sde": cfg.sde, "beta": cfg.beta, "num": args.num, "nfe": res.nfe, "sampler": args.sampler}
    dataset = get_dataset(cfg.dataset)
    true = dataset.sample(max(args.num, 100_000), torch.Generator().manual_seed(2**20))
    if args.metrics:
        report.update(metrics_dict(res, true))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"x": res.x, "traj": res.traj, "ts": res.ts}, args.out)
        report["out"] = args.out
    title = f"{cfg.sde}-{cfg.beta:g} on {cfg.dataset}"
    if args.plot:
        plot_samples(res.x, true, args.plot, title=title)
        report["plot"] = args.plot
    if args.trajectories:
        plot_trajectories(res.traj, res.ts, args.trajectories, true=true, title=title)
        report["trajectories"] = args.trajectories
    return report


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        report = _train(args) if args.command == "train" else _sample(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
