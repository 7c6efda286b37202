"""Shared pieces of the peer scripts: JSON records in ``crps_sum.py``'s format, scored by the same scorer."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.append(str(HERE.parent.parent))  # the checkout's vsmd_ts when it is not installed
from crps_sum import record_header  # noqa: E402


def truth_frames(test, prediction_length: int):
    """Target frames ``(T, D)`` of grouped test windows, as ``make_evaluation_predictions`` yields them."""
    import warnings

    import pandas as pd

    frames = []
    for entry in test:
        target = np.asarray(entry["target"])
        with warnings.catch_warnings():  # pandas deprecates business-day Periods; GluonTS still uses them
            warnings.simplefilter("ignore", FutureWarning)
            index = pd.period_range(entry["start"], periods=target.shape[1], freq=entry["start"].freq)
        frames.append(pd.DataFrame(target.T, index=index))
    return frames


def forecasts_from_arrays(samples: np.ndarray, tss, prediction_length: int):
    """``SampleForecast`` objects from ``samples`` ``(windows, S, H, D)`` aligned with the truth frames."""
    from gluonts.model.forecast import SampleForecast

    return [SampleForecast(s.astype(np.float32), start_date=ts.index[-prediction_length]) for s, ts in zip(samples, tss)]


def split_windows(data, split: str, val_windows: int = 25, val_end=None) -> list:
    """The grouped windows of ``split`` that ``benchmarks/crps_sum.py`` forecasts: ``data.test``, or its
    ``validation_split`` (a CSV benchmark's own validation windows, else ``val_windows`` carved from training,
    ending at step ``val_end`` when given)."""
    if split == "test":
        return list(data.test)
    from crps_sum import validation_split

    return list(validation_split(data, val_windows, val_end)[1])


def make_record(model: str, seed: int, forecasts, tss, config: dict, times: dict, dataset="exchange_rate_nips",
                split="test", nfe_per_step=None, extra=None, quick=False) -> dict:
    """A record ``crps_sum.summarize`` understands (``sde`` holds the model name); ``quick``: a smoke run's."""
    from vsmd_ts.timeseries.metrics import evaluate_forecasts

    ev = {"sampler": config.get("sampler", "model"), "sampler_steps": nfe_per_step or 0, "nfe_per_step": nfe_per_step or 0,
          "sample_time_s": times["sample_time_s"], "sample_cpu_s": times.get("sample_cpu_s"),
          "num_samples": int(forecasts[0].samples.shape[0]), "windows": len(forecasts),
          "metrics": evaluate_forecasts(forecasts, tss)}
    record = record_header(f"{dataset}_{split}_{model}_seed{seed}" + ("_quick" if quick else ""), dataset, split, model,
                           seed, quick)
    record.update({
        "config": config, "epochs_completed": config.get("epochs"),
        "train_time_s": times["train_time_s"], "train_cpu_s": times.get("train_cpu_s"), "train_s_per_epoch": None,
        "A_mean": None, "A_min_max": None, "evaluations": [ev],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    })
    record.update(extra or {})
    return record
