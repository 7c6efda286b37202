"""DeepAR (gluonts.torch) on exchange_rate_nips or ETTh1, univariate, scored like the multivariate models.

One shared DeepAR model over the D series (each series a separate univariate item, with a
series-id embedding); each window's 100 paths per series are stacked into ``(100, H, D)``,
independent across series, which is how the TimeGrad paper scores univariate baselines with
CRPS-Sum. Runs in vsmd_ts's environment, same windows and scorer as ``benchmarks/crps_sum.py``::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/peers/deepar.py --data-dir /work/shared/data \\
        --seeds 0 1 2 3 4 --out runs/peers/deepar
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/peers/deepar.py --data-dir /work/shared/data \\
        --dataset etth1 --split test --seeds 0 1 2 3 4 --out runs/peers/deepar-etth1

Windows: ``load_benchmark``'s test windows, or with ``--split validation`` crps_sum.py's
validation windows (ETTh1's own 120 after its training range; for exchange_rate_nips the last
``--val-windows`` of the training range, trained on the rest). ETTh1 trains on rows ``[0, 8640)``
for both splits.

Configuration: GluonTS's defaults (2 x 40 LSTM, Student-t, mean scaling, lags and time features of
the data's frequency, "B" or "h", context = prediction length) with the VSMD benchmark's budget
(20 epochs x 50 batches of 32); not tuned. Writes ``<out>/runs/<name>.json`` records and a fan
chart of the last window.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np

from common import make_record, split_windows, truth_frames

CONFIG = {"epochs": 20, "num_batches_per_epoch": 50, "batch_size": 32, "num_layers": 2, "hidden_size": 40,
          "lr": 1e-3, "distribution": "StudentT", "scaling": True, "series_embedding": True}


def univariate(entry, length=None):
    """Split a grouped entry ``(D, T)`` into D univariate items (first ``length`` steps), with their series id."""
    target = np.asarray(entry["target"])
    length = target.shape[1] if length is None else length
    return [{"start": entry["start"], "target": target[d, :length], "feat_static_cat": [d], "item_id": str(d)}
            for d in range(target.shape[0])]


def make_estimator(freq: str, prediction_length: int, num_samples: int, epochs: int, workdir: str,
                   num_batches_per_epoch: int = CONFIG["num_batches_per_epoch"], **kwargs):
    """GluonTS's DeepAREstimator with :data:`CONFIG` on the CPU, checkpoints under ``workdir``; ``kwargs``: its
    covariate options (``num_feat_dynamic_real``, ``num_feat_static_cat``, ``cardinality``, ...)."""
    from gluonts.torch.model.deepar import DeepAREstimator

    return DeepAREstimator(
        freq=freq, prediction_length=prediction_length, num_layers=CONFIG["num_layers"],
        hidden_size=CONFIG["hidden_size"], lr=CONFIG["lr"], batch_size=CONFIG["batch_size"],
        num_batches_per_epoch=num_batches_per_epoch, num_parallel_samples=num_samples,
        trainer_kwargs={"max_epochs": epochs, "accelerator": "cpu", "enable_progress_bar": False,
                        "enable_model_summary": False, "logger": False, "default_root_dir": workdir},
        **kwargs,
    )


def train_seeded(estimator, train, seed: int):
    """``estimator.train(train)`` after seeding everything with ``seed``: ``(predictor, times)``, the training's wall
    and CPU seconds in ``times``."""
    import lightning

    lightning.seed_everything(seed, verbose=False)
    t0, c0 = time.perf_counter(), time.process_time()
    predictor = estimator.train(train)
    return predictor, {"train_time_s": time.perf_counter() - t0, "train_cpu_s": time.process_time() - c0}


def run_seed(data, seed: int, num_samples: int, epochs: int, workdir: str, train=None, windows=None):
    """Train on ``train`` (default ``data.train``) and forecast ``windows`` (default ``data.test``)."""
    import lightning
    from gluonts.dataset.common import ListDataset
    from gluonts.model.forecast import SampleForecast

    D, H = data.target_dim, data.prediction_length
    windows = data.test if windows is None else windows
    (train_entry,) = list(data.train if train is None else train)
    train = ListDataset(univariate(train_entry), freq=data.freq)
    estimator = make_estimator(data.freq, H, num_samples, epochs, workdir, num_feat_static_cat=1, cardinality=[D])
    predictor, times = train_seeded(estimator, train, seed)

    lightning.seed_everything(seed, verbose=False)
    t0, c0 = time.perf_counter(), time.process_time()
    tss = truth_frames(windows, H)
    forecasts = []
    for entry, ts in zip(windows, tss):
        T = np.asarray(entry["target"]).shape[1]
        items = ListDataset(univariate(entry, T - H), freq=data.freq)
        per_series = [f.samples for f in predictor.predict(items, num_samples=num_samples)]  # D x (S, H)
        forecasts.append(SampleForecast(np.stack(per_series, axis=-1).astype(np.float32), start_date=ts.index[-H]))
    times.update(sample_time_s=time.perf_counter() - t0, sample_cpu_s=time.process_time() - c0)
    return forecasts, tss, times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--dataset", choices=["exchange_rate_nips", "etth1"], default="exchange_rate_nips")
    p.add_argument("--split", choices=["test", "validation"], default="test",
                   help="windows to forecast (validation: crps_sum.py's, never the test windows)")
    p.add_argument("--val-windows", type=int, default=25,
                   help="exchange_rate_nips --split validation: windows carved from the training range")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--num-samples", type=int, default=100)
    p.add_argument("--epochs", type=int, default=CONFIG["epochs"], help="20 (smaller only for smoke runs)")
    p.add_argument("--max-windows", type=int, default=None,
                   help="forecast only the last N windows (smoke runs; records marked quick)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    import torch

    from vsmd_ts.timeseries.data import load_benchmark
    from vsmd_ts.timeseries.plots import plot_fan_chart

    torch.set_num_threads(1)
    warnings.simplefilter("ignore", FutureWarning)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    from crps_sum import validation_split

    data = load_benchmark(args.dataset, args.data_dir, download=False)
    train, windows = data.train, list(data.test)
    config = {**CONFIG, "epochs": args.epochs}
    if args.split == "validation":
        train, _ = validation_split(data, args.val_windows)
        windows = split_windows(data, "validation", args.val_windows)
        if data.validation is None:
            config["val_windows"] = args.val_windows
    if args.max_windows:
        windows = windows[-args.max_windows:]
        config["max_windows"] = args.max_windows
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        forecasts, tss, times = run_seed(data, seed, args.num_samples, args.epochs, str(out / "checkpoints"), train,
                                         windows)
        record = make_record("deepar", seed, forecasts, tss, config, times, dataset=args.dataset, split=args.split,
                             quick=bool(args.max_windows))
        (out / "runs" / f"{record['name']}.json").write_text(json.dumps(record, indent=1))
        m = record["evaluations"][0]["metrics"]
        print(f"deepar seed {seed}: CRPS-Sum {m['CRPS-Sum']:.4f} exact {m['CRPS-Sum-exact']:.4f} "
              f"energy {m['energy_score']:.3f} cov90 {m['coverage_90']:.2f} / sum {m['coverage_90_sum']:.2f} "
              f"train CPU {times['train_cpu_s']:.0f} s", flush=True)
        if seed == args.seeds[0]:
            plot_fan_chart(forecasts[-1], tss[-1], out / "figures" / f"{record['name']}.png", dims=(0, 1, 2, 3),
                           title=f"DeepAR (univariate) on {args.dataset} ({args.split}), seed {seed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
