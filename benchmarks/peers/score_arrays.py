"""Score forecasts written as arrays (``timegrad.py``'s ``.npz``) with vsmd_ts's ``evaluate_forecasts``.

Runs in vsmd_ts's environment. The truth comes from vsmd_ts's own loader (same windows as
``benchmarks/crps_sum.py``: ``load_benchmark`` and, for ``--split validation``, its
``validation_split``), for the dataset and split the arrays' ``meta`` names (exchange_rate_nips
test when it names none); the arrays' own copy of the truth and their ``window_ends`` (each
window's end as a row count) must agree with it, so a window mismatch fails loudly instead of
scoring the wrong steps::

    python benchmarks/peers/score_arrays.py runs/peers/timegrad/timegrad_seed*.npz \\
        --data-dir /work/shared/data --out runs/peers/timegrad
    python benchmarks/peers/score_arrays.py runs/peers/timegrad-etth1/timegrad_etth1_test_seed*.npz \\
        --data-dir /work/shared/data --out runs/peers/timegrad-etth1

Writes ``<out>/runs/<name>.json`` records (``sde`` = the model name) and a fan chart of the
first file's last window.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from common import forecasts_from_arrays, make_record, split_windows, truth_frames


def score_file(path: Path, data) -> tuple:
    """Record, forecasts and truth frames of one ``.npz``; ``data`` is ``load_benchmark`` of its dataset."""
    z = np.load(path)
    meta = json.loads(str(z["meta"]))
    dataset, split = meta.get("dataset", "exchange_rate_nips"), meta.get("split", "test")
    if dataset != data.name:
        raise ValueError(f"{path}: arrays of {dataset}, scored against {data.name}")
    H = data.prediction_length
    windows = split_windows(data, split, meta.get("val_windows", 25))
    if meta.get("max_windows"):  # a smoke run's last windows
        windows = windows[-meta["max_windows"]:]
    ends = [int(np.asarray(e["target"]).shape[1]) for e in windows]
    if "window_ends" in meta and list(meta["window_ends"]) != ends:
        raise ValueError(f"{path}: its windows differ from vsmd_ts's {split} windows (window ends "
                         f"{meta['window_ends'][:3]}... vs {ends[:3]}...)")
    tss = truth_frames(windows, H)
    truth = np.stack([ts.to_numpy()[-H:] for ts in tss])
    if z["samples"].shape[0] != len(tss) or not np.allclose(z["truth"], truth, rtol=1e-5, atol=1e-6):
        raise ValueError(f"{path}: its windows differ from vsmd_ts's {split} windows")
    forecasts = forecasts_from_arrays(z["samples"], tss, H)
    times = {k: meta[k] for k in ("train_time_s", "train_cpu_s", "sample_time_s", "sample_cpu_s")}
    config = {**meta["config"], **meta["trainer"], "versions": meta["versions"], "num_parameters": meta["num_parameters"]}
    if "window_ends" in meta:
        config["window_ends_checked"] = True
    record = make_record(meta["model"].lower(), meta["seed"], forecasts, tss, config, times, dataset=dataset,
                         split=split, nfe_per_step=meta["nfe_per_step"], quick=bool(meta.get("max_windows")))
    return record, forecasts, tss


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)

    from vsmd_ts.timeseries.data import load_benchmark
    from vsmd_ts.timeseries.plots import plot_fan_chart

    loaded = {}
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(sorted(args.files)):
        with np.load(path) as z:
            dataset = json.loads(str(z["meta"])).get("dataset", "exchange_rate_nips")
        if dataset not in loaded:
            loaded[dataset] = load_benchmark(dataset, args.data_dir, download=False)
        record, forecasts, tss = score_file(path, loaded[dataset])
        (args.out / "runs" / f"{record['name']}.json").write_text(json.dumps(record, indent=1))
        m = record["evaluations"][0]["metrics"]
        print(f"{record['sde']} seed {record['seed']}: CRPS-Sum {m['CRPS-Sum']:.4f} exact {m['CRPS-Sum-exact']:.4f} "
              f"energy {m['energy_score']:.3f} cov90 {m['coverage_90']:.2f} / sum {m['coverage_90_sum']:.2f}")
        if i == 0:
            plot_fan_chart(forecasts[-1], tss[-1], args.out / "figures" / f"{record['name']}.png", dims=(0, 1, 2, 3),
                           title=f"{record['sde']} on {record['dataset']} ({record['split']}), seed {record['seed']}, "
                                 f"{record['evaluations'][0]['nfe_per_step']} NFE/step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
