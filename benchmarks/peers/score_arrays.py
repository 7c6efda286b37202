"""Score forecasts written as arrays (``timegrad.py``'s ``.npz``) with vsmd_ts's ``evaluate_forecasts``.

Runs in vsmd_ts's environment. The truth comes from vsmd_ts's own loader (same windows as
``benchmarks/crps_sum.py``); the arrays' own copy of the truth must agree with it, so a window
mismatch fails loudly instead of scoring the wrong steps::

    python benchmarks/peers/score_arrays.py runs/peers/timegrad/timegrad_seed*.npz \\
        --data-dir /work/shared/data --out runs/peers/timegrad

Writes ``<out>/runs/<name>.json`` records (``sde`` = the model name) and a fan chart of the
first file's last window.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from common import forecasts_from_arrays, make_record, truth_frames


def score_file(path: Path, data) -> tuple:
    z = np.load(path)
    meta = json.loads(str(z["meta"]))
    H = data.prediction_length
    tss = truth_frames(data.test, H)
    truth = np.stack([ts.to_numpy()[-H:] for ts in tss])
    if z["samples"].shape[0] != len(tss) or not np.allclose(z["truth"], truth, rtol=1e-5, atol=1e-6):
        raise ValueError(f"{path}: its windows differ from vsmd_ts's test windows")
    forecasts = forecasts_from_arrays(z["samples"], tss, H)
    times = {k: meta[k] for k in ("train_time_s", "train_cpu_s", "sample_time_s", "sample_cpu_s")}
    config = {**meta["config"], **meta["trainer"], "versions": meta["versions"], "num_parameters": meta["num_parameters"]}
    record = make_record(meta["model"].lower(), meta["seed"], forecasts, tss, config, times,
                         nfe_per_step=meta["nfe_per_step"])
    return record, forecasts, tss


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)

    from vsmd_ts.timeseries.data import load_benchmark
    from vsmd_ts.timeseries.plots import plot_fan_chart

    data = load_benchmark("exchange_rate_nips", args.data_dir, download=False)
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(sorted(args.files)):
        record, forecasts, tss = score_file(path, data)
        (args.out / "runs" / f"{record['name']}.json").write_text(json.dumps(record, indent=1))
        m = record["evaluations"][0]["metrics"]
        print(f"{record['sde']} seed {record['seed']}: CRPS-Sum {m['CRPS-Sum']:.4f} exact {m['CRPS-Sum-exact']:.4f} "
              f"energy {m['energy_score']:.3f} cov90 {m['coverage_90']:.2f} / sum {m['coverage_90_sum']:.2f}")
        if i == 0:
            plot_fan_chart(forecasts[-1], tss[-1], args.out / "figures" / f"{record['name']}.png", dims=(0, 1, 2, 3),
                           title=f"{record['sde']} on exchange_rate_nips (test), seed {record['seed']}, "
                                 f"{record['evaluations'][0]['nfe_per_step']} NFE/step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
