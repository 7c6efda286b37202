"""Quick start: train VSMD on exchange rates with the estimator's defaults, score CRPS-Sum, draw a fan chart.

    python examples/quickstart.py                       # embedded exchange_rate_nips, offline
    python examples/quickstart.py --data-dir /path/to/data --out fan.png

Data: ``exchange_rate_nips``, by default the copy shipped inside the package
(``vsmd_ts/timeseries/_data/``, no network needed); with ``--data-dir``, from
``<dir>/exchange_rate_nips/exchange_rate_nips.tar.gz`` (the archive GluonTS
downloads) or the raw ``exchange_rate.txt.gz``.

Environment: ``VSMD_TS_SMOKE=1`` shortens the run to a smoke test (1 epoch of
2 batches, 2 sampler steps, 10 sample paths; the numbers mean nothing), which is how the tests
run this script. ``OMP_NUM_THREADS`` / ``--threads`` sets torch's CPU threads.
"""

import argparse
import os
import time

import torch
from gluonts.evaluation import make_evaluation_predictions

from vsmd_ts import VSMDEstimator
from vsmd_ts.timeseries.data import load_benchmark
from vsmd_ts.timeseries.metrics import evaluate_forecasts
from vsmd_ts.timeseries.plots import plot_fan_chart


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="folder with exchange_rate_nips/ (default: the embedded copy)")
    parser.add_argument("--sde", default="vsuld")
    parser.add_argument("--epochs", type=int, default=None, help="default: the estimator's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: OMP_NUM_THREADS or torch's)")
    parser.add_argument("--out", default="runs/quickstart_fan_chart.png", help="fan chart (PNG)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    smoke = os.environ.get("VSMD_TS_SMOKE", "") not in ("", "0")

    data = load_benchmark("exchange_rate_nips", args.data_dir)
    print(f"loaded {data.name} from {data.source}: {data.target_dim} series, {data.num_test_dates} test windows")
    trainer_kwargs = {} if args.epochs is None else {"max_epochs": args.epochs}
    extra = {}
    if smoke:
        trainer_kwargs, extra = {"max_epochs": 1}, {"num_batches_per_epoch": 2, "sampler_steps": 2}
        print("VSMD_TS_SMOKE is set: 1 epoch of 2 batches, 2 sampler steps, 10 paths (a smoke test, not a result)")
    estimator = VSMDEstimator(
        freq=data.freq,
        prediction_length=data.prediction_length,
        target_dim=data.target_dim,
        sde=args.sde,
        seed=args.seed,
        trainer_kwargs=trainer_kwargs,
        **extra,
    )
    t0 = time.time()
    predictor = estimator.train(data.train)
    print(f"trained in {time.time() - t0:.0f} s")
    forecast_it, ts_it = make_evaluation_predictions(data.test, predictor, num_samples=10 if smoke else 100)
    forecasts, tss = list(forecast_it), list(ts_it)
    metrics = evaluate_forecasts(forecasts, tss)
    print("CRPS-Sum {CRPS-Sum:.4f}  CRPS {CRPS:.4f}  coverage 50% {coverage_50:.2f}  90% {coverage_90:.2f}".format(**metrics))
    title = f"VSMD ({args.sde}) on exchange_rate_nips, last test window"
    path = plot_fan_chart(forecasts[-1], tss[-1], args.out, dims=(0, 1, 2, 3), title=title)
    print(f"fan chart written to {path}")


if __name__ == "__main__":
    main()
