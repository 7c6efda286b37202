"""Where a model's forecasts differ from the random walk's, from the paths ``crps_sum.py --save-samples`` wrote.

    python benchmarks/sample_diagnostics.py runs/val8_default          # model and rw of the same run
    python benchmarks/sample_diagnostics.py runs/val9_wd_6071 --rw-from runs/val8_default   # rw of another run, same windows

For each model archive (``*_vsuld_seed<k>_<sampler>-<steps>.npz``, against ``*_rw_seed<k>.npz`` of the same folder):

* drift: how far the summed series' forecast mean moves from the last value by the horizon's end, in forecast
  standard deviations (mean and standard deviation over windows), and the exact CRPS-Sum of the paths re-centred
  on the last value;
* tails: the share of one-step increments beyond 10 random-walk standard deviations, the share of paths that hold
  one, and the exact CRPS-Sum with those paths replaced by draws from the others;
* spread: the model's interquartile range over the random walk's at the first and last step (median);
* serial dependence: the scores when each horizon step's increments are shuffled across the paths (jointly over the
  series), which keeps every step's distribution and removes any dependence along a path;
* drift alone: the random walk's paths shifted by the model's mean path (the walk's spread with the model's drift);
* pools: exact CRPS-Sum and energy score when a share ``w`` of the paths (``model share w``) comes from the model,
  the rest from the random walk.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from vsmd_ts.timeseries.metrics import crps_sum_exact, energy_score

TAIL = 10.0
MODEL_SHARES = (1.0, 0.75, 0.5, 0.4, 0.3, 0.25, 0.2, 0.1, 0.0)


def scores(samples: np.ndarray, truth: np.ndarray) -> tuple:
    """Exact CRPS-Sum and mean energy score of ``(W, S, H, D)`` paths against ``(W, H, D)`` truth."""
    return crps_sum_exact(list(samples), list(truth)), float(np.mean([energy_score(s, t) for s, t in zip(samples, truth)]))


def steps(samples: np.ndarray, last: np.ndarray) -> np.ndarray:
    """One-step increments of the paths, ``(W, S, H, D)``, the first from the last observed value."""
    start = np.broadcast_to(last[:, None, None], (samples.shape[0], samples.shape[1], 1, samples.shape[3]))
    return np.diff(np.concatenate([start, samples], axis=2), axis=2)


def iqr(samples: np.ndarray) -> np.ndarray:
    q25, q75 = np.quantile(samples, [0.25, 0.75], axis=1)
    return q75 - q25


def ratio(num: np.ndarray, den: np.ndarray, fill: float) -> np.ndarray:
    """``num / den`` where ``den > 0``, ``fill`` where the random walk gives no unit (a series it holds still)."""
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), fill)


def recentred(samples: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Paths ``(W, S, H, D)`` with their mean at every step moved to ``last`` ``(W, D)``."""
    return samples - (samples.mean(1, keepdims=True) - last[:, None, None])


def shuffled(samples: np.ndarray, last: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The paths rebuilt from each horizon step's increments permuted across paths (same permutation for all series)."""
    W, S, H, _ = samples.shape
    order = np.argsort(rng.random((W, S, H)), axis=1)
    return last[:, None, None] + np.take_along_axis(steps(samples, last), order[..., None], axis=1).cumsum(axis=2)


def diagnose(model: dict, rw: dict, rng: np.random.Generator) -> dict:
    s, truth, last = model["samples"], model["truth"], model["last"]
    r = rw["samples"]
    if not np.allclose(truth, rw["truth"]):
        raise ValueError("model and random-walk archives cover different windows")
    end = s.sum(-1)[:, :, -1]
    drift = (end.mean(1) - last.sum(-1)) / end.std(1)
    mean_drift = s.mean(1, keepdims=True) - last[:, None, None]  # (W, 1, H, D), from the last value
    # a series the random walk holds still (a pegged currency over its window) gives no unit: left out
    z = ratio(steps(s, last), np.sqrt((steps(r, last) ** 2).mean(1, keepdims=True)), 0.0)
    beyond = np.abs(z) > TAIL
    bad = beyond.any(axis=(2, 3))
    kept = np.stack([s[w, rng.choice(np.flatnonzero(~bad[w]), s.shape[1])] if (~bad[w]).any() else s[w]
                     for w in range(s.shape[0])])
    spread = ratio(iqr(s), iqr(r), np.nan)
    out = {
        "model": scores(s, truth), "drift_sd": float(drift.mean()), "drift_sd_windows": float(drift.std()),
        "centred": scores(recentred(s, last), truth), "tail_steps": float(beyond.mean()),
        "tail_paths": float(bad.mean()),
        "without_tail_paths": scores(kept, truth),
        "iqr_ratio_first_last": (float(np.nanmedian(spread[:, 0])), float(np.nanmedian(spread[:, -1]))),
        "steps_shuffled": scores(shuffled(s, last, rng), truth),
        "rw_plus_model_drift": scores(r + mean_drift, truth),
    }
    for w in MODEL_SHARES:
        k = int(round(w * s.shape[1]))
        out[f"model_share_{w:g}"] = scores(np.concatenate([s[:, :k], r[:, k:]], axis=1), truth)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="a crps_sum.py --out folder run with --save-samples and both a model and rw")
    p.add_argument("--sde", default="vsuld")
    p.add_argument("--rw-from", default=None, help="folder whose rw archives to use (same windows; default: folder)")
    args = p.parse_args(argv)
    rw_folder = Path(args.rw_from or args.folder)
    files = sorted((Path(args.folder) / "samples").glob(f"*_{args.sde}_seed*.npz"))
    if not files:
        raise SystemExit(f"no {args.sde} archives under {args.folder}/samples (run crps_sum.py with --save-samples)")
    rng = np.random.default_rng(0)
    rows = []
    for path in files:
        seed = int(re.search(r"_seed(\d+)", path.name).group(1))
        rw_path = next((rw_folder / "samples").glob(f"*_rw_seed{seed}.npz"), None)
        if rw_path is None:
            raise SystemExit(f"no random-walk archive for seed {seed} under {rw_folder}/samples")
        d = diagnose(dict(np.load(path)), dict(np.load(rw_path)), rng)
        rows.append(d)
        print(f"{path.stem.split(f'_{args.sde}_')[-1]}: CRPS-Sum exact {d['model'][0]:.5f} (re-centred {d['centred'][0]:.5f}, without tail paths "
              f"{d['without_tail_paths'][0]:.5f}), drift {d['drift_sd']:+.2f} sd (windows differ by {d['drift_sd_windows']:.2f}), steps beyond {TAIL:g} sd "
              f"{100 * d['tail_steps']:.2f} %, paths with one {100 * d['tail_paths']:.1f} %, IQR / rw "
              f"{d['iqr_ratio_first_last'][0]:.2f} -> {d['iqr_ratio_first_last'][1]:.2f}")
    keys = ["model", "centred", "without_tail_paths", "steps_shuffled", "rw_plus_model_drift"]
    for key in keys + [f"model_share_{w:g}" for w in MODEL_SHARES]:
        v = np.array([row[key] for row in rows])
        print(f"{key:20s} CRPS-Sum exact {v[:, 0].mean():.5f} ± {v[:, 0].std(ddof=1) if len(v) > 1 else 0:.5f}, "
              f"energy {v[:, 1].mean():.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
