"""Quick start: train VSMD on exchange rates, evaluate CRPS-Sum, draw a fan chart.

    python examples/quickstart.py                       # ../shared/data if present, else download
    python examples/quickstart.py --data-dir /path/to/data --epochs 20 --out fan.png

Data: ``exchange_rate_nips`` from ``--data-dir`` (``<dir>/exchange_rate_nips/exchange_rate_nips.tar.gz``,
the archive GluonTS downloads, or the raw ``exchange_rate.txt.gz``); without it, GluonTS's
``get_dataset("exchange_rate_nips")`` downloads the data (needs internet).
"""

import argparse
import logging
import time
import warnings
from pathlib import Path

from gluonts.evaluation import make_evaluation_predictions

from vsmd_ts import VSMDEstimator
from vsmd_ts.timeseries.data import load_benchmark
from vsmd_ts.timeseries.metrics import evaluate_forecasts
from vsmd_ts.timeseries.plots import plot_fan_chart

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA) if DEFAULT_DATA.exists() else None)
    parser.add_argument("--sde", default="vsuld")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="quickstart_fan_chart.png")
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    # pandas deprecates Periods with business-day freq; GluonTS still uses them for 'B'
    warnings.filterwarnings("ignore", ".*(BDay|PeriodDtype\\[B\\]).*", FutureWarning)

    data = load_benchmark("exchange_rate_nips", args.data_dir)
    print(f"loaded {data.name} from {data.source}: {data.target_dim} series, {data.num_test_dates} test windows")
    estimator = VSMDEstimator(
        freq=data.freq,
        prediction_length=data.prediction_length,
        target_dim=data.target_dim,
        sde=args.sde,
        seed=args.seed,
        progress=True,
        trainer_kwargs={"max_epochs": args.epochs},
    )
    t0 = time.time()
    predictor = estimator.train(data.train)
    print(f"trained in {time.time() - t0:.0f} s")
    forecast_it, ts_it = make_evaluation_predictions(data.test, predictor, num_samples=100)
    forecasts, tss = list(forecast_it), list(ts_it)
    metrics = evaluate_forecasts(forecasts, tss)
    print("CRPS-Sum {CRPS-Sum:.4f}  CRPS {CRPS:.4f}  coverage 50% {coverage_50:.2f}  90% {coverage_90:.2f}".format(**metrics))
    path = plot_fan_chart(forecasts[-1], tss[-1], args.out, dims=(0, 1, 2, 3), title=f"VSMD ({args.sde}) on exchange_rate_nips, last test window")
    print(f"fan chart written to {path}")


if __name__ == "__main__":
    main()
