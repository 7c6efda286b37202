"""Train VSMD on scikit-learn's 8x8 digits on the CPU and write a sample grid.

Same run as the command line::

    python -m vsmd_ts.images train --dataset digits --out runs/digits --threads 1 --seed 0
    python -m vsmd_ts.images sample --checkpoint runs/digits/last.ckpt --num 64 --steps 100 --out digits_grid.png

The ``digits`` preset (vsmd_ts.images.config.PRESETS) is a 1.1M-parameter
U-Net trained for 3000 steps of batch 64 with critical damping (VSCLD); on one
thread of a 2-core x86-64 CPU that took 10.6 minutes (20.6 minutes while
other jobs shared the CPU), see benchmarks/results_images.md. Pass ``--steps``
to trade time for quality.
"""

import argparse

import torch

from vsmd_ts.images import TrainConfig, generate, model_from_checkpoint, save_grid, train


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/digits")
    p.add_argument("--steps", type=int, default=None, help="default: the digits preset (3000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", default="digits_grid.png")
    args = p.parse_args()

    torch.set_num_threads(1)  # small convolutions: one thread is fastest on a shared CPU
    summary = train(TrainConfig(dataset="digits", out=args.out, steps=args.steps, seed=args.seed))
    print(f"trained {summary['step']} steps in {summary['train_seconds']:.0f} s; "
          f"DSM loss {summary['eval_loss_start']:.3f} -> {summary['eval_loss_end']:.3f}")

    # EMA weights, 100 Heun steps on the probability-flow ODE (200 score evaluations per image)
    model, _, data_var = model_from_checkpoint(f"{args.out}/last.ckpt")
    images = generate(model, 64, steps=100, seed=args.seed, data_var=data_var, progress=True)
    print(f"wrote {save_grid(images, args.grid)}")


if __name__ == "__main__":
    main()
