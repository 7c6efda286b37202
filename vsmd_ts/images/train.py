"""Training of the image front end (Algorithm 1 of the paper on images).

The front end supplies the data (a seeded epoch permutation, sliced per
device, with random flips) and the U-Net; training runs on the shared
Lightning path (:func:`vsmd_ts.training.fit`), so the same code uses a CPU,
a GPU or several GPUs (``devices=N``: DDP). Each step is a stage of
Algorithm 1 given by :class:`~vsmd_ts.diffusion.VSMDObjective`. One AdamW
holds the U-Net and A, with A on its own learning rate (paper: 3e-4 and
3e-6); an EMA of all weights (with warm-up) is kept for sampling, the U-Net
gradient norm is clipped at 1 (paper) and ``last.ckpt`` (every
``ckpt_every`` steps, at the end, after ``max_minutes`` and on Ctrl-C) lets
a run resume at the step it stopped.

``method="asbm"`` trains ASBM (:func:`vsmd_ts.training.asbm.fit_asbm`) on a
base SDE without a learned A (default VP 0.1 -> 4, prior ``N(0, I)``):
stage 1, the forward control and corrector (U-Nets with
``asbm_forward_res_blocks`` blocks per level) by corrector and adjoint
matching until the prior check passes or ``asbm_stage1_steps`` end
(``OUT/stage1/last.ckpt``), then stage 2, the backward U-Net by bridge
matching on the frozen coupling for ``steps`` steps (``OUT/last.ckpt``);
samples come from the reverse SDE of the backward network (Euler-Maruyama).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from vsmd_ts.diffusion import A_summary, evaluation_loss

from .config import RUNTIME_FIELDS, TrainConfig, build_asbm_nets, build_model
from .data import ImageDataset, load_dataset
from .sampling import generate, load_checkpoint, sampling_method, save_grid

__all__ = ["train"]

_EVAL_BATCH = 256


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
        if not path.is_file() and (Path(cfg.out) / "stage1" / "last.ckpt").is_file():
            return Path(cfg.out) / "stage1" / "last.ckpt"  # ASBM with stage 1 under way
        if not path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {path}; start without --resume or pass a path")
        return path
    return Path(cfg.resume)


class _EpochBatches:
    """Batch of step ``k``: a seeded permutation per epoch, sliced per device, seeded flips."""

    def __init__(self, data: ImageDataset, batch_size: int, seed: int):
        if batch_size > len(data):
            raise ValueError(f"batch_size {batch_size} exceeds the dataset size {len(data)}")
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.steps_per_epoch = len(data) // batch_size  # drop the last partial batch
        self._epoch, self._perm = None, None

    def __call__(self, step: int, rank: int, world: int) -> torch.Tensor:
        epoch, k = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(len(self.data), generator=g)
        idx = self._perm[k * self.batch_size : (k + 1) * self.batch_size][rank::world]
        flips = torch.Generator().manual_seed((self.seed * 2**31 + step) * 64 + rank)
        return self.data.batch(idx, generator=flips)


def _fit_config(cfg: TrainConfig):
    from vsmd_ts.training import FitConfig

    return FitConfig(
        steps=cfg.steps, lr=cfg.lr, A_lr=cfg.A_lr, weight_decay=cfg.weight_decay, lr_warmup=cfg.lr_warmup,
        lr_schedule="constant", grad_clip=cfg.grad_clip, ema_decay=cfg.ema_decay, ema_warmup=True,
        warmup=cfg.warmup, cooldown=cfg.cooldown, cycle=min(1.0, cfg.cycle_steps / cfg.steps),
        forward_fraction=cfg.forward_fraction, num_trajectories=cfg.num_trajectories,
        trajectory_steps=cfg.trajectory_steps, frozen_policy=cfg.frozen_policy, prior="data", seed=cfg.seed,
        log_every=cfg.log_every, ckpt_every=cfg.ckpt_every, max_minutes=cfg.max_minutes,
        accelerator=cfg.accelerator, devices=cfg.devices, strategy=cfg.strategy, precision=cfg.precision,
        progress=cfg.progress,
    )


def train(config: TrainConfig) -> dict:
    """Train (or resume) an image VSMD model; returns a summary dict.

    Writes to ``config.out``: ``last.ckpt``, ``metrics.csv``, ``data.png``
    (real images), ``samples.png`` (EMA samples after training, Heun on the
    probability-flow ODE), ``summary.json`` and, with ``fid_inception`` and
    ``fid_num``, the FID.
    """
    from vsmd_ts.training import fit

    ckpt_path = _resume_path(config)
    ckpt = None
    if ckpt_path is not None:
        ckpt = load_checkpoint(ckpt_path, advice="train without --resume, or pass a checkpoint of "
                               "python -m vsmd_ts.images train")
    cfg = config.resolved() if ckpt is None else _merge_resume(config, ckpt["vsmd"]["image_config"])
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    out = Path(cfg.out)
    data: ImageDataset = load_dataset(cfg.dataset, cfg.data_dir, cfg.image_size)
    if data.data_shape != cfg.data_shape():
        raise ValueError(f"dataset images are {data.data_shape}, the model expects {cfg.data_shape()}")
    pixel_mean, pixel_var = data.pixel_stats()
    data_var = float(pixel_var.mean())

    torch.manual_seed(cfg.seed)  # same initial weights on every device
    if cfg.method == "asbm":
        if ckpt_path is not None and ckpt_path.parent.resolve() not in (out.resolve(), (out / "stage1").resolve()):
            raise ValueError(f"ASBM runs resume from their output folder ({out}); pass --resume without a path")
        return _train_asbm(cfg, data, data_var, resume=ckpt_path is not None)
    model = build_model(cfg)
    if hasattr(model.net, "set_data_stats"):  # Gaussian-residual preconditioning (before the EMA copy)
        model.net.set_data_stats(pixel_mean, pixel_var)
    eval_x = data.batch(torch.arange(min(_EVAL_BATCH, len(data))), augment=False)

    def sample_grid(step: int, ema_model) -> None:
        device = next(ema_model.parameters()).device
        save_grid(generate(ema_model, cfg.num_samples, cfg.sample_steps, seed=cfg.seed, data_var=data_var, device=device),
                  out / "samples" / f"step_{step:07d}.png")

    start_loss = evaluation_loss(model.sde, model.net, eval_x) if ckpt is None else None
    res = fit(model, _EpochBatches(data, cfg.batch_size, cfg.seed), _fit_config(cfg), out=out, resume=ckpt_path or False,
              meta={"image_config": cfg.to_dict(), "data_var": data_var}, eval_x=eval_x,
              every=[(cfg.sample_every, sample_grid)] if cfg.sample_every else [])
    if not res.trainer.is_global_zero:
        return {"global_rank": res.trainer.global_rank, "step": res.step}
    ema_model = res.ema_model.eval()
    device = next(ema_model.parameters()).device
    summary = {
        "start_step": res.start_step, "step": res.step, "steps": cfg.steps, "stopped_early": res.step < cfg.steps,
        "train_seconds": res.train_seconds, "global_rank": 0, "world_size": res.trainer.world_size, "device": str(device),
        "eval_loss_end": res.module.eval_loss(), "ema_eval_loss_end": res.module.eval_loss(ema_model),
        "parameters": sum(p.numel() for p in model.net.parameters()), **A_summary(model.sde),
    }
    if start_loss is not None:
        summary["eval_loss_start"] = start_loss
    return _finish(cfg, summary, ema_model, data, data_var, device, eval_x, {"data_var": data_var})


def _train_asbm(cfg: TrainConfig, data: ImageDataset, data_var: float, resume: bool) -> dict:
    """ASBM's two stages on images (see the module docstring); returns the summary.

    Writes ``OUT/stage1/last.ckpt``, ``OUT/last.ckpt``, ``metrics.csv`` of
    each, ``data.png``, ``samples.png`` (EMA backward network, reverse SDE,
    ``sample_steps`` Euler-Maruyama steps) and ``summary.json``: stage-1
    steps, whether the prior check passed, every check, stage-2 steps and
    seconds, the parameters of each network and the metric rows of both stages.
    """
    from vsmd_ts.training.asbm import ForwardNets, Stage1Schedule, fit_asbm

    out = Path(cfg.out)
    sde, control, corrector, score_net = build_asbm_nets(cfg)
    sampler, prior = sampling_method(cfg)
    check_x = data.batch(torch.arange(min(cfg.asbm_check_num, len(data))), augment=False)

    def sample_grid(step: int, ema_model) -> None:
        device = next(ema_model.parameters()).device
        save_grid(generate(ema_model, cfg.num_samples, cfg.sample_steps, seed=cfg.seed, device=device, sampler=sampler,
                           prior=prior), out / "samples" / f"step_{step:07d}.png")

    run = fit_asbm(
        ForwardNets(sde, control, corrector), score_net, _EpochBatches(data, cfg.batch_size, cfg.seed), _fit_config(cfg),
        Stage1Schedule(cfg.asbm_cm_steps, cfg.asbm_am_steps, cfg.asbm_refresh_every), cfg.asbm_stage1_steps,
        cfg.asbm_lr, check_x, am_sim_steps=cfg.asbm_am_sim_steps, cm_sim_steps=cfg.asbm_cm_sim_steps,
        buffer_size=cfg.asbm_buffer_size, check_batch=cfg.asbm_check_batch, out=out, resume=resume,
        meta={"image_config": cfg.to_dict(), "data_var": data_var}, front_end="vsmd_ts.images",
        every=[(cfg.sample_every, sample_grid)] if cfg.sample_every else [],
    )
    res = run.result
    ema_model = res.ema_model.eval()
    device = next(ema_model.parameters()).device
    summary = {
        "method": "asbm", "stage1_steps": run.stage1["steps"], "stage1_passed": run.stage1["passed"],
        "prior_checks": run.stage1["checks"], "start_step": res.start_step, "step": res.step, "steps": cfg.steps,
        "stopped_early": res.step < cfg.steps, "train_seconds": res.train_seconds, "device": str(device),
        "parameters": sum(p.numel() for p in score_net.parameters()),
        "forward_parameters": sum(p.numel() for p in list(control.parameters()) + list(corrector.parameters())),
        "history": run.history1 + [{"stage": 2, **{k: v for k, v in r.items() if v != ""}} for r in res.history],
    }
    return _finish(cfg, summary, ema_model, data, data_var, device, check_x, {"sampler": sampler, "prior": prior})


def _finish(cfg: TrainConfig, summary: dict, ema_model, data: ImageDataset, data_var: float, device, shown,
            sampling: dict) -> dict:
    """Write ``data.png`` (the first of ``shown``), ``samples.png`` (``generate`` with ``sampling``), the FID when
    asked for and ``summary.json`` (with the config); returns the summary."""
    out = Path(cfg.out)
    save_grid(shown[: cfg.num_samples], out / "data.png")
    # the final grid takes minutes on a CPU: show a bar rather than go silent
    save_grid(generate(ema_model, cfg.num_samples, cfg.sample_steps, seed=cfg.seed, device=device,
                       progress=cfg.progress, **sampling), out / "samples.png")
    summary["samples"] = str(out / "samples.png")
    if cfg.fid_num or cfg.fid_inception:
        summary.update(_fid_after_training(cfg, ema_model, data, data_var, device))
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
    sampler, prior = sampling_method(cfg)
    fake = generate(model, num, cfg.sample_steps, seed=cfg.seed + 1, data_var=data_var, device=device,
                    progress=cfg.progress, sampler=sampler, prior=prior)
    fid = compute_fid(data.iter_batches(), fake, inception, device=device, progress=cfg.progress)
    print(f"FID ({num} samples vs {len(data)} training images): {fid:.3f}")
    return {"fid": fid, "fid_num": num, "fid_reference": f"{cfg.dataset} train ({len(data)} images)"}
