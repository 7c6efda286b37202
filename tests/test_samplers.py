import pytest
import torch

from gaussian import exact_sample, exact_score_fn
from vsmd_ts.diffusion import SAMPLERS, get_sampler, make_sde, time_grid

MEAN = torch.tensor([1.0, -0.5, 0.3], dtype=torch.float64)
COV = torch.tensor([[1.0, 0.6, -0.2], [0.6, 0.8, 0.1], [-0.2, 0.1, 0.5]], dtype=torch.float64)


def build(name):
    sde = make_sde(name, (3,), **({"damping_ratio": 0.7} if name == "vsuld" else {}))
    if sde.learns_A:
        sde.A.set_(torch.tensor([0.1, -0.15, 0.2]))
    return sde


@pytest.mark.parametrize("name", ["vsuld", "vscld", "cld", "vsdm", "vp"])
@pytest.mark.parametrize("sampler,steps", [("heun", 100), ("exp_heun", 50), ("euler_maruyama", 400), ("splitting", 200)])
def test_sampler_recovers_gaussian(name, sampler, steps):
    """With the exact score of Gaussian data every sampler recovers its mean and covariance."""
    sde = build(name)
    g = torch.Generator().manual_seed(0)
    a = exact_sample(sde, MEAN, COV, sde.T, 8000, generator=g)
    out = get_sampler(sampler)(exact_score_fn(sde, MEAN, COV), sde, a, time_grid(sde, steps), generator=g)
    x = out.x.double()
    assert torch.isfinite(x).all()
    assert out.nfe == (2 * steps if "heun" in sampler else steps)
    tol = 0.06 if "heun" in sampler else 0.08
    assert (x.mean(0) - MEAN).abs().max() < tol
    assert (torch.cov(x.T) - COV).abs().max() < tol


@pytest.mark.parametrize("sampler", ["heun", "exp_heun"])
@pytest.mark.parametrize("name", ["vsuld", "vp"])
def test_heun_is_second_order(name, sampler):
    """Deterministic PF-ODE error falls ~4x per doubling of the step count."""
    sde = build(name)
    a = exact_sample(sde, MEAN, COV, sde.T, 256, generator=torch.Generator().manual_seed(1)).double()
    score = exact_score_fn(sde, MEAN, COV)

    def run(steps):
        return SAMPLERS[sampler](score, sde, a, time_grid(sde, steps, rho=2.0).double()).state

    ref = run(1024)
    errors = [(run(n) - ref).abs().max().item() for n in (16, 32, 64)]
    ratios = [errors[i] / errors[i + 1] for i in range(2)]
    assert all(3.0 < r < 5.5 for r in ratios), (errors, ratios)


def test_prior_covariance_kinds():
    sde = build("vsuld")
    stationary = sde.prior_cov("stationary")
    torch.testing.assert_close(stationary, sde.stationary_cov().expand_as(stationary))
    # "data" prior equals the exact marginal at T for standardised independent data
    from gaussian import marginal

    _, C = marginal(sde, torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64), sde.T)
    P = sde.prior_cov("data", data_var=1.0)
    for i in range(3):
        torch.testing.assert_close(P[i], C[i::3, i::3])
    with pytest.raises(ValueError, match="prior kind"):
        sde.prior_cov("flat")
    a = sde.prior_sample(5000, generator=torch.Generator().manual_seed(0))
    assert a.shape == (5000, 2, 3)
    assert (torch.cov(a[:, :, 0].T).double() - P[0]).abs().max() < 0.1


def test_time_grid_and_unknown_sampler():
    sde = build("vscld")
    ts = time_grid(sde, 10, rho=2.0)
    assert ts[0] == pytest.approx(sde.T) and ts[-1] == pytest.approx(sde.eps) and (ts.diff() < 0).all()
    with pytest.raises(ValueError, match="steps"):
        time_grid(sde, 0)
    with pytest.raises(ValueError, match="unknown sampler"):
        get_sampler("ddim")


def test_conditioning_and_callback_reach_the_score():
    sde = build("vsuld")
    seen = []

    def score(a, t, cond):
        assert cond.shape == (4, 7)
        return torch.zeros_like(a[:, -1])

    a = sde.prior_sample(4)
    for name in ("heun", "exp_heun", "euler_maruyama", "splitting"):
        seen.clear()
        out = get_sampler(name)(score, sde, a, time_grid(sde, 5), cond=torch.ones(4, 7), callback=lambda i, t, s, sc: seen.append(i))
        assert seen == list(range(5)) and out.state.shape == a.shape


def test_exponential_heun_beats_heun_on_momentum_sdes():
    """The rotation of the momentum PF-ODE is integrated exactly: smaller error at few steps."""
    sde = build("vsuld")
    a = exact_sample(sde, MEAN, COV, sde.T, 256, generator=torch.Generator().manual_seed(2)).double()
    score = exact_score_fn(sde, MEAN, COV)
    ref = SAMPLERS["exp_heun"](score, sde, a, time_grid(sde, 512).double()).state

    def err(name):
        return (SAMPLERS[name](score, sde, a, time_grid(sde, 10).double()).state - ref).abs().max().item()

    assert err("exp_heun") < 0.3 * err("heun")
