"""ASBM core: base bridges, lean adjoints, the stage losses and an exact Gaussian Schroedinger bridge."""

import math

import pytest
import torch

from vsmd_ts.diffusion import (
    ASBM,
    DSMLoss,
    ReplayBuffer,
    ResidualMLP,
    adjoint_matching_loss,
    adjoint_propagator,
    bridge,
    bridge_matching_loss,
    bridge_noise_target,
    bridge_sample,
    conditional_score,
    corrector_matching_loss,
    make_sde,
    prior_check,
    propagate_adjoint,
    simulate_controlled,
    source_state,
    terminal_adjoint,
)
from vsmd_ts.diffusion.linalg import apply_block

# ASBM's non-memoryless VP base (beta 0.1 -> 4) and momentum bases with small beta (memory kept)
BASES = [("vp", dict(beta=4.0)), ("cld", dict(beta=2.0)), ("uld", dict(beta=3.0, damping_ratio=0.7))]


def zero_cov(sde):
    return torch.zeros(sde.num_channels, sde.num_channels, dtype=torch.float64)


@pytest.mark.parametrize("name,kw", BASES)
def test_transition_between_two_times_composes(name, kw):
    sde = make_sde(name, (2,), **kw)
    r, s, t = (torch.tensor(v, dtype=torch.float64) for v in (0.1, 0.45, 0.9))
    ts, sr, tr = sde.transition(t, s=s), sde.transition(s, s=r), sde.transition(t, s=r)
    torch.testing.assert_close(ts.mean_coef @ sr.mean_coef, tr.mean_coef, rtol=1e-12, atol=1e-14)
    # Sigma(t, r) = Phi(t, s) Sigma(s, r) Phi(t, s)^T + Sigma(t, s)
    composed = ts.mean_coef @ sr.cov @ ts.mean_coef.transpose(-1, -2) + ts.cov
    torch.testing.assert_close(composed, tr.cov, rtol=1e-12, atol=1e-14)
    # from s = 0 it is the transition with the start state known
    torch.testing.assert_close(sde.transition(t, s=torch.tensor(0.0)).cov, sde.transition(t, sigma0=zero_cov(sde)).cov)


def simulate_paths(sde, a0, t_mid, steps=400, generator=None):
    """Euler-Maruyama of the base SDE on [0, 1] in small steps; returns (a_{t_mid}, a_1)."""
    a, mid, h = a0.clone(), None, 1.0 / steps
    for i in range(steps):
        if mid is None and i * h >= t_mid - 1e-12:
            mid = a.clone()
        t = torch.tensor(i * h, dtype=torch.float64)
        a = a + h * sde.drift(a, t)
        noise = torch.randn(a[:, -1].shape, generator=generator, dtype=a.dtype)
        a[:, -1] += sde.diffusion(t).to(a.dtype) * math.sqrt(h) * noise
    return mid, a


@pytest.mark.parametrize("name,kw", BASES)
def test_bridge_matches_simulated_paths_conditioned_by_regression(name, kw):
    """Simulate the forward SDE from a fixed a_0; the regression of a_t on a_1 is the bridge:
    slope coef1, residual covariance cov (the joint is Gaussian, so linear regression is exact)."""
    sde = make_sde(name, (1,), **kw)
    K, n, t = sde.num_channels, 40000, 0.4
    g = torch.Generator().manual_seed(1)
    a0 = torch.tensor([0.8, -0.5][:K], dtype=torch.float64).reshape(1, K, 1).expand(n, K, 1)
    a_t, a1 = simulate_paths(sde, a0, t, generator=g)
    X, Y = a1[..., 0], a_t[..., 0]
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    slope = torch.linalg.solve(Xc.T @ Xc, Xc.T @ Yc).T  # Y ~ slope X + offset
    resid = Yc - Xc @ slope.T
    br = bridge(sde, torch.tensor(t))
    coef1, cov = br.coef1[0], br.cov[0]
    offset = Y.mean(0) - slope @ X.mean(0)
    torch.testing.assert_close(slope, coef1, atol=0.03, rtol=0.03)
    torch.testing.assert_close(resid.T @ resid / n, cov, atol=0.01 * cov.abs().max().item(), rtol=0.05)
    torch.testing.assert_close(offset, br.coef0[0] @ a0[0, :, 0], atol=0.02, rtol=0.03)


@pytest.mark.parametrize("name,kw", BASES)
def test_bridge_is_exact_at_the_ends_and_positive_in_between(name, kw):
    sde = make_sde(name, (3,), **kw)
    K = sde.num_channels
    a0, a1 = torch.randn(2, K, 3), torch.randn(2, K, 3)
    t = torch.tensor([0.0, sde.T])
    out = bridge_sample(sde, a0, a1, t)
    torch.testing.assert_close(out[0], a0[0])
    torch.testing.assert_close(out[1], a1[1])
    # near the ends the covariance is tiny (O(t^3) for a momentum position) but stays symmetric PSD
    t = torch.tensor([1e-6, 1e-3, 0.5, 1 - 1e-3, 1 - 1e-6], dtype=torch.float64)
    cov = bridge(sde, t).cov
    assert (torch.linalg.eigvalsh(cov) > 0).all()
    # the textbook form (conditioning on a_1 given a_0) agrees in the middle
    tr_t, tr_1 = sde.transition(t[2], sigma0=zero_cov(sde)), sde.transition(1.0, sigma0=zero_cov(sde))
    G = tr_t.cov @ sde.transition(1.0, s=t[2]).mean_coef.transpose(-1, -2) @ torch.linalg.inv(tr_1.cov)
    torch.testing.assert_close(cov[2], tr_t.cov - G @ tr_1.cov @ G.transpose(-1, -2), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name,kw", BASES)
def test_adjoint_propagator_solves_the_lean_adjoint_ode(name, kw):
    """d a~/dt = -beta(t) F^T a~ from a~_1, integrated backwards by RK4, equals Phi(1, t)^T a~_1."""
    sde = make_sde(name, (2,), **kw)
    K = sde.num_channels
    adj1 = torch.randn(1, K, 2, dtype=torch.float64)
    FT = sde.drift_matrix().transpose(-1, -2)

    def rhs(s, y):
        return -sde.beta(torch.tensor(s, dtype=torch.float64)) * apply_block(FT, y)

    y, n, t_stop = adj1.clone(), 500, 0.25
    h = (1.0 - t_stop) / n
    for i in range(n):
        s = 1.0 - i * h
        k1 = rhs(s, y)
        k2 = rhs(s - h / 2, y - h / 2 * k1)
        k3 = rhs(s - h / 2, y - h / 2 * k2)
        k4 = rhs(s - h, y - h * k3)
        y = y - h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    t = torch.full((1,), t_stop, dtype=torch.float64)
    torch.testing.assert_close(propagate_adjoint(sde, adj1, t), y, rtol=1e-9, atol=1e-12)
    if name == "vp":  # ASBS eq. 37: the scalar exp(-1/2 int_t^1 beta)
        B = sde.beta_int(torch.tensor(1.0)) - sde.beta_int(torch.tensor(t_stop))
        torch.testing.assert_close(adjoint_propagator(sde, t_stop)[..., 0, 0], torch.exp(-0.5 * B).expand(2).double())


@pytest.mark.parametrize("name,kw", BASES)
def test_conditional_score_of_a_transition_draw(name, kw):
    sde = make_sde(name, (3,), **kw)
    K = sde.num_channels
    a0, eps = torch.randn(4, K, 3), torch.randn(4, K, 3)
    t = torch.rand(4) * 0.9 + 0.05
    tr = sde.transition(t, sigma0=zero_cov(sde))
    a_t = (apply_block(tr.mean_coef, a0.double()) + apply_block(tr.chol, eps.double())).float()
    # -Sigma^{-1} L eps = -L^{-T} eps
    expected = -apply_block(torch.linalg.inv(tr.chol).transpose(-1, -2), eps.double()).float()
    torch.testing.assert_close(conditional_score(sde, a0, a_t, t), expected, rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------- stage 2
DSM_BASES = [("vp", dict(beta=4.0)), ("cld", dict(beta=2.0, initial_velocity="sample"))]


def tiny_net(K, d=3):
    return ResidualMLP((d,), num_channels=K, hidden=16, num_blocks=1, time_dim=8)


@pytest.mark.parametrize("name,kw", DSM_BASES)
def test_bridge_matching_equals_dsm_with_the_same_noise(name, kw):
    """An independent coupling (a_1 from the base transition given a_t, itself a transition draw
    from a_0) makes a_t a plain DSM perturbation: the target is its noise eps_K, the loss DSMLoss's."""
    sde = make_sde(name, (3,), **kw)
    net = tiny_net(sde.num_channels)
    with torch.no_grad():
        net.out[-1].weight.normal_()  # a non-zero prediction
    x0, t = torch.randn(64, 3), torch.rand(64) * 0.98 + 0.01
    dsm = DSMLoss(stratified=False)(sde, net, x0, t=t, generator=torch.Generator().manual_seed(5))
    a_t, eps = sde.perturb(x0, t, torch.Generator().manual_seed(5))
    a0 = sde.initial_state(x0, torch.Generator().manual_seed(5))  # the same v_0 draw as perturb's
    rest = sde.transition(torch.full_like(t, sde.T), s=t)
    a1 = (apply_block(rest.mean_coef, a_t.double()) + apply_block(rest.chol, torch.randn(a_t.shape).double())).float()
    torch.testing.assert_close(bridge_noise_target(sde, a0, a_t, t), eps[:, -1], rtol=1e-4, atol=2e-4)
    torch.testing.assert_close(bridge_matching_loss(sde, net, a0, a1, t=t, a_t=a_t), dsm, rtol=1e-4, atol=2e-4)


@pytest.mark.parametrize("name,kw", DSM_BASES)
def test_bridge_samples_of_an_independent_coupling_have_the_dsm_law(name, kw):
    """Drawing a_t from the bridge instead (a_1 from the base given a_0) gives standard normal targets
    and the same expected loss as DSM, within Monte-Carlo error."""
    sde = make_sde(name, (2,), **kw)
    n = 20000
    x0, t = 1.5 * torch.randn(n, 2) + 0.5, torch.rand(n) * 0.98 + 0.01
    a0 = source_state(sde, x0)
    tr = sde.transition(torch.full_like(t, sde.T), s=torch.zeros_like(t))
    a1 = (apply_block(tr.mean_coef, a0.double()) + apply_block(tr.chol, torch.randn(a0.shape).double())).float()
    a_t = bridge_sample(sde, a0, a1, t)
    target = bridge_noise_target(sde, a0, a_t, t)
    assert abs(float(target.mean())) < 0.03 and abs(float(target.var()) - 1) < 0.04

    def net(a, s, cond=None):  # a fixed predictor: compare E|net - target|^2 under both laws
        return 0.3 * a[:, -1] + s[:, None] - 0.2

    bm = bridge_matching_loss(sde, net, a0, a1, t=t, a_t=a_t)
    dsm = DSMLoss(stratified=False)(sde, net, x0, t=t)
    se = math.sqrt((bm.var() + dsm.var()) / bm.numel())
    assert abs(float(bm.mean() - dsm.mean())) < 4 * se


# --------------------------------------------------------------------- stage 1
def test_replay_buffer_keeps_the_most_recent_couplings():
    buf = ReplayBuffer(5)
    buf.add(a0=torch.arange(3.0), a1=torch.arange(3.0))
    buf.add(a0=torch.arange(3.0, 7.0), a1=torch.arange(3.0, 7.0))
    assert len(buf) == 5 and buf.data["a0"].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0]
    batch = buf.sample(50)
    assert torch.equal(batch["a0"], batch["a1"]) and set(batch["a0"].tolist()) <= {2.0, 3.0, 4.0, 5.0, 6.0}
    with pytest.raises(ValueError):
        buf.add(a0=torch.zeros(2))


@pytest.mark.parametrize("name,kw", BASES[:2])
def test_uncontrolled_simulation_ends_in_the_base_transition(name, kw):
    sde = make_sde(name, (1,), **kw)
    K, n = sde.num_channels, 20000
    a0 = torch.tensor([1.0, -1.0][:K]).reshape(1, K, 1).expand(n, K, 1)
    a1, nfe = simulate_controlled(sde, None, a0, steps=200)
    tr = sde.transition(1.0, s=0.0)
    assert nfe == 0
    torch.testing.assert_close(a1.mean(0)[:, 0].double(), tr.mean_coef[0] @ a0[0, :, 0].double(), atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(a1[..., 0].T.double()).reshape(K, K), tr.cov[0], atol=0.03, rtol=0.03)


def test_heun_on_the_quadratic_grid_follows_a_stiff_control():
    """A stiff linear control u = -2.7 a on VP 0.1 -> 4 from data of variance 64 (gain beta (1/2 + c) up to 12.8
    at T, as the bridge's control on the stretched toys): stochastic Heun on the quadratic grid with 19 steps ends
    within 3 % of the linear SDE's terminal variance (Lyapunov ODE, RK4), 19 uniform Euler-Maruyama steps over 15 %
    above it (about 45 %)."""
    sde, c, n = make_sde("vp", (1,), beta=4.0), 2.7, 40000

    def lyapunov(t, v):
        b = float(sde.beta(torch.tensor([t]))[0])
        return -b * (1 + 2 * c) * v + b

    v, h = 64.0, 1e-4
    for i in range(10000):  # RK4 on [0, 1]
        t = i * h
        k1 = lyapunov(t, v)
        k2 = lyapunov(t + h / 2, v + h / 2 * k1)
        k3 = lyapunov(t + h / 2, v + h / 2 * k2)
        v += h / 6 * (k1 + 2 * k2 + 2 * k3 + lyapunov(t + h, v + h * k3))
    a0 = 8.0 * torch.randn(n, 1, 1, generator=torch.Generator().manual_seed(0))
    out = {}
    for scheme, grid in (("euler", "uniform"), ("heun", "quadratic")):
        a1, nfe = simulate_controlled(sde, lambda a, t, cond: -c * a[:, -1], a0, 19, generator=torch.Generator().manual_seed(1),
                                      scheme=scheme, grid=grid)
        out[scheme] = float(a1.var())
        assert nfe == (19 if scheme == "euler" else 38)
    assert abs(out["heun"] / v - 1) < 0.03 < 0.15 < out["euler"] / v - 1


def test_adjoint_matching_target_and_terminal_adjoint():
    sde = make_sde("cld", (2,), beta=2.0)
    a0, a1 = torch.randn(8, 2, 2), torch.randn(8, 2, 2)

    def h(a, t, cond=None):
        assert torch.all(t == sde.T)
        return -0.5 * a

    adj1 = terminal_adjoint(a1, corrector=h, max_norm=None)
    torch.testing.assert_close(adj1, 0.5 * a1)
    big = terminal_adjoint(1e4 * a1, max_norm=100.0)
    torch.testing.assert_close(big.flatten(1).norm(dim=1), torch.full((8,), 100.0))
    # a control equal to the target has zero loss: u = -(Phi(1, t)^T a~_1)_v, the x-part leaking into v
    t = torch.rand(8) * 0.9
    target = -propagate_adjoint(sde, adj1, t)[:, -1]
    assert (target - (-adj1[:, -1])).abs().max() > 1e-3
    lookup = dict(zip(t.tolist(), target))
    loss = adjoint_matching_loss(sde, lambda a, s, c=None: torch.stack([lookup[v] for v in s.tolist()]), a0, a1, adj1, t=t)
    assert float(loss.max()) < 1e-10
    # the corrector-matching target at T is the base conditional score of a_1 given a_0
    tr = sde.transition(1.0, s=0.0)
    resid = a1.double() - apply_block(tr.mean_coef, a0.double())
    expected = -apply_block(torch.linalg.inv(tr.cov), resid).float()
    cm = corrector_matching_loss(sde, lambda a, s, c=None: expected, a0, a1)
    assert float(cm.max()) < 1e-10


def test_asbm_runs_on_a_momentum_base_and_counts_nfe():
    """Smoke test: both stages and the reverse-SDE sampler on CLD (beta 2), tiny networks."""
    sde = make_sde("cld", (3,), beta=2.0)
    u = tiny_net(2)
    h = ResidualMLP((2, 3), num_channels=1, hidden=16, num_blocks=1, time_dim=8)  # outputs all K channels
    s = tiny_net(2)
    model = ASBM(sde, u, h, s, am_steps=5, cm_steps=5, buffer_size=64)
    x0 = torch.randn(32, 3)
    for stage, net in (("cm", h), ("am", u)):
        model.start_stage(stage)
        nfe = model.refresh(x0)
        assert nfe == (0 if stage == "cm" else 5)  # the first CM buffer comes from the base
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        assert math.isfinite(model.stage1_step(opt, batch_size=16))
    assert model.buffer.data["adj1"].shape == (32, 2, 3)
    assert math.isfinite(model.stage2_step(x0, torch.optim.Adam(s.parameters(), lr=1e-3)))
    out = model.sample(10, steps=7)
    assert out.state.shape == (10, 2, 3) and out.nfe == 7 and torch.isfinite(out.state).all()
    check = model.check_prior(x0)
    assert set(check) >= {"mean_err", "cov_err", "top_eig", "passed"}
    with pytest.raises(ValueError):
        model.sample(4, sampler="heun")  # the SB's PF-ODE would need the forward control too


# ------------------------------------------------------- exact Gaussian bridge
class LinearControl(torch.nn.Module):
    """``u(a, t) = K(t) x + c(t)`` per coordinate, ``K``, ``c`` cubic polynomials in ``t``."""

    def __init__(self, d, degree=3):
        super().__init__()
        self.K = torch.nn.Parameter(torch.zeros(degree + 1, d))
        self.c = torch.nn.Parameter(torch.zeros(degree + 1, d))

    def forward(self, a, t, cond=None):
        powers = torch.stack([t**j for j in range(self.K.shape[0])], 1)
        return (powers @ self.K) * a[:, 0] + powers @ self.c


class LinearCorrector(torch.nn.Module):
    """``h(a) = k x + c`` per coordinate (``grad log phi_hat_1`` is affine for Gaussian data)."""

    def __init__(self, d):
        super().__init__()
        self.k = torch.nn.Parameter(torch.zeros(d))
        self.c = torch.nn.Parameter(torch.zeros(d))

    def forward(self, a, t, cond=None):
        return (self.k * a[:, 0] + self.c).unsqueeze(1)


class GaussianBackwardScore(torch.nn.Module):
    """Noise predictor of ``s(x, t) = -(x - alpha_t mean) / (alpha_t^2 var + s_t^2)``: the exact family
    of ``grad log phi_hat_t`` when ``phi_hat_0 ~ N(mean, var)`` is propagated by the VP base."""

    def __init__(self, sde, d):
        super().__init__()
        self.sde = sde
        self.mean = torch.nn.Parameter(torch.zeros(d))
        self.log_var = torch.nn.Parameter(torch.zeros(d))

    def forward(self, a, t, cond=None):
        tr = self.sde.transition(t)
        alpha, s2 = tr.mean_coef[..., 0, 0].float(), tr.cov[..., 0, 0].float()
        score = -(a[:, 0] - alpha * self.mean) / (alpha**2 * self.log_var.exp() + s2)
        return -self.sde.noise_scale(t) * score


def test_asbm_recovers_the_gaussian_schroedinger_bridge():
    """Data x_0 ~ N(m, diag(sd^2)), prior N(0, I), base VP beta 0.1 -> 4 (per coordinate independent).

    Derivation. The base gives x_1 | x_0 ~ N(alpha x_0, s^2), alpha = exp(-B(1)/2), s^2 = 1 - alpha^2.
    The SB coupling is pi(x_0, x_1) = p(x_1 | x_0) phi_hat_0(x_0) phi_1(x_1) (ASBS eq. 10): its log
    density has the cross term kappa x_0 x_1, kappa = alpha / s^2, plus terms in x_0 or x_1 alone, so
    pi is the Gaussian with marginals N(m, a), N(0, 1) (a = sd^2) whose precision has off-diagonal
    -kappa. For covariance [[a, c], [c, 1]] that off-diagonal is -c / (a - c^2), hence
    kappa c^2 + c - kappa a = 0 and c = (sqrt(1 + 4 kappa^2 a) - 1) / (2 kappa).
    The corrector's optimum is h* = grad log phi_hat_1 = grad log nu - grad log phi_1 with
    log phi_1 = log pi(x_1 | x_0) - log p(x_1 | x_0) + f(x_0): slope -1 + 1/tau^2 - 1/s^2
    (tau^2 = 1 - c^2 / a, the conditional variance of pi) and intercept kappa m.
    The first coordinate (sd = 2) is far from the base coupling (alpha a = 1.44 against c = 1.13).
    Stage 2: phi_1 ~ exp(-x^2 / (2 v_phi) - kappa m x), 1/v_phi = 1/tau^2 - 1/s^2, so
    phi_0(x) = int p(x_1 | x) phi_1 ~ exp(-(alpha x + kappa m v_phi)^2 / (2 (s^2 + v_phi))) and
    phi_hat_0 = mu / phi_0 = N(m_hat, v_hat): 1/v_hat = 1/a - alpha^2 / (s^2 + v_phi),
    m_hat = v_hat (m/a + alpha kappa m v_phi / (s^2 + v_phi)). The reverse SDE with
    grad log phi_hat_t from N(0, 1) returns the data. 100 EM steps bias the cross-covariance by
    about +0.015 (1.3 standard errors; 200 steps halve it).
    """
    torch.manual_seed(3)
    m, sd = torch.tensor([1.0, -1.0]), torch.tensor([2.0, 0.5])
    sde = make_sde("vp", (2,), beta=4.0)
    alpha = math.exp(-0.5 * float(sde.beta_int(torch.tensor(1.0))))
    s2 = 1 - alpha**2
    kappa = alpha / s2
    a = sd**2
    c = (torch.sqrt(1 + 4 * kappa**2 * a) - 1) / (2 * kappa)
    tau2 = 1 - c**2 / a
    u, h, score = LinearControl(2), LinearCorrector(2), GaussianBackwardScore(sde, 2)
    model = ASBM(sde, u, h, score, am_steps=100, cm_steps=100, buffer_size=8192)
    optimizers = {"cm": torch.optim.Adam(h.parameters()), "am": torch.optim.Adam(u.parameters())}
    steps = 60
    for _ in range(4):  # four IPF rounds, CM first (the first from the uncontrolled base), 480 steps in all
        for stage in ("cm", "am"):
            model.start_stage(stage)
            model.refresh(m + sd * torch.randn(8192, 2))
            for i in range(steps):
                for group in optimizers[stage].param_groups:
                    group["lr"] = 0.05 * (1 - i / steps) + 0.002
                model.stage1_step(optimizers[stage], batch_size=1024)
    n = 40000
    a0, a1, _ = model.couplings(m + sd * torch.randn(n, 2))
    x0, x1 = a0[:, 0].double(), a1[:, 0].double()
    cross = ((x0 - x0.mean(0)) * (x1 - x1.mean(0))).mean(0)
    se = ((x0 - x0.mean(0)) * (x1 - x1.mean(0))).std(0) / math.sqrt(n)  # 0.012, 0.0026
    assert ((cross - c.double()).abs() < 4 * se).all(), (cross, c)
    assert (x1.mean(0).abs() < 0.06).all() and ((x1.var(0) - 1).abs() < 0.06).all()
    torch.testing.assert_close(h.k.detach(), -1 + 1 / tau2 - 1 / s2, atol=0.05, rtol=0)
    torch.testing.assert_close(h.c.detach(), kappa * m, atol=0.05, rtol=0)
    check = prior_check(a1)
    assert check["sq_norm_mean_rel_err"] < 0.05 and check["mean_err"] < 0.06

    optimizer = torch.optim.Adam(score.parameters())
    for i in range(150):
        for group in optimizer.param_groups:
            group["lr"] = 0.15 * (1 - i / 150) + 0.002
        model.stage2_step(m + sd * torch.randn(1024, 2), optimizer, steps=25)
    v_phi = 1 / (1 / tau2 - 1 / s2)
    v_hat = 1 / (1 / a - alpha**2 / (s2 + v_phi))
    m_hat = v_hat * (m / a + alpha * kappa * m * v_phi / (s2 + v_phi))  # (1.68, -1.04), v_hat (4.58, 0.249)
    torch.testing.assert_close(score.mean.detach(), m_hat, rtol=0.06, atol=0)
    torch.testing.assert_close(score.log_var.exp().detach(), v_hat, rtol=0.06, atol=0)
    out = model.sample(20000, steps=200)
    assert out.nfe == 200
    assert ((out.x.mean(0) - m).abs() < 0.06).all(), out.x.mean(0)
    assert ((out.x.std(0) / sd - 1).abs() < 0.04).all(), out.x.std(0)


class MomentumLinearControl(torch.nn.Module):
    """``u(a, t) = K_x(t) x + K_v(t) v + c(t)`` per coordinate, cubic polynomials in ``t``."""

    def __init__(self, d, degree=3):
        super().__init__()
        self.W = torch.nn.Parameter(torch.zeros(3, degree + 1, d))

    def forward(self, a, t, cond=None):
        powers = torch.stack([t**j for j in range(self.W.shape[1])], 1)
        return (powers @ self.W[0]) * a[:, 0] + (powers @ self.W[1]) * a[:, 1] + powers @ self.W[2]


class MomentumLinearCorrector(torch.nn.Module):
    """``h(a) = M a + b`` per coordinate, all channels."""

    def __init__(self, d):
        super().__init__()
        self.M = torch.nn.Parameter(torch.zeros(2, 2, d))
        self.b = torch.nn.Parameter(torch.zeros(2, d))

    def forward(self, a, t, cond=None):
        return torch.einsum("ijd,njd->nid", self.M, a) + self.b


def gaussian_sb_coupling(Phi, Sigma, mean0, cov0, rounds=300):
    """Covariance (4 x 4) of the static SB between N(mean0, cov0) and N(0, I) for a 2-D state.

    pi(a_0, a_1) ~ N(a_1; Phi a_0, Sigma) exp(psi_0(a_0) + psi_1(a_1)) with quadratic psi: IPF on the
    joint's natural parameters, each half-step adds (target - current) marginal precision and shift.
    """
    Si = torch.linalg.inv(Sigma)
    J = torch.cat([torch.cat([Phi.T @ Si @ Phi, -Phi.T @ Si], 1), torch.cat([-Si @ Phi, Si], 1)])
    h = torch.zeros(4, dtype=torch.float64)
    ends = [(slice(0, 2), mean0, cov0), (slice(2, 4), torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))]
    for _ in range(rounds):
        for sl, mean, cov in ends:
            C = torch.linalg.inv(J)
            J_marg = torch.linalg.inv(C[sl, sl])
            h[sl] += torch.linalg.solve(cov, mean) - J_marg @ (C @ h)[sl]
            J[sl, sl] += torch.linalg.inv(cov) - J_marg
    return torch.linalg.inv(J)


def test_stage1_recovers_the_gaussian_bridge_coupling_of_a_momentum_base():
    """Hypoelliptic case (noise and control on v only), CLD with beta 4: x_0 ~ N(m, sd^2), v_0 ~ N(0, 1),
    prior N(0, I) on (x, v). Reference: the static SB coupling of the base transition by Gaussian IPF.
    Eight IPF rounds of AM/CM with a linear control reach Cov(a_0, a_1) to about 0.04 (the base
    coupling is 0.47 away in the x_0 x_1 entry of the first coordinate)."""
    torch.manual_seed(0)
    m, sd = torch.tensor([1.0, -1.0]), torch.tensor([2.0, 0.5])
    sde = make_sde("cld", (2,), beta=4.0)
    tr = sde.transition(1.0, s=0.0)
    u, h = MomentumLinearControl(2), MomentumLinearCorrector(2)
    model = ASBM(sde, u, h, am_steps=100, cm_steps=100, buffer_size=8192)
    optimizers = {"cm": torch.optim.Adam(h.parameters()), "am": torch.optim.Adam(u.parameters())}
    for _ in range(8):
        for stage in ("cm", "am"):
            model.start_stage(stage)
            model.refresh(m + sd * torch.randn(8192, 2))
            for i in range(60):
                for group in optimizers[stage].param_groups:
                    group["lr"] = 0.05 * (1 - i / 60) + 0.002
                model.stage1_step(optimizers[stage], batch_size=1024)
    a0, a1, _ = model.couplings(m + sd * torch.randn(40000, 2))
    for j, tol in ((0, 0.08), (1, 0.03)):
        cov0 = torch.diag(torch.tensor([sd[j].item() ** 2, 1.0], dtype=torch.float64))
        mean0 = torch.tensor([m[j].item(), 0.0], dtype=torch.float64)
        exact = gaussian_sb_coupling(tr.mean_coef[j], tr.cov[j], mean0, cov0)
        A0, A1 = a0[:, :, j].double(), a1[:, :, j].double()
        cross = (A0 - A0.mean(0)).T @ (A1 - A1.mean(0)) / A0.shape[0]
        torch.testing.assert_close(cross, exact[:2, 2:], atol=tol, rtol=0)
        torch.testing.assert_close(torch.cov(A1.T), torch.eye(2, dtype=torch.float64), atol=0.1, rtol=0)
        assert (A1.mean(0).abs() < 0.06).all()


def test_unknown_simulation_scheme_or_grid_fails_early_naming_the_option():
    from vsmd_ts.diffusion.asbm import ASBM
    from vsmd_ts.toys import ToyConfig

    sde = make_sde("vp", (1,), beta=4.0)
    a0 = torch.zeros(4, 1, 1)
    with pytest.raises(ValueError, match="scheme must be one of euler, heun, got 'rk4'"):
        simulate_controlled(sde, None, a0, 3, scheme="rk4")
    with pytest.raises(ValueError, match="grid must be one of uniform, quadratic, got 'log'"):
        simulate_controlled(sde, None, a0, 3, grid="log")
    with pytest.raises(ValueError, match="sim_grid must be one of"):
        ASBM(sde, None, None, sim_grid="log")
    with pytest.raises(ValueError, match="asbm_sim_scheme must be one of"):
        ToyConfig(method="asbm", sde="vp", asbm_sim_scheme="rk4").validate()
