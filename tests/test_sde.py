import math

import pytest
import torch

from vsmd_ts.diffusion import MomentumSDE, OverdampedSDE, damping_transform, inverse_damping_transform, make_sde
from vsmd_ts.diffusion.linalg import apply_block

A_VALUES = torch.tensor([0.12, -0.2, 0.3])


def build(name, **kw):
    sde = make_sde(name, (3,), **kw)
    if sde.learns_A:
        sde.A.set_(A_VALUES)
    return sde


def lyapunov_rk4(sde, t, n=400):
    """Integrate dSigma/dt = beta(t) (F S + S F^T + Q), dPhi/dt = beta(t) F Phi by RK4 (float64)."""
    F = sde.drift_matrix()
    Q = sde.noise_block("cpu")
    S = sde._initial_cov("cpu").expand_as(F).clone()
    P = torch.eye(F.shape[-1], dtype=torch.float64).expand_as(F).clone()
    h = t / n

    def rhs(s, S, P):
        b = sde.beta(torch.tensor(s, dtype=torch.float64))
        return b * (F @ S + S @ F.transpose(-1, -2) + Q), b * (F @ P)

    for i in range(n):
        s = i * h
        k1 = rhs(s, S, P)
        k2 = rhs(s + h / 2, S + h / 2 * k1[0], P + h / 2 * k1[1])
        k3 = rhs(s + h / 2, S + h / 2 * k2[0], P + h / 2 * k2[1])
        k4 = rhs(s + h, S + h * k3[0], P + h * k3[1])
        S = S + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        P = P + h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
    return P, S


CASES = [
    ("vsuld", dict(damping_ratio=0.7)),
    ("vscld", {}),
    ("cld", {}),
    ("uld", dict(damping_ratio=0.5)),
    ("vsdm", {}),
    ("vp", {}),
    ("vsuld", dict(initial_velocity="sample", beta=6.0)),
]


@pytest.mark.parametrize("name,kw", CASES)
@pytest.mark.parametrize("t", [1e-3, 0.1, 1.0])
def test_closed_form_matches_lyapunov_ode(name, kw, t):
    sde = build(name, **kw)
    tr = sde.transition(torch.tensor(t, dtype=torch.float64))
    Phi, S = lyapunov_rk4(sde, t)
    torch.testing.assert_close(tr.mean_coef, Phi, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(tr.cov, S, rtol=1e-7, atol=1e-10 * S.abs().max().item())
    # Cholesky reproduces the covariance and is finite even at t = 1e-3
    torch.testing.assert_close(tr.chol @ tr.chol.transpose(-1, -2), tr.cov, rtol=1e-9, atol=1e-15)


def test_small_time_covariance_is_accurate():
    """x-variance of the momentum SDE is O(t^3); the float64 series keeps it exact."""
    sde = MomentumSDE((1,), beta=6.0, gamma=2.0, learn_A=False, initial_velocity="sample")
    for t in [1e-5, 1e-4, 1e-3]:
        tr = sde.transition(torch.tensor(t, dtype=torch.float64))
        # leading terms for A = 0: Sigma_xx ~ (beta/2)^2 beta gamma t^3 / 3
        lead = (6 / 2) ** 2 * 6 * 2 * t**3 / 3
        assert tr.cov[0, 0, 0].item() == pytest.approx(lead, rel=10 * 6 * t)
        assert tr.chol[0, 1, 1].item() == pytest.approx(math.sqrt(6 * 2 * t / 4), rel=10 * 6 * t)


@pytest.mark.parametrize("name,kw", [("vsuld", dict(damping_ratio=0.6, initial_velocity="sample")), ("vscld", dict(initial_velocity="sample")), ("vsdm", {}), ("vp", {})])
def test_closed_form_matches_monte_carlo(name, kw):
    """Simulate the forward SDE by Euler-Maruyama from a fixed a_0; compare mean and covariance."""
    sde = build(name, beta=4.0, **kw) if name != "vp" else build(name)
    n = 20000
    g = torch.Generator().manual_seed(1)
    K = sde.num_channels
    a0 = torch.tensor([[0.8, -1.0, 0.3], [0.5, 0.2, -0.7]])[:K].unsqueeze(0).double()
    a = a0.expand(n, -1, -1).clone()
    s = 0.0
    for t, steps in [(1e-3, 100), (0.3, 300), (1.0, 300)]:  # one path, checked at three times
        h = (t - s) / steps
        for _ in range(steps):
            st = torch.tensor(s, dtype=torch.float64)
            noise = torch.randn(n, 3, generator=g, dtype=torch.float64)
            a = a + h * sde.drift(a, st)
            a[:, -1] += torch.sqrt(sde.beta(st) * sde.noise_var * h) * noise
            s += h
        tr = sde.transition(torch.tensor(t, dtype=torch.float64))
        mean = apply_block(tr.mean_coef, a0)[0]
        sd = tr.cov.diagonal(dim1=-2, dim2=-1).sqrt().T  # (K, d)
        # means within 5 MC standard errors (+ O(h) bias)
        assert ((a.mean(0) - mean).abs() <= 5 * sd / math.sqrt(n) + 5e-3 * sd + 1e-12).all()
        emp = torch.einsum("nki,nli->ikl", a - a.mean(0), a - a.mean(0)) / (n - 1)
        scale = sd.T[:, :, None] * sd.T[:, None, :]
        assert ((emp - tr.cov).abs() / scale).max() < 0.05


def test_damping_transform_gives_critical_damping_and_round_trips():
    beta, gamma = 6.0, 2.0
    A_v = torch.linspace(-0.4, 0.4, 17, dtype=torch.float64)
    for R in [1.0, 0.9, 0.5]:
        A_x = damping_transform(A_v, gamma, R)
        friction = 0.5 * beta * gamma * (1 - 2 * A_v)
        omega0_sq = 0.25 * beta**2 * (1 - 2 * gamma * A_x)
        torch.testing.assert_close(friction**2, 4 * R * omega0_sq)
        torch.testing.assert_close(inverse_damping_transform(A_x, gamma, R), A_v)
    # A = 0, R = 1, gamma = 2 is exactly CLD
    assert damping_transform(torch.tensor(0.0), 2.0, 1.0).item() == 0.0


def test_critical_and_underdamped_eigenvalues():
    sde = MomentumSDE((4,), damping_ratio=1.0)
    sde.A.set_(torch.tensor([0.1, -0.1, 0.2, 0.0]))
    ev = torch.linalg.eigvals(sde.drift_matrix())
    torch.testing.assert_close(ev[:, 0], ev[:, 1], atol=1e-6, rtol=0)  # repeated real eigenvalue
    sde = MomentumSDE((4,), damping_ratio=0.5)
    ev = torch.linalg.eigvals(sde.drift_matrix())
    assert (ev.imag.abs() > 1e-3).all() and (ev.real < 0).all()


def test_stationary_covariance_is_the_limit():
    sde = build("vsuld", damping_ratio=0.8, beta=10.0)
    tr = sde.transition(torch.tensor(30.0, dtype=torch.float64))
    torch.testing.assert_close(tr.cov, sde.stationary_cov().expand_as(tr.cov), rtol=1e-6, atol=1e-8)
    # Lemma 1: diag(1 / ((1 - 2 gamma A_x)(1 - 2 A_v)), 1 / (1 - 2 A_v))
    A_v, A_x = sde.A_v.double(), sde.A_x.double()
    torch.testing.assert_close(sde.stationary_cov()[:, 0, 0], 1 / ((1 - 2 * 2 * A_x) * (1 - 2 * A_v)))


def test_score_target_is_gaussian_score():
    sde = build("vsuld")
    x0 = torch.randn(5, 3)
    t = torch.full((5,), 0.4)
    a, eps = sde.perturb(x0, t)
    tr = sde.transition(t)
    mean = apply_block(tr.mean_coef, sde.initial_state(x0).double())
    expected = -apply_block(torch.linalg.inv(tr.cov), a.double() - mean)
    torch.testing.assert_close(sde.score_target(eps, t).double(), expected, rtol=1e-3, atol=1e-3)
    # the last channel is -eps_K / L_KK, the network parametrisation
    torch.testing.assert_close(sde.score_target(eps, t)[:, -1], -eps[:, -1] / sde.noise_scale(t))


def test_A_stays_in_the_stable_region():
    sde = MomentumSDE((3,), damping_ratio=0.7, A_max=0.45)
    with torch.no_grad():
        sde.A.theta.copy_(torch.tensor([-50.0, 0.0, 50.0]))
    A_v, A_x = sde.A_v, sde.A_x
    assert (1 - 2 * A_v > 0).all() and (1 - 2 * sde.gamma * A_x > 0).all()


@pytest.mark.parametrize(
    "factory,match",
    [
        (lambda: MomentumSDE((2,), damping_ratio=0.0), "damping_ratio"),
        (lambda: MomentumSDE((2,), damping_ratio=1.5), "damping_ratio"),
        (lambda: MomentumSDE((2,), damping_ratio=float("nan")), "damping_ratio"),
        (lambda: MomentumSDE((2,), beta=0.0), "beta"),
        (lambda: MomentumSDE((2,), beta=-1.0), "beta"),
        (lambda: MomentumSDE((2,), beta=float("nan")), "beta"),
        (lambda: MomentumSDE((2,), gamma=0.0), "gamma"),
        (lambda: MomentumSDE((2,), A_max=0.5), "A_max"),
        (lambda: MomentumSDE((2,), A_init=0.45, A_max=0.4), "A_init"),
        (lambda: MomentumSDE((2,), eps=1.0), "eps"),
        (lambda: OverdampedSDE((2,), schedule="cosine"), "schedule"),
        (lambda: make_sde("vscld", (2,), damping_ratio=0.5), "critically"),
        (lambda: make_sde("ddpm", (2,)), "unknown sde"),
        (lambda: MomentumSDE(()), "data_shape"),
    ],
)
def test_bad_configuration_raises(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_nan_data_raises():
    sde = make_sde("vsuld", (3,))
    x0 = torch.randn(4, 3)
    x0[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        sde.perturb(x0, torch.full((4,), 0.5))
    with pytest.raises(ValueError, match="shape"):
        sde.perturb(torch.randn(4, 2), torch.full((4,), 0.5))


@pytest.mark.parametrize("name,kw", CASES)
def test_gaussian_noise_prediction_is_the_optimal_denoiser_of_gaussian_data(name, kw):
    """For x_0 ~ N(0, diag(var)): marginal_cov is the covariance of perturbed draws, and the closed-form
    noise prediction is the least-squares regression of the velocity noise eps_K on the state a_t."""
    sde = build(name, **kw)
    var = torch.tensor([1.0, 4.0, 0.25], dtype=torch.float64)
    n, g = 40_000, torch.Generator().manual_seed(3)
    x0 = (torch.randn(n, 3, generator=g, dtype=torch.float64) * var.sqrt()).float()
    for t in (0.02, 0.3, 1.0):
        a, eps = sde.perturb(x0, torch.full((n,), t), generator=g)
        a, eps = a.double(), eps.double()
        emp = torch.einsum("nki,nli->ikl", a, a) / n
        M = sde.marginal_cov(t, var)
        sd = M.diagonal(dim1=-2, dim2=-1).sqrt()
        assert ((emp - M).abs() / (sd[..., :, None] * sd[..., None, :]) < 0.03).all()
        pred = sde.gaussian_noise_prediction(a.float(), torch.tensor(t), var).double()
        # the regression coefficients of eps_K on (x, v), per coordinate, against the closed form's
        for i in range(3):
            X = a[:, :, i]
            coef = torch.linalg.lstsq(X, eps[:, -1, i:i + 1]).solution[:, 0]
            closed = torch.linalg.lstsq(X, pred[:, i:i + 1]).solution[:, 0]
            assert (coef - closed).abs().max() < 0.03 * max(1.0, float(closed.abs().max())), (t, i, coef, closed)
        # per-sample times give the same values as one shared time
        torch.testing.assert_close(sde.gaussian_noise_prediction(a[:5].float(), torch.full((5,), t), var).double(),
                                   pred[:5], rtol=1e-5, atol=1e-6)
