"""TimeGrad (pytorchts 0.6.0, paper configuration) on exchange_rate_nips: forecasts written as arrays.

Runs in TimeGrad's own environment (``make_timegrad_venv.sh``), never in vsmd_ts's; the arrays are
scored in vsmd_ts's environment by ``score_arrays.py`` with the project's ``evaluate_forecasts``,
so every model goes through the same scorer::

    bash benchmarks/peers/make_timegrad_venv.sh /tmp/vsmd-timegrad-venv
    OMP_NUM_THREADS=1 nice -n 10 /tmp/vsmd-timegrad-venv/bin/python benchmarks/peers/timegrad.py \\
        --data-dir /work/shared/data --seed 0 --out runs/peers/timegrad

Writes ``<out>/timegrad_seed<k>.npz`` with ``samples`` ``(windows, S, H, D)``, ``truth``
``(windows, H, D)`` (to check the windows against vsmd_ts's loader), ``start`` (ISO dates of the
first forecast step) and a JSON ``meta`` (configuration, wall and CPU times, versions).
"""

from __future__ import annotations

import argparse
import json
import random
import tarfile
import time
from pathlib import Path

import numpy as np

PAPER = {  # the TimeGrad paper's exchange_rate_nips setting (see shared/docs/peers.md)
    "target_dim": 8, "prediction_length": 30, "context_length": 30, "cell_type": "GRU", "input_size": 28,
    "freq": "B", "loss_type": "l2", "scaling": True, "diff_steps": 100, "beta_end": 0.1, "beta_schedule": "linear",
}
TRAINER = {"epochs": 20, "batch_size": 64, "num_batches_per_epoch": 100, "learning_rate": 1e-3}


def read_archive(path: Path):
    """Train and test JSON lines of a GluonTS archive (start, target only)."""
    parts = {"train": [], "test": []}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            split = Path(member.name).parent.name
            if member.isfile() and split in parts and member.name.endswith(".json"):
                for line in tar.extractfile(member):
                    if line.strip():
                        e = json.loads(line)
                        parts[split].append({"start": e["start"], "target": e["target"]})
    return parts["train"], parts["test"]


def seed_all(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="folder with exchange_rate_nips/exchange_rate_nips.tar.gz")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-samples", type=int, default=100)
    p.add_argument("--epochs", type=int, default=TRAINER["epochs"], help="paper: 20 (smaller only for smoke runs)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    import gluonts
    import pts
    import torch
    from gluonts.dataset.common import ListDataset
    from gluonts.dataset.multivariate_grouper import MultivariateGrouper
    from gluonts.evaluation.backtest import make_evaluation_predictions
    from pts import Trainer
    from pts.model.time_grad import TimeGradEstimator

    torch.set_num_threads(1)
    name = "exchange_rate_nips"
    train, test = read_archive(Path(args.data_dir) / name / f"{name}.tar.gz")
    D, windows = len(train), len(test) // len(train)
    train_ds = MultivariateGrouper(max_target_dim=D)(ListDataset(train, freq="B"))
    # gluonts 0.9's test grouper builds a ragged array numpy >= 1.24 refuses; the archive's test lines are
    # window-major with one common start, so stack each window's D lines directly (what the grouper does)
    test_ds = ListDataset(
        [{"start": test[k * D]["start"], "target": np.array([e["target"] for e in test[k * D:(k + 1) * D]], np.float32),
          "feat_static_cat": [0]} for k in range(windows)],
        freq="B", one_dim_target=False,
    )

    trainer = Trainer(device="cpu", **{**TRAINER, "epochs": args.epochs})
    estimator = TimeGradEstimator(trainer=trainer, **PAPER)
    seed_all(args.seed)
    t0, c0 = time.perf_counter(), time.process_time()
    # torch 2.x rejects prefetch_factor without workers
    predictor = estimator.train(train_ds, num_workers=0, prefetch_factor=None)
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0

    seed_all(args.seed)
    t0, c0 = time.perf_counter(), time.process_time()
    f_it, t_it = make_evaluation_predictions(test_ds, predictor, num_samples=args.num_samples)
    forecasts, tss = list(f_it), list(t_it)
    sample_s, sample_cpu = time.perf_counter() - t0, time.process_time() - c0
    H = PAPER["prediction_length"]
    samples = np.stack([f.samples for f in forecasts]).astype(np.float32)  # (W, S, H, D)
    truth = np.stack([ts.to_numpy()[-H:] for ts in tss]).astype(np.float32)
    meta = {
        "model": "TimeGrad", "seed": args.seed, "config": PAPER, "trainer": {**TRAINER, "epochs": args.epochs},
        "num_parameters": sum(p.numel() for p in predictor.prediction_net.parameters()),
        "train_time_s": train_s, "train_cpu_s": train_cpu, "sample_time_s": sample_s, "sample_cpu_s": sample_cpu,
        "nfe_per_step": PAPER["diff_steps"], "versions": {"pytorchts": getattr(pts, "__version__", "0.6.0"),
                                                          "gluonts": gluonts.__version__, "torch": torch.__version__},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / f"timegrad_seed{args.seed}.npz", samples=samples, truth=truth,
                        start=np.array([str(f.start_date) for f in forecasts]), meta=json.dumps(meta))
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
