"""Fused transition (issue 13): accuracy against 60-digit references, agreement
with the generic block algebra, operation count; distinct DDP batches."""


import mpmath
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from vsmd_ts.diffusion import make_sde
from vsmd_ts.diffusion.linalg import cholesky_block, congruence, expm_block, lyapunov_integral

A_V = torch.tensor([0.35, -0.38, 0.0, 0.12])
TIMES = [1e-6, 1e-4, 1e-3, 0.02, 0.05, 0.3, 1.0]


def _mp_reference(F, Q, S0, B, dps=60):
    """Phi = e^{FB}, cov = Phi S0 Phi^T + int_0^B e^{Fs} Q e^{F^T s} ds and chol, at ``dps`` digits (Van Loan)."""
    with mpmath.workdps(dps):
        K = len(F)
        big = mpmath.zeros(2 * K, 2 * K)
        for i in range(K):
            for j in range(K):
                big[i, j] = mpmath.mpf(F[i][j]) * B
                big[i, K + j] = mpmath.mpf(Q[i][j]) * B
                big[K + i, K + j] = -mpmath.mpf(F[j][i]) * B
        E = mpmath.expm(big)
        Phi = E[:K, :K]
        cov = E[:K, K:] * Phi.T + Phi * mpmath.matrix(S0) * Phi.T
        chol = mpmath.cholesky(cov)
        return [[[float(M[i, j]) for j in range(K)] for i in range(K)] for M in (Phi, cov, chol)]


def _build(name, **kw):
    sde = make_sde(name, (len(A_V),), **kw)
    if sde.learns_A:
        sde.A.set_(A_V)
    return sde


MOMENTUM = [
    ("vsuld", dict(damping_ratio=0.7)),
    ("vsuld", dict(damping_ratio=0.3, initial_velocity="sample")),
    ("vscld", {}),
    ("vscld", dict(initial_velocity="sample", beta=6.0)),
    ("uld", dict(damping_ratio=0.95)),
    ("vsdm", {}),
    ("vp", {}),
]


@pytest.mark.parametrize("name,kw", MOMENTUM)
def test_fused_transition_matches_60_digit_reference(name, kw):
    """Every entry of mean_coef, cov and chol to ~1e-12 relative, from t = 1e-6 to T,
    in one batched call (small-time series rows and closed-form rows mixed)."""
    sde = _build(name, **kw)
    t = torch.tensor(TIMES, dtype=torch.float64)
    tr = sde.transition(t)
    F = sde.drift_matrix()
    Q = sde.noise_block("cpu").tolist()
    S0 = sde._initial_cov("cpu").tolist()
    B = sde.beta_int(t)
    worst = {}
    for n in range(len(TIMES)):
        for d in range(len(A_V)):
            ref = _mp_reference(F[d].tolist() if F.dim() == 3 else F[0].tolist(), Q, S0, mpmath.mpf(float(B[n])))
            for part, got, want in zip(("phi", "cov", "chol"), (tr.mean_coef, tr.cov, tr.chol), ref):
                want = torch.tensor(want, dtype=torch.float64)
                # each entry relative to itself (exact zeros: relative to the block's scale)
                err = (got[n, d] - want).abs() / torch.maximum(want.abs(), 1e-6 * want.abs().max())
                key = (part, TIMES[n] >= 1e-4)
                worst[key] = max(worst.get(key, 0.0), float(err.max()))
    # float64 throughout; the one weaker entry is L_vv at t = 1e-6 with a marginalised v_0,
    # where the 2 x 2 Cholesky itself cancels (relative error ~ 1e-16 / (k beta t))
    assert max(v for (part, _), v in worst.items() if part != "chol") < 1e-13, worst
    assert worst[("chol", True)] < 1e-12 and worst[("chol", False)] < 5e-11, worst


def _generic(sde, t):
    B = sde._time_view(sde.beta_int(t))
    F = sde.drift_matrix()
    Phi = expm_block(F * B)
    cov = lyapunov_integral(F, sde.noise_block("cpu"), B, sde.stationary_cov()) + congruence(Phi, sde._initial_cov("cpu"))
    return Phi, cov, cholesky_block(cov)


@pytest.mark.parametrize("name,kw", MOMENTUM[:4])
def test_fused_transition_agrees_with_block_algebra_on_random_batch(name, kw):
    g = torch.Generator().manual_seed(0)
    sde = make_sde(name, (50,), **kw)
    if sde.learns_A:
        sde.A.set_(0.78 * (torch.rand(50, generator=g) - 0.5))
    t = sde.eps + (sde.T - sde.eps) * torch.rand(64, generator=g, dtype=torch.float64)
    tr = sde.transition(t)
    for got, want in zip((tr.mean_coef, tr.cov, tr.chol), _generic(sde, t)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-13)
    # scalar time = the same row of the batch; noise_scale = L_vv
    tr0 = sde.transition(t[5])
    torch.testing.assert_close(tr0.chol, tr.chol[5], rtol=1e-14, atol=0)
    torch.testing.assert_close(sde.noise_scale(t), tr.chol[..., -1, -1].float())


def test_sigma0_argument_and_perturb_are_consistent():
    sde = _build("vsuld", damping_ratio=0.6)
    t = torch.tensor([1e-3, 0.4], dtype=torch.float64)
    zero = torch.zeros(2, 2, dtype=torch.float64)
    generic_sample = _build("vsuld", damping_ratio=0.6, initial_velocity="sample").transition(t)
    torch.testing.assert_close(sde.transition(t, sigma0=zero).cov, generic_sample.cov, rtol=1e-13, atol=0)
    full = torch.tensor([[0.3, 0.1], [0.1, 0.5]], dtype=torch.float64)  # not diagonal: generic path
    Phi = sde.transition(t).mean_coef
    noise = sde.transition(t, sigma0=zero).cov
    torch.testing.assert_close(sde.transition(t, sigma0=full).cov, noise + congruence(Phi, full), rtol=1e-12, atol=1e-15)
    # perturb = mean + L eps with the returned noise
    x0 = torch.randn(2, 4, dtype=torch.float64)
    a_t, eps = sde.perturb(x0, t, torch.Generator().manual_seed(3))
    tr = sde.transition(t)
    a0 = torch.stack([x0, torch.zeros_like(x0)], 1)
    want = torch.einsum("ndij,njd->nid", tr.mean_coef, a0) + torch.einsum("ndij,njd->nid", tr.chol, eps)
    torch.testing.assert_close(a_t, want, rtol=1e-12, atol=1e-12)


class _CountBig(TorchDispatchMode):
    """Counts dispatched tensor operations whose output has at least ``size`` elements."""

    def __init__(self, size):
        super().__init__()
        self.size, self.count = size, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        first = out[0] if isinstance(out, (tuple, list)) else out
        if isinstance(first, torch.Tensor) and first.numel() >= self.size:
            self.count += 1
        return out


def test_fused_transition_uses_few_full_size_operations():
    """The per-step cost: operations on the full (N, D) grid, fused vs generic algebra."""
    N, D = 256, 64
    sde = make_sde("vsuld", (D,))
    t = torch.linspace(sde.eps, 1.0, N, dtype=torch.float64)  # includes small-time rows
    with _CountBig(N * D) as fused:
        sde.transition_entries(t)
    with _CountBig(N * D) as generic:
        _generic(sde, t)
    assert fused.count <= 60 and generic.count >= 5 * fused.count, (fused.count, generic.count)


# ------------------------------------------------------------------ DDP batches
def _first_batches(rank, world_size, n=2, batch_size=8):
    """First ``n`` training batches (past targets, one row per window) of a loader built as rank ``rank``
    after the same global seeding, and a torch draw made after them."""
    import lightning.pytorch as pl
    import numpy as np
    import pandas as pd
    from gluonts.dataset.common import ListDataset

    from vsmd_ts import VSMDEstimator

    rng = np.random.default_rng(0)
    target = rng.standard_normal((3, 400)).cumsum(1)
    data = ListDataset([{"start": pd.Period("2021-01-01", freq="h"), "target": target}], freq="h", one_dim_target=False)
    est = VSMDEstimator(
        freq="h", prediction_length=4, target_dim=3, context_length=8, lags_seq=[1, 2], hidden_size=4, num_layers=1,
        denoiser_hidden=8, batch_size=batch_size, num_batches_per_epoch=n, seed=0, progress=False,
    )
    pl.seed_everything(0, verbose=False)  # what train_model does in every process
    transformed = est.create_transformation().apply(data, is_train=True)
    loader = est.create_training_data_loader(transformed, est.create_lightning_module(), rank=rank, world_size=world_size)
    batches = list(loader)
    return [b["past_target"].flatten(1) for b in batches], torch.rand(3)


def test_ddp_ranks_split_each_batch_of_the_single_process_stream():
    single, noise = _first_batches(None, None)  # no process group, no launcher variables: rank 0 of 1
    alone, _ = _first_batches(0, 1)
    torch.testing.assert_close(torch.cat(alone), torch.cat(single), rtol=0, atol=0)  # single-process unchanged
    shares = [_first_batches(r, 2) for r in (0, 1)]
    for k, batch in enumerate(single):
        assert len(batch) == 8 and [len(s[0][k]) for s in shares] == [4, 4]
        # rank r trains on rows r, r + 2, ... of the batch one process would train on
        torch.testing.assert_close(shares[0][0][k], batch[0::2], rtol=0, atol=0)
        torch.testing.assert_close(shares[1][0][k], batch[1::2], rtol=0, atol=0)
        assert not torch.equal(shares[0][0][k], shares[1][0][k])  # distinct windows on the two ranks
    torch.testing.assert_close(shares[0][1], noise)  # rank 0's diffusion noise stream is the single process's
    assert not torch.equal(shares[1][1], noise)  # rank 1 perturbs its share with its own noise
    torch.testing.assert_close(_first_batches(1, 2)[1], shares[1][1])  # reproducible per rank


def test_ddp_split_of_an_uneven_or_too_small_batch():
    single, _ = _first_batches(None, None, batch_size=5)
    with pytest.warns(UserWarning, match="differ by one row"):
        share, _ = _first_batches(2, 3, batch_size=5)
    torch.testing.assert_close(share[0], single[0][2::3], rtol=0, atol=0)
    with pytest.raises(ValueError, match="batch_size >= 3"):
        _first_batches(1, 3, batch_size=2)


def test_rank_detection_from_launcher_environment(monkeypatch):
    from vsmd_ts.timeseries.distributed import rank_and_world_size

    for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert rank_and_world_size() == (0, 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert rank_and_world_size() == (1, 2)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert rank_and_world_size() == (3, 4)
    with pytest.raises(ValueError):
        rank_and_world_size(rank=2, world_size=2)


def test_noise_scale_cache_follows_A_updates():
    sde = make_sde("vsuld", (4,))
    sde.A.set_(A_V)
    t = torch.full((3,), 0.25)
    first = sde.noise_scale(t)
    torch.testing.assert_close(first[0], sde.transition(torch.tensor(0.25)).chol[..., 1, 1].float())
    assert sde.noise_scale(t).data_ptr() == first.data_ptr()  # served from the cache
    with torch.no_grad():
        sde.A.theta.add_(0.5)  # an optimiser step on A
    fresh = sde.noise_scale(t)
    torch.testing.assert_close(fresh[0], sde.transition(torch.tensor(0.25)).chol[..., 1, 1].float())
    assert not torch.equal(fresh, first)
    sde.load_state_dict({"A.theta": torch.zeros(4)})
    torch.testing.assert_close(sde.noise_scale(t)[0], sde.transition(torch.tensor(0.25)).chol[..., 1, 1].float())


# ------------------------------------------------------------------ cached training data
def test_cached_training_data_gives_the_same_batches_and_transforms_once():
    """The default ``cache_data=True`` transforms each entry once instead of once per sampled window."""
    import inspect

    import lightning.pytorch as pl
    import numpy as np
    import pandas as pd
    from gluonts.dataset.common import ListDataset

    from vsmd_ts import VSMDEstimator

    class CountingDataset:
        def __init__(self, entries):
            self.entries, self.passes = entries, 0

        def __iter__(self):
            self.passes += 1
            yield from self.entries

        def __len__(self):
            return len(self.entries)

    rng = np.random.default_rng(0)
    entries = list(ListDataset([{"start": pd.Period("2021-01-01", freq="h"), "target": rng.standard_normal((3, 300))}],
                               freq="h", one_dim_target=False))
    est = VSMDEstimator(freq="h", prediction_length=4, target_dim=3, context_length=8, lags_seq=[1, 2], hidden_size=4,
                        num_layers=1, denoiser_hidden=8, batch_size=8, num_batches_per_epoch=3,
                        seed=0, progress=False)
    batches, passes = {}, {}
    for cache in (True, False):
        data = CountingDataset(entries)
        pl.seed_everything(0, verbose=False)
        loader = est._loader(data, est.create_transformation(), est.create_lightning_module(), "training", cache)
        batches[cache] = torch.cat([b["past_target"].flatten(1) for b in loader])
        passes[cache] = data.passes
    torch.testing.assert_close(batches[True], batches[False], rtol=0, atol=0)
    assert passes[True] == 1 and passes[False] > 5, passes  # ~one window per pass over the single entry
    for method in (VSMDEstimator.train, VSMDEstimator.train_model):
        assert inspect.signature(method).parameters["cache_data"].default is True


def test_rnn_without_onednn_matches_and_restores_the_flag(monkeypatch):
    """ATen's CPU LSTM (RNN_ONEDNN = False) gives oneDNN's outputs and leaves the global flag alone."""
    from vsmd_ts.timeseries import module as module_lib

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(12, 6, num_layers=2, batch_first=True)
    seen = []

    def rnn(inputs, state):
        seen.append(torch.backends.mkldnn.enabled)  # what the LSTM kernels were dispatched under
        return lstm(inputs, state)

    owner = type("Owner", (), {"rnn": staticmethod(rnn)})()
    inputs = torch.randn(5, 7, 12)
    outs = {}
    for onednn in (True, False):
        monkeypatch.setattr(module_lib, "RNN_ONEDNN", onednn)
        before = torch.backends.mkldnn.enabled
        outs[onednn] = module_lib.VSMDModel._rnn(owner, inputs)[0]
        assert torch.backends.mkldnn.enabled == before
    assert seen == [torch.backends.mkldnn.enabled, False]
    torch.testing.assert_close(outs[False], outs[True], rtol=1e-5, atol=1e-6)
