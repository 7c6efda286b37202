import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import sample_diagnostics  # noqa: E402


def archives(W=3, S=40, H=4, D=2, offset=0.5, seed=0):
    rng = np.random.default_rng(seed)
    last = rng.normal(size=(W, D))
    truth = last[:, None] + rng.normal(size=(W, H, D)).cumsum(1)
    rw = last[:, None, None] + rng.normal(size=(W, S, H, D)).cumsum(2)
    model = last[:, None, None] + (rng.normal(size=(W, S, H, D)) + offset).cumsum(2)
    model[:, 0, 1, 0] += 5000.0  # one path per window jumps by 5000 random-walk sds at step 2
    return {"samples": model, "truth": truth, "last": last}, {"samples": rw, "truth": truth, "last": last}


def test_diagnostics_find_the_drift_the_tail_paths_and_score_mixtures(tmp_path):
    model, rw = archives()
    d = sample_diagnostics.diagnose(model, rw, np.random.default_rng(0))
    assert d["drift_sd"] > 0.5  # 4 steps of +0.5 each, against a spread of about 2
    assert d["tail_paths"] == 1 / 40
    assert d["model_share_0"] == sample_diagnostics.scores(rw["samples"], rw["truth"])
    assert d["model_share_1"] == d["model"]
    drifted = rw["samples"] + model["samples"].mean(1, keepdims=True) - model["last"][:, None, None]
    np.testing.assert_allclose(d["rw_plus_model_drift"], sample_diagnostics.scores(drifted, rw["truth"]), rtol=1e-12)
    assert d["without_tail_paths"][0] < d["model"][0]  # the jumping path only hurts
    centred = model["samples"] - (model["samples"].mean(1, keepdims=True) - model["last"][:, None, None])
    np.testing.assert_allclose(centred.mean(1)[:, -1], model["last"], atol=1e-12)

    for name, arrays in (("x_vsuld_seed0_sde_pc2-20", model), ("x_rw_seed0", rw)):
        (tmp_path / "samples").mkdir(exist_ok=True)
        np.savez(tmp_path / "samples" / f"{name}.npz", **arrays)
    assert sample_diagnostics.main([str(tmp_path)]) == 0
    other = tmp_path / "model_only"
    (other / "samples").mkdir(parents=True)
    np.savez(other / "samples" / "x_vsuld_seed0_sde_pc2-20.npz", **model)
    assert sample_diagnostics.main([str(other), "--rw-from", str(tmp_path)]) == 0


def test_shuffling_keeps_each_steps_distribution_and_removes_each_paths_own_trend():
    rng = np.random.default_rng(1)
    W, S, H, D = 2, 400, 6, 2
    last = rng.normal(size=(W, D))
    trend = rng.normal(size=(W, S, 1, D))  # every path keeps a trend of its own
    samples = last[:, None, None] + (trend + 0.3 * rng.normal(size=(W, S, H, D))).cumsum(2)
    out = sample_diagnostics.shuffled(samples, last, np.random.default_rng(0))
    before, after = sample_diagnostics.steps(samples, last), sample_diagnostics.steps(out, last)
    # each (window, step) keeps its increments, as pairs over the series
    for w in range(W):
        for h in range(H):
            np.testing.assert_allclose(np.unique(before[w, :, h], axis=0), np.unique(after[w, :, h], axis=0))
    # the trend made the 6-step sum's spread ~ 6 x a step's; independent steps give ~ sqrt(6) x
    assert after.sum(2).std() < 0.6 * before.sum(2).std()


def test_a_series_the_random_walk_holds_still_is_left_out_of_the_tail_count():
    model, rw = archives(offset=0.0)
    rw["samples"][..., 1] = rw["last"][:, None, None, 1]  # a pegged series: no spread in the random walk
    d = sample_diagnostics.diagnose(model, rw, np.random.default_rng(0))
    assert d["tail_paths"] == 1 / 40  # only the jump on series 0 counts
    assert all(np.isfinite(d["iqr_ratio_first_last"]))
