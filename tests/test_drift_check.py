import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import drift_check  # noqa: E402


def test_symmetrised_paths_keep_their_distance_to_the_last_value_and_lose_the_drift():
    rng = np.random.default_rng(0)
    W, S, H, D = 3, 4000, 5, 2
    last = rng.normal(size=(W, D))
    samples = last[:, None, None] + (rng.normal(size=(W, S, H, D)) + 0.7).cumsum(2)  # drift 0.7 per step
    out = drift_check.symmetrised(samples, last, np.random.default_rng(1))
    dev, new = samples - last[:, None, None], out - last[:, None, None]
    # each path is itself or its mirror image, the whole path at once
    same = np.isclose(new, dev).all(axis=(2, 3))
    assert (same | np.isclose(new, -dev).all(axis=(2, 3))).all() and 0.45 < same.mean() < 0.55
    # the drift (3.5 at the last step, sd about 2.2) is gone within Monte Carlo error; the spread about the last
    # value is kept
    assert np.abs(new.mean(1)).max() < 0.2 and dev.mean(1)[:, -1].min() > 3.0
    np.testing.assert_allclose((new ** 2).mean(1), (dev ** 2).mean(1))


def test_recentred_paths_have_their_mean_at_the_last_value_and_keep_their_spread():
    rng = np.random.default_rng(2)
    last = rng.normal(size=(2, 3))
    samples = last[:, None, None] + (rng.normal(size=(2, 50, 4, 3)) + 1.0).cumsum(2)
    out = drift_check.recentred(samples, last)
    np.testing.assert_allclose(out.mean(1), np.broadcast_to(last[:, None], (2, 4, 3)), atol=1e-12)
    np.testing.assert_allclose(out.std(1), samples.std(1))


def _fake_run(folder: Path, tss, H: int, val_end: int, drift: float, seeds=(0, 1)):
    """A crps_sum.py --save-samples folder: a drifting 'model' and an undrifted walk on the given windows."""
    truth = np.stack([ts.to_numpy()[-H:] for ts in tss])
    last = np.stack([ts.to_numpy()[-H - 1] for ts in tss])
    sd = np.stack([np.abs(np.diff(ts.to_numpy()[:-H], axis=0)).mean(0) for ts in tss])[:, None, None]
    (folder / "samples").mkdir(parents=True)
    (folder / "runs").mkdir()
    rng = np.random.default_rng(val_end)
    for k in seeds:
        name = f"exchange_rate_nips_validation-end{val_end}"
        (folder / "runs" / f"{name}_vsuld_seed{k}.json").write_text(json.dumps(
            {"dataset": "exchange_rate_nips", "split": "validation", "val_windows": len(tss), "val_end": val_end}))
        walk = last[:, None, None] + (sd * rng.normal(size=(len(tss), 100, H, last.shape[1]))).cumsum(2)
        model = last[:, None, None] + (sd * (rng.normal(size=walk.shape) + drift)).cumsum(2)
        np.savez(folder / "samples" / f"{name}_vsuld_seed{k}_sde_pc2-20.npz", samples=model, truth=truth, last=last)
        np.savez(folder / "samples" / f"{name}_rw_seed{k}.npz", samples=walk, truth=truth, last=last)


def test_main_scores_each_variant_on_the_runs_windows_and_removing_a_false_drift_helps(tmp_path, capsys):
    from crps_sum import validation_split
    from peers.common import truth_frames
    from vsmd_ts.timeseries.data import load_benchmark

    data = load_benchmark("exchange_rate_nips")  # the embedded copy
    H = data.prediction_length
    tss = truth_frames(list(validation_split(data, 4, 3071)[1]), H)
    _fake_run(tmp_path / "fold", tss, H, 3071, drift=1.0)
    out = tmp_path / "scores.json"
    assert drift_check.main([str(tmp_path / "fold"), "--json", str(out)]) == 0
    scores = json.loads(out.read_text())[str(tmp_path / "fold")]
    assert set(scores) == set(drift_check.VARIANTS) and all(len(v) == 2 for v in scores.values())
    crps = {v: np.mean([c for c, _ in scores[v]]) for v in scores}
    assert crps["re-centred"] < 0.8 * crps["model"] and crps["symmetrised"] < crps["model"]
    assert "worst-fold ratio" in capsys.readouterr().out

    bad = tmp_path / "other"
    _fake_run(bad, tss, H, 3071, drift=0.0, seeds=(0,))
    np.savez(next((bad / "samples").glob("*_rw_*")), samples=np.zeros((4, 100, H, 8)), truth=np.zeros((4, H, 8)),
             last=np.zeros((4, 8)))
    with pytest.raises(SystemExit, match="windows differ"):
        drift_check.main([str(bad)])
