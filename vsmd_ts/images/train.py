"""Training loop of the image front end (Algorithm 1 of the paper on images).

One plain loop, run through Lightning Fabric so the same code uses a CPU, a
GPU or several GPUs (``devices=N``: DDP). Each step is a stage of Algorithm 1
given by :class:`~vsmd_ts.diffusion.VSMDObjective`: denoising score matching
of the U-Net (``"dsm"``/``"backward"``, A frozen) or a stochastic-approximation
step on the variational score A (``"forward"``, U-Net frozen, on backward
trajectories simulated at the start of each forward phase). One AdamW holds
both, with A on its own learning rate (paper: 3e-4 and 3e-6). An EMA of all
weights (U-Net and A) is kept for sampling, the U-Net gradient norm is clipped
at 1 (paper) and ``last.ckpt`` lets a run resume at the step it stopped.

Multi-GPU notes: only the U-Net is wrapped in DDP; the gradient of A (forward
stages, where each device simulates its own trajectories) is averaged across
devices explicitly, so A stays identical everywhere.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path
from typing import Optional

import torch
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from vsmd_ts.diffusion import AlternationSchedule, VariationalScoreUpdater, VSMDObjective, evaluation_loss, make_optimizer

from .config import RUNTIME_FIELDS, TrainConfig, build_model
from .data import ImageDataset, load_dataset
from .sampling import CHECKPOINT_FORMAT, generate, load_checkpoint, save_grid

__all__ = ["ema_multi_avg_fn", "evaluate_loss", "train"]

_EVAL_BATCH = 256


def evaluate_loss(net, sde, x0: torch.Tensor, seed: int = 1234) -> float:
    """DSM loss with fixed times and noise (see :func:`vsmd_ts.diffusion.evaluation_loss`)."""
    return evaluation_loss(sde, net, x0, seed=seed)


def _merge_resume(config: TrainConfig, saved: dict) -> TrainConfig:
    """The checkpoint's configuration with the run-control fields this call sets.

    ``config`` is the caller's unresolved configuration: fields it leaves at
    ``None`` (e.g. ``steps``) keep the checkpoint's values, so resuming needs
    only ``out`` and ``resume``.
    """
    merged = saved.copy()
    for k, v in config.to_dict().items():
        if k in RUNTIME_FIELDS and v is not None:
            merged[k] = v
    return TrainConfig.from_dict(merged).resolved()


def _resume_path(cfg: TrainConfig) -> Optional[Path]:
    if cfg.resume in (False, None, "", "false", "False"):
        return None
    if cfg.resume is True or cfg.resume in ("true", "True", "auto"):
        path = Path(cfg.out) / "last.ckpt"
        if not path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {path}; start without --resume or pass a path")
        return path
    return Path(cfg.resume)


def _lr_lambda(warmup: int):
    def f(step):
        return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0

    return f


class _EpochIndex:
    """Global batch indices of step ``k``: a seeded permutation per epoch, sliced per device."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int, world: int):
        if batch_size > n:
            raise ValueError(f"batch_size {batch_size} exceeds the dataset size {n}")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.steps_per_epoch = n // batch_size  # drop the last partial batch
        self._epoch, self._perm = None, None

    def __call__(self, step: int) -> torch.Tensor:
        epoch, k = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        idx = self._perm[k * self.batch_size : (k + 1) * self.batch_size]
        return idx[self.rank :: self.world]


def ema_multi_avg_fn(decay: float):
    """EMA update for :class:`torch.optim.swa_utils.AveragedModel` with a warm-up.

    The decay after ``n`` updates is ``min(decay, (1 + n) / (10 + n))``, so the
    copy of the initial weights fades quickly in short runs (with a fixed 0.999
    it would still weigh ``0.999 ** 3000 = 5%`` after 3000 steps).
    """

    @torch.no_grad()
    def update(ema_params, params, num_averaged):
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        if torch.is_floating_point(ema_params[0]):
            torch._foreach_lerp_(ema_params, params, 1.0 - d)
        else:  # integer buffers: keep the model's value
            for e, p in zip(ema_params, params):
                e.copy_(p)

    return update


def _a_stats(sde) -> dict:
    if not hasattr(sde, "A_v"):
        return {"A_v_mean": 0.0, "A_v_absmax": 0.0}
    A = sde.A_v.detach()
    return {"A_v_mean": float(A.mean()), "A_v_absmax": float(A.abs().max())}


def train(config: TrainConfig) -> dict:
    """Train (or resume) an image VSMD model; returns a summary dict.

    Writes to ``config.out``: ``last.ckpt`` (every ``ckpt_every`` steps and at
    the end), ``metrics.csv``, ``data.png`` (real images), ``samples.png``
    (EMA samples after training, Heun on the probability-flow ODE),
    ``summary.json`` and, with ``fid_inception`` and ``fid_num``, the FID.
    """
    ckpt_path = _resume_path(config)
    ckpt = load_checkpoint(ckpt_path) if ckpt_path is not None else None
    cfg = config.resolved() if ckpt is None else _merge_resume(config, ckpt["config"])
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    out = Path(cfg.out)
    # fail on a missing data set before starting devices
    data: ImageDataset = load_dataset(cfg.dataset, cfg.data_dir, cfg.image_size)
    if data.data_shape != cfg.data_shape():
        raise ValueError(f"dataset images are {data.data_shape}, the model expects {cfg.data_shape()}")
    pixel_mean, pixel_var = data.pixel_stats()
    data_var = float(pixel_var.mean())

    from lightning.fabric import Fabric  # lazy: keeps `import vsmd_ts.images` light

    fabric = Fabric(accelerator=cfg.accelerator, devices=cfg.devices, strategy=cfg.strategy, precision=cfg.precision)
    fabric.launch()
    rank, world, device = fabric.global_rank, fabric.world_size, fabric.device
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the number of devices ({world})")
    if fabric.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)

    data = data.to(device)

    torch.manual_seed(cfg.seed)  # same initial weights on every device
    model = build_model(cfg)  # ScoreModel(sde, net): what the EMA tracks
    sde, raw_net = model.sde, model.net
    if hasattr(raw_net, "set_data_stats"):  # Gaussian-residual preconditioning (before the EMA copy)
        raw_net.set_data_stats(pixel_mean, pixel_var)
    optimizer = make_optimizer(model, lr=cfg.lr, A_lr=cfg.A_lr, weight_decay=cfg.weight_decay)
    warm = _lr_lambda(cfg.lr_warmup)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, [warm if g.get("name") == "score" else (lambda s: 1.0) for g in optimizer.param_groups]
    )
    net = fabric.setup_module(raw_net)  # DDP on several devices
    sde.to(device)
    ema = AveragedModel(model, multi_avg_fn=ema_multi_avg_fn(cfg.ema_decay), use_buffers=True).to(device)
    fabric_optimizer = fabric.setup_optimizers(optimizer)

    step, train_seconds = 0, 0.0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        optimizer.load_state_dict(ckpt["optimizer"])  # after the move: state follows the parameters
        scheduler.load_state_dict(ckpt["scheduler"])
        step, train_seconds = int(ckpt["step"]), float(ckpt.get("train_seconds", 0.0))
        if fabric.is_global_zero:
            print(f"resumed from {ckpt_path} at step {step}")

    # noise and flips differ per device and continue deterministically after a resume
    torch.manual_seed(cfg.seed * 1_000_003 + 7919 * rank + step)
    flip_gen = torch.Generator().manual_seed(cfg.seed * 31 + rank + step)
    index = _EpochIndex(len(data), cfg.batch_size, cfg.seed, rank, world)

    objective = VSMDObjective(
        sde,
        net,
        AlternationSchedule(
            warmup=cfg.warmup,
            cooldown=cfg.cooldown,
            cycle=min(1.0, cfg.cycle_steps / cfg.steps),
            forward_fraction=cfg.forward_fraction,
        ),
        VariationalScoreUpdater(cfg.trajectory_steps, cfg.frozen_policy, prior="data"),
        num_trajectories=cfg.num_trajectories,
    )
    eval_x = data.batch(torch.arange(min(_EVAL_BATCH, len(data))), augment=False)
    summary = {"start_step": step, "global_rank": rank}
    if step == 0:
        summary["eval_loss_start"] = evaluate_loss(net, sde, eval_x)

    def save(path: Path, seconds: float):
        state = {
            "format": CHECKPOINT_FORMAT,
            "config": cfg.to_dict(),
            "step": step,
            "train_seconds": seconds,
            "data_var": data_var,
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
        }
        if fabric.is_global_zero:
            tmp = path.with_suffix(".tmp")
            torch.save(state, tmp)
            os.replace(tmp, path)  # never leave a half-written checkpoint
        fabric.barrier()

    def sample_grid(path: Path):
        if fabric.is_global_zero:
            imgs = generate(
                ema.module, cfg.num_samples, cfg.sample_steps, seed=cfg.seed, data_var=data_var, device=device
            )
            save_grid(imgs, path)
        fabric.barrier()

    if fabric.is_global_zero:
        save_grid(data.batch(torch.arange(min(cfg.num_samples, len(data))), augment=False).cpu(), out / "data.png")
        metrics_path = out / "metrics.csv"
        new_file = not metrics_path.exists() or step == 0
        metrics_file = open(metrics_path, "w" if new_file else "a", newline="")
        writer = csv.writer(metrics_file)
        if new_file:
            writer.writerow(["step", "stage", "loss", "lr", "A_v_mean", "A_v_absmax", "train_seconds"])

    sums: dict = {}
    bar = tqdm(
        total=cfg.steps, initial=step, desc=f"train {cfg.dataset}", disable=not (cfg.progress and fabric.is_global_zero)
    )
    A_params = [p for g in optimizer.param_groups if g.get("name") == "A" for p in g["params"]]
    net.train()
    stopped_early = False
    t0 = time.perf_counter()
    while step < cfg.steps:
        x0 = data.batch(index(step), generator=flip_gen)
        loss, stage = objective(step, cfg.steps, x0)
        fabric_optimizer.zero_grad(set_to_none=True)
        fabric.backward(loss)
        if stage == "forward":
            if world > 1:
                for p in A_params:  # each device simulated its own trajectories
                    if p.grad is not None:
                        p.grad = fabric.all_reduce(p.grad, reduce_op="mean")
        elif cfg.grad_clip:
            fabric.clip_gradients(net, fabric_optimizer, max_norm=cfg.grad_clip)
        fabric_optimizer.step()
        scheduler.step()
        ema.update_parameters(model)
        step += 1

        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"non-finite loss at step {step} ({stage}); lower the learning rate")
        s = sums.setdefault(stage, [0.0, 0])
        s[0] += value
        s[1] += 1
        elapsed = train_seconds + time.perf_counter() - t0
        if cfg.log_every and step % cfg.log_every == 0 and fabric.is_global_zero:
            stats = _a_stats(sde)
            for name, (total, count) in sums.items():
                writer.writerow(
                    [step, name, f"{total / count:.6g}", f"{scheduler.get_last_lr()[0]:.3g}",
                     f"{stats['A_v_mean']:.6g}", f"{stats['A_v_absmax']:.6g}", f"{elapsed:.1f}"]
                )
            metrics_file.flush()
            score_sums = [v for k, v in sums.items() if k != "forward"]
            if score_sums:
                total, count = map(sum, zip(*score_sums))
                bar.set_postfix(stage=stage, dsm_loss=f"{total / count:.4f}")
            sums = {}
        bar.update(1)

        if cfg.max_minutes is not None and time.perf_counter() - t0 >= 60.0 * cfg.max_minutes and step < cfg.steps:
            stopped_early = True
            break
        if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < cfg.steps:
            save(out / "last.ckpt", elapsed)
        if cfg.sample_every and step % cfg.sample_every == 0 and step < cfg.steps:
            sample_grid(out / "samples" / f"step_{step:07d}.png")
    bar.close()
    train_seconds += time.perf_counter() - t0
    save(out / "last.ckpt", train_seconds)

    summary.update(
        step=step,
        steps=cfg.steps,
        stopped_early=stopped_early,
        train_seconds=round(train_seconds, 1),
        eval_loss_end=evaluate_loss(net, sde, eval_x),
        ema_eval_loss_end=evaluate_loss(ema.module.net, ema.module.sde, eval_x),
        parameters=sum(p.numel() for p in raw_net.parameters()),
        device=str(device),
        world_size=world,
        **_a_stats(sde),
    )
    if fabric.is_global_zero:
        metrics_file.close()
    sample_grid(out / "samples.png")
    summary["samples"] = str(out / "samples.png")
    if (cfg.fid_num or cfg.fid_inception) and fabric.is_global_zero:
        summary.update(_fid_after_training(cfg, ema.module, data, data_var, device))
    if fabric.is_global_zero:
        summary["config"] = cfg.to_dict()
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _fid_after_training(cfg: TrainConfig, model, data: ImageDataset, data_var: float, device) -> dict:
    from .fid import FIDUnavailableError, compute_fid, load_inception

    try:
        inception = load_inception(cfg.fid_inception, device=device)
    except FIDUnavailableError as err:
        print(f"FID skipped: {err}")
        return {"fid": None, "fid_skipped": str(err)}
    num = cfg.fid_num or min(len(data), 10_000)
    fake = generate(
        model, num, cfg.sample_steps, seed=cfg.seed + 1, data_var=data_var, device=device, progress=cfg.progress
    )
    fid = compute_fid(data.iter_batches(), fake, inception, device=device, progress=cfg.progress)
    print(f"FID ({num} samples vs {len(data)} training images): {fid:.3f}")
    return {"fid": fid, "fid_num": num, "fid_reference": f"{cfg.dataset} train ({len(data)} images)"}
