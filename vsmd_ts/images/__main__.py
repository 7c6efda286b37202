"""Command line of the image front end.

Examples
--------
Train on scikit-learn's digits (CPU, minutes), then draw a grid::

    python -m vsmd_ts.images train --dataset digits --out runs/digits --threads 1
    python -m vsmd_ts.images sample --checkpoint runs/digits/last.ckpt --num 64 --steps 100 --out grid.png

ASBM on digits (VP 0.1 -> 4, prior N(0, I); stage 1 in OUT/stage1, stage 2 in OUT), then a grid
from the reverse SDE of the backward network with 20 network calls per image::

    python -m vsmd_ts.images train --method asbm --dataset digits --out runs/digits_asbm --threads 1
    python -m vsmd_ts.images sample --checkpoint runs/digits_asbm/last.ckpt --num 64 --nfe 20 --out grid.png

CIFAR-10 from the local python batches, on every visible GPU, with FID at the end::

    python -m vsmd_ts.images train --dataset cifar10 --data-dir ~/data/cifar-10-batches-py \\
        --out runs/cifar10 --devices -1 --fid-inception ~/weights/default_1.pt --fid-num 10000
    python -m vsmd_ts.images fid --checkpoint runs/cifar10/last.ckpt --inception ~/weights/default_1.pt \\
        --data-dir ~/data/cifar-10-batches-py --num 50000 --steps 125
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vsmd_ts.diffusion import SDE_NAMES, TRAJECTORY_STEPS, AlternationSchedule

from .config import METHODS, TrainConfig
from .data import DATASETS, CIFAR10NotFoundError
from .fid import INCEPTION_HELP, FIDUnavailableError


def _ints(text: str):
    return tuple(int(v) for v in text.replace(" ", "").split(",") if v)


def _devices(text: str):
    try:
        return int(text)
    except ValueError:
        return text  # "auto" or "0,1"


def _resume(text: str):
    return True if text in ("", "auto") else text


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vsmd_ts.images", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    _train_parser(sub)
    _sample_parser(sub)
    _fid_parser(sub)
    return p


def _train_parser(sub) -> None:
    t = sub.add_parser(
        "train",
        help="train a VSMD (or ASBM) image model",
        description="Train a VSMD (or ASBM) image model. Options left out take the dataset preset "
        "(vsmd_ts.images.config.PRESETS; for --method asbm ASBM_PRESETS first).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    t.add_argument("--method", choices=METHODS, default="vsmd",
                   help="vsmd: Algorithm 1; asbm: ASBM's two stages on the base --sde (OUT/stage1, then OUT)")
    t.add_argument("--dataset", choices=DATASETS, default="digits")
    t.add_argument("--data-dir", help="CIFAR-10: folder with data_batch_1..5 and test_batch (or its parent)")
    t.add_argument("--out", default="runs/images", help="output folder (checkpoints, metrics, grids)")
    t.add_argument("--image-size", type=int, help="digits: 8 (original) or larger (bilinear upsampling)")
    t.add_argument("--sde", "--base", dest="sde", choices=SDE_NAMES,
                   help="forward SDE; for asbm the base (vp, cld, uld) (default: vscld, asbm: vp)")
    t.add_argument("--beta", type=float,
                   help="speed of the forward SDE (default: the SDE's, 10; beta_max 20 for vp; asbm: 4)")
    t.add_argument("--damping-ratio", type=float, help="R for vsuld/uld (authors' CIFAR-10 code: 0.9)")
    t.add_argument("--precond", choices=("none", "gaussian"), default="none",
                   help="none: the U-Net predicts the velocity noise (the paper); gaussian: it learns the "
                        "residual of the exact noise prediction for per-pixel Gaussian data")
    t.add_argument("--base-channels", type=int)
    t.add_argument("--channel-mult", type=_ints, help="e.g. 1,2,2")
    t.add_argument("--num-res-blocks", type=int)
    t.add_argument("--attn-resolutions", type=_ints, help="e.g. 16 or 16,8")
    t.add_argument("--num-heads", type=int)
    t.add_argument("--dropout", type=float)
    t.add_argument("--steps", type=int, help="total optimiser steps")
    t.add_argument("--batch-size", type=int, help="global batch size")
    t.add_argument("--lr", type=float, help="U-Net learning rate")
    t.add_argument("--A-lr", dest="A_lr", type=float, help="learning rate of the variational score A")
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--lr-warmup", type=int, help="linear warm-up steps of the U-Net learning rate")
    t.add_argument("--grad-clip", type=float, default=1.0)
    t.add_argument("--ema-decay", type=float)
    t.add_argument("--warmup", type=float, help="fraction of steps before the first A update")
    t.add_argument("--cooldown", type=float, help="fraction of steps after the last A update")
    t.add_argument("--cycle-steps", type=int, help="backward + forward steps per cycle (paper 500 + 100)")
    t.add_argument("--forward-fraction", type=float, default=AlternationSchedule.forward_fraction)
    t.add_argument("--num-trajectories", type=int, help="backward trajectories per A phase")
    t.add_argument("--trajectory-steps", type=int, default=TRAJECTORY_STEPS)
    t.add_argument("--frozen-policy", choices=("score", "score_minus_forward"), default="score")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--accelerator", default="auto", help="auto, cpu, gpu, cuda, mps")
    t.add_argument("--devices", type=_devices, default=1, help="number of devices (-1: all) or a list like 0,1")
    t.add_argument("--strategy", default="auto", help="Lightning strategy (auto: DDP when devices > 1)")
    t.add_argument("--precision", default="32-true", help="32-true, bf16-mixed or 16-mixed")
    t.add_argument("--threads", dest="num_threads", type=int, help="torch CPU threads")
    t.add_argument("--max-minutes", type=float, help="stop and checkpoint after this much training time")
    t.add_argument(
        "--resume", nargs="?", const="auto", type=_resume, default=False,
        help="continue from OUT/last.ckpt, or from the given checkpoint",
    )
    t.add_argument("--ckpt-every", type=int)
    t.add_argument("--sample-every", type=int, default=0, help="write a sample grid every N steps (0: off)")
    t.add_argument("--sample-steps", type=int, help="Heun steps of the sample grids")
    t.add_argument("--num-samples", type=int, default=64)
    t.add_argument("--log-every", type=int)
    t.add_argument("--no-progress", dest="progress", action="store_false")
    t.add_argument("--fid-inception", help="local Inception file; computes FID after training")
    t.add_argument("--fid-num", type=int, default=0, help="samples for FID (0: all digits / 10000)")
    a = t.add_argument_group("asbm", "ASBM's stages (--method asbm); stage 2 runs --steps steps, "
                             "--num-res-blocks sizes the backward U-Net")
    a.add_argument("--asbm-forward-res-blocks", type=int, help="residual blocks per level of the control and corrector")
    a.add_argument("--asbm-stage1-steps", type=int, help="step budget of stage 1 (it ends at the first passed prior check)")
    a.add_argument("--asbm-cm-steps", type=int, help="steps of one corrector-matching stage")
    a.add_argument("--asbm-am-steps", type=int, help="steps of one adjoint-matching stage")
    a.add_argument("--asbm-refresh-every", type=int, help="steps between buffer refreshes (one data batch simulated each)")
    a.add_argument("--asbm-buffer-size", type=int)
    a.add_argument("--asbm-am-sim-steps", type=int, help="EM steps of the forward simulation (AM buffers, stage 2, prior check)")
    a.add_argument("--asbm-cm-sim-steps", type=int, help="EM steps for CM buffers")
    a.add_argument("--asbm-lr", type=float, help="constant learning rate of stage 1")
    a.add_argument("--asbm-check-num", type=int, help="data points of the prior check")
    a.add_argument("--asbm-check-batch", type=int, help="data points the prior check simulates at once")


def _sample_parser(sub) -> None:
    s = sub.add_parser("sample", help="draw a grid of samples from a checkpoint",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--num", type=int, default=64)
    s.add_argument("--steps", type=int, default=100,
                   help="sampler steps (Heun: 2 score evaluations each; asbm: Euler-Maruyama, one each)")
    s.add_argument("--nfe", type=int, help="network calls per image (sets --steps from the sampler)")
    s.add_argument("--out", default="grid.png", help="PNG grid")
    s.add_argument("--npz", help="also save the images as uint8 (N, H, W, C) in this .npz")
    s.add_argument("--nrow", type=int, help="images per row")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", type=int, default=256)
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    s.add_argument("--no-ema", dest="ema", action="store_false", help="use the raw instead of the EMA weights")
    s.add_argument("--threads", type=int, help="torch CPU threads")
    s.add_argument("--no-progress", dest="progress", action="store_false")


def _fid_parser(sub) -> None:
    f = sub.add_parser("fid", help="FID of a checkpoint's samples against its training data",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    f.add_argument("--checkpoint", required=True)
    f.add_argument("--inception", help="local Inception file (TorchScript, or torch-fidelity weights)")
    f.add_argument("--num", type=int, default=10_000, help="generated images")
    f.add_argument("--steps", type=int, default=100)
    f.add_argument("--data-dir", help="CIFAR-10 folder (default: the one used in training)")
    f.add_argument("--split", default="train", choices=("train", "test"), help="reference images")
    f.add_argument("--num-real", type=int, help="use only the first N reference images (default: all)")
    f.add_argument("--seed", type=int, default=1)
    f.add_argument("--batch-size", type=int, default=256)
    f.add_argument("--device", default="auto")
    f.add_argument("--no-ema", dest="ema", action="store_false")
    f.add_argument("--json", help="write the result to this JSON file")
    f.add_argument("--threads", type=int, help="torch CPU threads")
    f.add_argument("--no-progress", dest="progress", action="store_false")


def _device(name: str, threads=None):
    import torch

    if threads:
        torch.set_num_threads(threads)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _cmd_train(args) -> int:
    from .train import train

    fields = vars(args).copy()
    fields.pop("command")
    summary = train(TrainConfig(**fields))
    if summary.get("global_rank", 0) == 0:  # one report, also under DDP
        keys = ("stage1_steps", "stage1_passed", "step", "train_seconds", "eval_loss_start", "eval_loss_end", "A_v_mean",
                "samples", "fid")
        report = {k: summary[k] for k in keys if k in summary}
        if summary.get("prior_checks"):
            report["last_prior_check"] = summary["prior_checks"][-1]
        print(json.dumps(report, indent=2))
    return 0


def _cmd_sample(args) -> int:
    import numpy as np

    from vsmd_ts.training import steps_for_nfe

    from .data import to_uint8
    from .sampling import generate, load_checkpoint, model_from_checkpoint, sampling_method, save_grid

    device = _device(args.device, args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    if ckpt["vsmd"].get("asbm_stage") == 1:
        raise ValueError(f"{args.checkpoint} is ASBM's stage 1 (forward control and corrector), which has no backward "
                         "network; sample from OUT/last.ckpt once stage 2 has run")
    model, cfg, data_var = model_from_checkpoint(ckpt, ema=args.ema, device=device)
    sampler, prior = sampling_method(cfg)
    steps = steps_for_nfe(args.nfe, sampler) if args.nfe else args.steps
    images = generate(model, args.num, steps, seed=args.seed, batch_size=args.batch_size, data_var=data_var,
                      device=device, progress=args.progress, sampler=sampler, prior=prior)
    path = save_grid(images, args.out, nrow=args.nrow)
    name = "Euler-Maruyama steps of the reverse SDE" if sampler == "euler_maruyama" else "Heun steps"
    nfe = f", {args.nfe} network calls per image" if args.nfe else ""
    print(f"wrote {path} ({args.num} {cfg.dataset} {cfg.method} samples, {steps} {name}{nfe}, "
          f"{'EMA' if args.ema else 'raw'} weights)")
    if args.npz:
        np.savez_compressed(args.npz, images=to_uint8(images).permute(0, 2, 3, 1).numpy())
        print(f"wrote {args.npz}")
    return 0


def _cmd_fid(args) -> int:
    from .data import ImageDataset, load_dataset
    from .fid import compute_fid, load_inception
    from .sampling import generate, load_checkpoint, model_from_checkpoint, sampling_method

    if not args.inception:
        raise FIDUnavailableError(INCEPTION_HELP)
    device = _device(args.device, args.threads)
    inception = load_inception(args.inception, device=device)  # fail before sampling
    ckpt = load_checkpoint(args.checkpoint)
    model, cfg, data_var = model_from_checkpoint(ckpt, ema=args.ema, device=device)
    data = load_dataset(cfg.dataset, args.data_dir or cfg.data_dir, cfg.image_size, split=args.split)
    sampler, prior = sampling_method(cfg)
    fake = generate(model, args.num, args.steps, seed=args.seed, batch_size=args.batch_size,
                    data_var=data_var, device=device, progress=args.progress, sampler=sampler, prior=prior)
    if args.num_real:
        data = ImageDataset(data.images[: args.num_real], data.labels[: args.num_real], data.name)
    fid = compute_fid(data.iter_batches(), fake, inception, device=device, progress=args.progress)
    result = {"fid": fid, "num_samples": args.num, f"{sampler}_steps": args.steps, "reference": f"{cfg.dataset} {args.split}",
              "reference_size": len(data), "checkpoint_step": int(ckpt["global_step"]), "ema": args.ema,
              "inception": str(args.inception)}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"train": _cmd_train, "sample": _cmd_sample, "fid": _cmd_fid}[args.command](args)
    except (CIFAR10NotFoundError, FIDUnavailableError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
