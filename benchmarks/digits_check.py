"""Classifier check of a digits checkpoint (benchmarks/results_images.md).

An RBF SVC fitted on the 1797 real 8x8 digits (pixels in [-1, 1]) scores
generated images: the share whose top class probability exceeds 0.9, the
mean top probability, how many images fall in each class, and the median L2
distance to the nearest training image (memorisation check). The real
digits get the same numbers from 5-fold held-out predictions and
leave-one-out distances.

    python benchmarks/digits_check.py --checkpoint runs/digits/last.ckpt --num 1000 --seed 1 --out runs/digits/check.json

Samples come from the checkpoint's sampler (VSMD: Heun on the probability-flow
ODE; ASBM: Euler-Maruyama on the reverse SDE of the backward network). With
``--nfe`` the same numbers are added for each budget of network calls per
image (rows of ``nfe_sweep``), e.g. for an ASBM run::

    python benchmarks/digits_check.py --checkpoint runs/digits_asbm/last.ckpt --num 1000 --nfe 5 10 20 50 100

``--summary`` reads such result files (one per training seed) and prints a
markdown table: per model and NFE, the mean ± std over the files and the
range of each number::

    python benchmarks/digits_check.py --summary runs/digits_asbm*/check.json runs/digits_vsmd*/check.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.append(str(Path(__file__).resolve().parents[1]))  # a checkout without `pip install -e .` finds vsmd_ts


def scores(clf, images: np.ndarray, train: np.ndarray, proba: np.ndarray = None, leave_one_out: bool = False) -> dict:
    """Classifier and nearest-neighbour numbers of ``images`` ``(N, 64)`` against ``train`` ``(M, 64)``."""
    proba = clf.predict_proba(images) if proba is None else proba
    dist = torch.cdist(torch.as_tensor(images, dtype=torch.float64), torch.as_tensor(train, dtype=torch.float64))
    if leave_one_out:
        dist.fill_diagonal_(float("inf"))
    top = proba.max(1)
    counts = np.bincount(proba.argmax(1), minlength=10)
    return {"share_top_prob_gt_0.9": float((top > 0.9).mean()), "mean_top_prob": float(top.mean()),
            "per_class": counts.tolist(), "median_nn_l2": float(dist.min(1).values.median()),
            "min_nn_l2": float(dist.min(1).values.min())}


def _rows(result: dict) -> list:
    """``(model, sampler, nfe, scores)`` of every draw in one result file (model: method and SDE)."""
    model, sampler = result.get("model"), result.get("sampler")
    if model is None:  # files written before these fields were stored: the checkpoint knows
        from vsmd_ts.images import model_from_checkpoint
        from vsmd_ts.images.sampling import sampling_method

        cfg = model_from_checkpoint(result["checkpoint"])[1]
        model, sampler = f"{cfg.method} {cfg.sde}", sampling_method(cfg)[0]
    from vsmd_ts.training import nfe_per_step

    main_nfe = result.get("nfe", result["steps"] * nfe_per_step(sampler))
    return [(model, sampler, main_nfe, result["generated"])] + [
        (model, sampler, r["nfe"], r) for r in result.get("nfe_sweep", [])]


def summary_table(results: list) -> str:
    """Markdown table of result files: per model and NFE, mean ± std (min - max) over the files."""
    groups = {}
    for result in results:
        for model, sampler, nfe, row in _rows(result):
            groups.setdefault((model, sampler, nfe), []).append(row)

    def stat(values, scale, fmt):
        v = np.asarray(values, dtype=float) * scale
        if len(v) == 1:
            return f"{v[0]:{fmt}}"
        return f"{v.mean():{fmt}} ± {v.std(ddof=1):{fmt}} ({v.min():{fmt}} - {v.max():{fmt}})"

    lines = ["| model (sampler) | NFE | runs | share with top class probability > 0.9, % | mean top probability "
             "| median L2 to the nearest training digit | fewest images of a class |", "|---|---|---|---|---|---|---|"]
    for (model, sampler, nfe), rows in sorted(groups.items()):
        lines.append(f"| {model} ({sampler}) | {nfe} | {len(rows)} "
                     f"| {stat([r['share_top_prob_gt_0.9'] for r in rows], 100, '.1f')} "
                     f"| {stat([r['mean_top_prob'] for r in rows], 1, '.3f')} "
                     f"| {stat([r['median_nn_l2'] for r in rows], 1, '.2f')} "
                     f"| {stat([min(r['per_class']) for r in rows], 1, '.0f')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import cross_val_predict
    from sklearn.svm import SVC

    from vsmd_ts.images import generate, model_from_checkpoint
    from vsmd_ts.images.sampling import sampling_method
    from vsmd_ts.training import nfe_per_step, steps_for_nfe

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint")
    p.add_argument("--summary", nargs="+", metavar="JSON", help="summarise result files of this script instead")
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--steps", type=int, default=100, help="sampler steps (Heun; ASBM: Euler-Maruyama)")
    p.add_argument("--nfe", type=int, nargs="*", default=[],
                   help="also score samples drawn with these network calls per image (rows of nfe_sweep)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="JSON file for the results")
    args = p.parse_args(argv)
    if (args.checkpoint is None) == (args.summary is None):
        p.error("pass either --checkpoint (score a run) or --summary (tabulate result files)")
    torch.set_num_threads(args.threads)
    if args.summary:
        print(summary_table([json.loads(Path(f).read_text()) for f in args.summary]))
        return 0
    warnings.filterwarnings("ignore", message=".*probability.*deprecated", category=FutureWarning)  # sklearn 1.9

    real = load_digits().images.reshape(-1, 64) / 8.0 - 1.0  # [0, 16] -> [-1, 1], as the model sees them
    labels = load_digits().target
    clf = SVC(probability=True, random_state=0)
    held_out = cross_val_predict(SVC(probability=True, random_state=0), real, labels, cv=5, method="predict_proba")
    clf.fit(real, labels)
    result = {"checkpoint": str(args.checkpoint), "num": args.num, "steps": args.steps, "seed": args.seed,
              "real_cv_accuracy": float((held_out.argmax(1) == labels).mean()),
              "real": scores(clf, real, real, proba=held_out, leave_one_out=True)}

    model, cfg, data_var = model_from_checkpoint(args.checkpoint)
    sampler, prior = sampling_method(cfg)
    steps_of = {nfe: steps_for_nfe(nfe, sampler) for nfe in args.nfe}  # a bad budget fails before any sampling

    def draw(steps: int):
        t0 = time.perf_counter()
        images = generate(model, args.num, steps=steps, seed=args.seed, data_var=data_var, sampler=sampler, prior=prior)
        flat = images.reshape(len(images), -1).numpy().astype(np.float64)
        return round(time.perf_counter() - t0, 1), scores(clf, flat, real)

    result.update(model=f"{cfg.method} {cfg.sde}", sampler=sampler, nfe=args.steps * nfe_per_step(sampler))
    result["sample_seconds"], result["generated"] = draw(args.steps)
    if args.nfe:
        result["nfe_sweep"] = []
        for nfe, steps in steps_of.items():
            seconds, row = draw(steps)
            result["nfe_sweep"].append({"nfe": nfe, "steps": steps, "sample_seconds": seconds, **row})
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
