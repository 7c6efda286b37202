"""Does an increments model's drift earn its place? Scores saved paths as sampled, symmetrised and re-centred.

    python benchmarks/drift_check.py runs/exch_mart_6071 runs/exch_mart_5321 runs/exch_mart_4571 \\
        runs/exch_mart_3821 runs/exch_mart_3071 --data-dir ../shared/data

Each folder is a ``crps_sum.py --save-samples`` run with a model (``--sde``, default vsuld) and ``rw`` on the same
windows and seeds, one fold per folder. Every variant is scored by ``evaluate_forecasts`` on the run's own windows
(rebuilt from the records; the archives' truth must agree with them):

* ``model``: the paths as sampled;
* ``symmetrised``: each path reflected about the last observed value with an independent random sign
  (``last + d`` or ``last - d``, ``d`` the path's deviation from it): the forecast made symmetric about the last
  value, so its mean stays there (no drift) and its spread is kept;
* ``re-centred``: every path shifted by the paths' mean deviation at each step (the sample's drift removed);
* ``rw``: the run's Gaussian random walk.

Prints per fold the seed means of CRPS-Sum and energy and the ratio of each variant's mean CRPS-Sum to the walk's,
then the worst-fold and mean ratios over the folds. ``--json`` writes the per-seed scores.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers.common import forecasts_from_arrays, split_windows, truth_frames  # noqa: E402
from sample_diagnostics import recentred  # noqa: E402

VARIANTS = ("model", "symmetrised", "re-centred", "rw")


def symmetrised(samples: np.ndarray, last: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Paths ``(W, S, H, D)`` reflected about ``last`` ``(W, D)``, one random sign per path."""
    signs = rng.choice([-1.0, 1.0], size=samples.shape[:2] + (1, 1))
    return last[:, None, None] + signs * (samples - last[:, None, None])


def fold_frames(record: dict, data_dir: str):
    """Truth frames of the windows a ``crps_sum.py`` record was scored on."""
    from vsmd_ts.timeseries.data import load_benchmark

    data = load_benchmark(record["dataset"], data_dir, download=False)
    windows = split_windows(data, record["split"], record["val_windows"], record["val_end"])
    return truth_frames(windows, data.prediction_length), data.prediction_length


def score(samples: np.ndarray, tss, H: int) -> tuple:
    from vsmd_ts.timeseries.metrics import evaluate_forecasts

    m = evaluate_forecasts(forecasts_from_arrays(samples, tss, H), tss)
    return float(m["CRPS-Sum"]), float(m["energy_score"])


def check_fold(folder: Path, sde: str, data_dir: str, seed: int = 0) -> dict:
    """``{variant: [(CRPS-Sum, energy) per training seed]}`` for one ``crps_sum.py`` output folder."""
    files = sorted((folder / "samples").glob(f"*_{sde}_seed*.npz"))
    if not files:
        raise SystemExit(f"no {sde} archives under {folder}/samples (run crps_sum.py with --save-samples)")
    record = json.loads(next((folder / "runs").glob("*.json")).read_text())
    tss, H = fold_frames(record, data_dir)
    truth = np.stack([ts.to_numpy()[-H:] for ts in tss])
    out = {v: [] for v in VARIANTS}
    for path in files:
        k = int(re.search(r"_seed(\d+)", path.name).group(1))
        rw_path = next((q for q in (folder / "samples").glob(f"*_rw_seed{k}*.npz")
                        if re.search(rf"_rw_seed{k}(_|\.npz)", q.name)), None)
        if rw_path is None:
            raise SystemExit(f"no random-walk archive for seed {k} under {folder}/samples")
        model, rw = np.load(path), np.load(rw_path)
        for z in (model, rw):
            if z["samples"].shape[0] != len(tss) or not np.allclose(z["truth"], truth, rtol=1e-5, atol=1e-6):
                raise SystemExit(f"{path}: its windows differ from the record's "
                                 f"({record['split']}, end {record['val_end']})")
        s, last = model["samples"], model["last"]
        rng = np.random.default_rng([seed, k])
        paths = {"model": s, "symmetrised": symmetrised(s, last, rng), "re-centred": recentred(s, last),
                 "rw": rw["samples"]}
        for v in VARIANTS:
            out[v].append(score(paths[v], tss, H))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", help="crps_sum.py --save-samples output folders, one fold each")
    p.add_argument("--sde", default="vsuld")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0, help="seed of the random signs")
    p.add_argument("--json", default=None, help="write the per-seed scores here")
    args = p.parse_args(argv)
    folds = {str(f): check_fold(Path(f), args.sde, args.data_dir, args.seed) for f in args.folders}
    ratios = {v: [] for v in VARIANTS}
    print("| fold | " + " | ".join(f"{v}: CRPS-Sum / energy / ratio" for v in VARIANTS) + " |")
    print("|---" * (len(VARIANTS) + 1) + "|")
    for name, fold in folds.items():
        walk = np.mean([c for c, _ in fold["rw"]])
        cells = []
        for v in VARIANTS:
            crps, energy = np.array(fold[v]).T
            ratios[v].append(crps.mean() / walk)
            cells.append(f"{crps.mean():.5f} ± {crps.std(ddof=1) if len(crps) > 1 else 0:.5f} / {energy.mean():.4f} / "
                         f"{ratios[v][-1]:.3f}")
        print(f"| {Path(name).name} | " + " | ".join(cells) + " |")
    for v in VARIANTS:
        energy = np.mean([e for fold in folds.values() for _, e in fold[v]])
        print(f"{v:12s} worst-fold ratio {max(ratios[v]):.3f}, mean ratio {np.mean(ratios[v]):.3f}, "
              f"mean energy {energy:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(folds, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
