"""Command line of the 2-D toy front end.

Examples
--------
Train VSULD (beta = 5, R = 0.7) on the spiral stretched 8x in Y, then draw
10 000 samples with their metrics, a scatter plot and a few paths::

    python -m vsmd_ts.toys train --dataset spiral-8y --sde vsuld --beta 5 --damping-ratio 0.7 --out runs/toy
    python -m vsmd_ts.toys sample --checkpoint runs/toy --num 10000 --metrics \\
        --plot runs/toy/samples.png --trajectories runs/toy/paths.png --out runs/toy/samples.pt

ASBM on ASBM's VP base (beta 0.1 -> 4), then 10 reverse-SDE steps of the
backward network (10 network calls per sample), with the prior check of the
forward control; ``--base cld`` takes the momentum base (CLD, beta 4)::

    python -m vsmd_ts.toys train --method asbm --base vp --dataset spiral-8y --out runs/asbm
    python -m vsmd_ts.toys sample --checkpoint runs/asbm --nfe 10 --metrics

Its memoryless twin (plain DSM, same network, VP beta 0.1 -> 20)::

    python -m vsmd_ts.toys train --sde vp --beta 20 --dataset spiral-8y --out runs/vp20
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from vsmd_ts.diffusion import SAMPLERS, SDE_NAMES
from vsmd_ts.diffusion.asbm import REVERSE_SDE_SAMPLERS, SIM_GRIDS, SIM_SCHEMES

from .data import DATASETS, get_dataset
from .plots import plot_samples, plot_trajectories
from .sampling import PRIORS, asbm_sampling_model, forward_prior_check, generate, metrics_dict, steps_for_nfe
from .train import METHODS, ToyConfig, load_checkpoint, model_from_checkpoint, train

_DEFAULTS = ToyConfig()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vsmd_ts.toys", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train",
        help="train (or resume) a toy model; writes OUT/last.ckpt",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    t.add_argument("--method", choices=METHODS, default=_DEFAULTS.method,
                   help="vsmd: DSM (+ A update for the VS SDEs); asbm: ASBM's two stages on the base --sde")
    t.add_argument("--dataset", choices=DATASETS, default=_DEFAULTS.dataset)
    t.add_argument("--sde", "--base", dest="sde", choices=SDE_NAMES,
                   help="forward SDE; for asbm the base (vp, cld, uld) (default: vsuld, asbm: vp)")
    t.add_argument("--beta", type=float, help="speed of the forward SDE (beta_max for vp) (default: 5, asbm: 4)")
    t.add_argument("--damping-ratio", type=float, help="R for vsuld/uld (default 0.7)")
    t.add_argument("--prior", choices=PRIORS,
                   help="sampling prior (default: transition, the paper's; asbm: fixed, N(0, I))")
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
    a = t.add_argument_group("asbm", "ASBM's stages (--method asbm); stage 2 runs --steps steps")
    a.add_argument("--asbm-stage1-steps", type=int, default=_DEFAULTS.asbm_stage1_steps,
                   help="step budget of stage 1 (it ends at the first passed prior check)")
    a.add_argument("--asbm-cm-steps", type=int, default=_DEFAULTS.asbm_cm_steps, help="steps of one corrector-matching stage")
    a.add_argument("--asbm-am-steps", type=int, default=_DEFAULTS.asbm_am_steps, help="steps of one adjoint-matching stage")
    a.add_argument("--asbm-refresh-every", type=int, default=_DEFAULTS.asbm_refresh_every,
                   help="steps between buffer refreshes (one data batch simulated each)")
    a.add_argument("--asbm-buffer-size", type=int, default=_DEFAULTS.asbm_buffer_size)
    a.add_argument("--asbm-am-sim-steps", type=int, default=_DEFAULTS.asbm_am_sim_steps,
                   help="steps of the forward simulation (AM buffers, stage 2, prior check)")
    a.add_argument("--asbm-cm-sim-steps", type=int, default=_DEFAULTS.asbm_cm_sim_steps, help="steps for CM buffers")
    a.add_argument("--asbm-sim-scheme", choices=SIM_SCHEMES, default=_DEFAULTS.asbm_sim_scheme,
                   help="integrator of the forward simulations (ASBM's: euler)")
    a.add_argument("--asbm-sim-grid", choices=SIM_GRIDS, default=_DEFAULTS.asbm_sim_grid,
                   help="their time grid (ASBM's: uniform; quadratic: finer near T)")
    a.add_argument("--asbm-lr", type=float, default=_DEFAULTS.asbm_lr, help="constant learning rate of stage 1")
    a.add_argument("--asbm-check-num", type=int, default=_DEFAULTS.asbm_check_num, help="data points of the prior check")
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
    s.add_argument("--nfe", type=int, help="network calls per sample (sets --steps from the sampler)")
    s.add_argument("--sampler", choices=sorted(SAMPLERS),
                   help="default heun; asbm: euler_maruyama (reverse SDE, backward network only; an ODE sampler "
                        "integrates the SB's probability-flow ODE with both networks)")
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
    if cfg.method == "asbm":
        keys = ("stage1_steps", "stage1_passed", "start_step", "steps", "train_cpu_seconds", "checkpoint")
        last = summary["prior_checks"][-1] if summary["prior_checks"] else {}
        return {**{k: summary[k] for k in keys}, "last_prior_check": last}
    keys = ("start_step", "steps", "eval_loss_start", "eval_loss_end", "ema_eval_loss_end", "A_v_start", "A_v_end",
            "train_cpu_seconds", "checkpoint")
    return {k: summary[k] for k in keys}


def _sample(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    model, cfg, data_var = model_from_checkpoint(ckpt, ema=not args.raw)
    prior = args.prior or cfg.prior
    report = {"method": cfg.method, "dataset": cfg.dataset, "sde": cfg.sde, "beta": cfg.beta}
    sampler = args.sampler or ("euler_maruyama" if cfg.method == "asbm" else "heun")
    if cfg.method == "asbm":
        # stage 1's check of the (EMA) forward control: where the coupling ends against N(0, I)
        report["prior_check"] = forward_prior_check(model, cfg.dataset, min(args.num, cfg.asbm_check_num),
                                                    cfg.asbm_am_sim_steps, args.seed, cfg.asbm_sim_scheme,
                                                    cfg.asbm_sim_grid)
        if ckpt["vsmd"].get("asbm_stage") == 1:
            report["stage"] = 1
            return report  # no backward network yet
        model = asbm_sampling_model(model, sampler)
    steps = steps_for_nfe(args.nfe, sampler, getattr(model, "networks_per_call", 1)) if args.nfe else args.steps
    record = bool(args.metrics or args.trajectories or args.out)
    res = generate(model, args.num, steps, sampler, prior, data_var, args.seed, record=record, progress=args.progress)
    report.update(num=args.num, nfe=res.nfe, steps=steps, sampler=sampler,
                  paths="reverse SDE" if sampler in REVERSE_SDE_SAMPLERS else "probability-flow ODE")
    dataset = get_dataset(cfg.dataset)
    true = dataset.sample(max(args.num, 100_000), torch.Generator().manual_seed(2**20))
    if args.metrics:
        report.update(metrics_dict(res, true))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"x": res.x, "traj": res.traj, "ts": res.ts}, args.out)
        report["out"] = args.out
    title = f"{'ASBM ' if cfg.method == 'asbm' else ''}{cfg.sde}-{cfg.beta:g} on {cfg.dataset}"
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
