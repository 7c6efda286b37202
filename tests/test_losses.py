import dataclasses

import numpy as np
import pytest
import torch

from vsmd_ts.diffusion.gaussian import exact_score_fn
from vsmd_ts.diffusion import (
    ATraining,
    AlternationSchedule,
    DSMLoss,
    ResidualMLP,
    ScoreModel,
    VariationalLoss,
    VariationalScoreUpdater,
    make_sde,
)

MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
COV = torch.tensor([[1.0, 0.3], [0.3, 0.6]], dtype=torch.float64)


def gaussian_data(n):
    return (MEAN + torch.randn(n, 2, dtype=torch.float64) @ torch.linalg.cholesky(COV).T).float()


@pytest.mark.parametrize("name", ["vsuld", "vp"])
def test_dsm_loss_is_smallest_at_the_exact_score(name):
    sde = make_sde(name, (2,))
    score = exact_score_fn(sde, MEAN, COV)

    def exact_net(a, t, cond=None):  # eps_hat = -L_KK * score, grouped by time
        out = torch.empty_like(a[:, -1])
        for tv in t.unique():
            i = t == tv
            out[i] = -sde.noise_scale(t[i]) * score(a[i], t[i])
        return out

    x0, t = gaussian_data(3000), torch.linspace(0.05, 0.95, 30).repeat(100)
    g = torch.Generator().manual_seed(0)
    exact = DSMLoss()(sde, exact_net, x0, t=t, generator=g).sum(1).mean()
    g = torch.Generator().manual_seed(0)
    off = DSMLoss()(sde, lambda a, t, c: 0.8 * exact_net(a, t), x0, t=t, generator=g).sum(1).mean()
    zero = DSMLoss()(sde, lambda a, t, c: torch.zeros_like(a[:, -1]), x0, t=t).sum(1).mean()
    assert exact < off < zero


def test_dsm_loss_shapes_mask_and_nan():
    sde = make_sde("vsuld", (5,))
    net = ResidualMLP((5,), hidden=16, num_blocks=1)
    x0 = torch.randn(8, 5)
    loss = DSMLoss()(sde, net, x0)
    assert loss.shape == (8, 5) and torch.isfinite(loss).all()
    mask = torch.ones_like(x0)
    mask[2, 3] = 0
    x0[2, 3] = float("nan")
    loss = DSMLoss()(sde, net, x0, mask=mask)
    assert torch.isfinite(loss).all() and loss[2, 3] == 0
    with pytest.raises(ValueError, match="mask"):
        DSMLoss()(sde, net, x0)
    with pytest.raises(ValueError, match="observed entries"):
        DSMLoss()(sde, net, x0, mask=torch.ones_like(x0))
    with pytest.raises(ValueError, match="mask shape"):
        DSMLoss()(sde, net, x0, mask=torch.ones(8, 4))


def test_training_reduces_the_dsm_loss():
    sde = make_sde("vsuld", (2,))
    net = ResidualMLP((2,), hidden=64, num_blocks=2)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    x0 = gaussian_data(20000)
    eval_t = torch.linspace(0.01, 1.0, 2000)

    def evaluate():
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            return DSMLoss()(sde, net, x0[:2000], t=eval_t, generator=g).mean().item()

    before = evaluate()
    for i in range(150):
        loss = DSMLoss()(sde, net, x0[torch.randint(0, 20000, (256,))]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert evaluate() < 0.9 * before


def test_variational_loss_divergence_is_exact():
    """The divergence term is g^2 sum(A_last): compare with autograd on the linear policy."""
    sde = make_sde("vsuld", (3,))
    sde.A.set_(torch.tensor([0.1, -0.2, 0.05]))
    a = torch.randn(4, 2, 3, requires_grad=True)
    t = torch.full((4,), 0.3)
    loss = VariationalLoss()(sde, a, t, torch.zeros(4, 3))
    g2 = sde.beta(t)[0] * sde.noise_var
    control = sde.diffusion(t)[0] * sde.forward_control(a)  # z_A on v
    div = sum(torch.autograd.grad(control[:, i].sum(), a, retain_graph=True)[0][:, 1, i] for i in range(3))
    expected = 0.5 * control**2 + (sde.diffusion(t)[0] * div / 3)[:, None]  # split evenly over coords
    torch.testing.assert_close(loss.sum(1), expected.sum(1).float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close((g2 * sde.A_v).sum().float(), (sde.diffusion(t)[0] * div[0]).float())


@pytest.mark.parametrize("policy", ["score", "score_minus_forward"])
def test_A_update_moves_A_and_stays_stable(policy):
    """Algorithm 1 with the exact score: A moves, stays in the stable region; with the
    VSMD policy and R = 1 it is driven towards the kinetic-energy minimum A = 0."""
    sde = make_sde("vscld", (2,), beta=4.0)
    sde.A.set_(torch.tensor([0.2, -0.15]))
    start = sde.A_v.detach().clone()
    opt = torch.optim.Adam([sde.A.theta], lr=0.02)
    updater = VariationalScoreUpdater(steps=50, frozen_policy=policy, minibatch=4096)
    for refresh in range(3):
        updater.refresh(exact_score_fn(sde, MEAN, COV), sde, 512)
        for _ in range(40):
            loss = updater.loss(sde).sum(1).mean() * sde.T
            opt.zero_grad()
            loss.backward()
            opt.step()
    A_v = sde.A_v.detach()
    assert (A_v - start).abs().max() > 1e-3
    assert torch.isfinite(A_v).all() and (1 - 2 * A_v > 0).all() and (1 - 2 * sde.gamma * sde.A_x > 0).all()
    if policy == "score":
        assert (A_v.abs() < 0.5 * start.abs()).all(), A_v


def test_updater_needs_refresh():
    with pytest.raises(RuntimeError, match="refresh"):
        VariationalScoreUpdater().loss(make_sde("vscld", (2,)))


def test_alternation_schedule_reproduces_paper_and_scales():
    s = AlternationSchedule()
    assert s.forward_phases(2500) == [(750, 800), (1050, 1100), (1350, 1400)]
    stages = [s.stage(i, 2500) for i in range(2500)]
    assert stages[:500] == ["dsm"] * 500 and stages[1400:] == ["backward"] * 1100
    assert stages.count("forward") == 150
    assert s.phase_start(1050, 2500) and not s.phase_start(1051, 2500)
    # fractions of the run, not fixed counts
    assert s.forward_phases(250) == [(75, 80), (105, 110), (135, 140)]
    assert AlternationSchedule(forward_fraction=0).forward_phases(100) == []
    assert AlternationSchedule(warmup=0.5, cooldown=0.5).forward_phases(100) == []
    with pytest.raises(ValueError):
        AlternationSchedule(warmup=0.7, cooldown=0.5)


def test_A_training_is_a_validated_schedule_with_the_A_update_settings():
    import pickle

    a = ATraining()
    assert isinstance(a, AlternationSchedule) and a.schedule == AlternationSchedule()
    assert (a.lr, a.trajectory_steps, a.num_trajectories) == (1e-3, 50, 256)
    assert a.forward_phases(2500) == AlternationSchedule().forward_phases(2500)  # the schedule's stages
    b = ATraining.of({"lr": 0.01, "cycle": 0.2, "trajectory_steps": np.int64(3), "num_trajectories": 8.0})
    assert b == ATraining(cycle=0.2, lr=0.01, trajectory_steps=3, num_trajectories=8)
    assert type(b.trajectory_steps) is int and type(b.num_trajectories) is int
    assert ATraining.of(None) == a and ATraining.of(b) is b and ATraining.of(b.as_dict()) == b
    assert pickle.loads(pickle.dumps(b)) == b
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.lr = 1.0
    for bad, match in [({"lr": 0}, "lr must be positive"), ({"lr": float("inf")}, "lr must be a finite"),
                       ({"lr": "fast"}, "lr must be a finite"), ({"warmup": 0.7, "cooldown": 0.5}, "warmup"),
                       ({"cycle": 0}, "cycle"), ({"forward_fraction": 1.5}, "forward_fraction"),
                       ({"trajectory_steps": 2.5}, "trajectory_steps must be a positive integer"),
                       ({"num_trajectories": 0}, "num_trajectories"), ({"num_trajectories": True}, "num_trajectories"),
                       ({"A_lr": 0.1, "prior": "fixed"}, "unknown A_training field\\(s\\) 'A_lr', 'prior'")]:
        with pytest.raises(ValueError, match=match):
            ATraining.of(bad)
    with pytest.raises(ValueError, match="dict of its fields"):
        ATraining.of(0.01)


def test_score_model_parametrisation():
    sde = make_sde("vsuld", (3,))
    net = ResidualMLP((3,), hidden=16, num_blocks=1, cond_dim=4)
    torch.nn.init.normal_(net.out[-1].weight)
    model = ScoreModel(sde, net)
    a, t, c = torch.randn(6, 2, 3), torch.rand(6) * 0.9 + 0.05, torch.randn(6, 4)
    torch.testing.assert_close(model(a, t, c), -net(a, t, c) / sde.noise_scale(t))
    with pytest.raises(ValueError, match="condition"):
        net(a, t)


def test_objective_alternates_and_optimizer_groups():
    """Forward steps move only A; DSM/backward steps move only the network (A frozen)."""
    from vsmd_ts.diffusion import VSMDObjective, make_optimizer

    sde = make_sde("vsuld", (2,))
    net = ResidualMLP((2,), hidden=16, num_blocks=1)
    model = torch.nn.ModuleDict({"sde": sde, "net": net})
    opt = make_optimizer(model, lr=1e-2, A_lr=5e-2)
    assert [g["name"] for g in opt.param_groups] == ["score", "A"]
    assert opt.param_groups[1]["params"] == [sde.A.theta]
    objective = VSMDObjective(sde, net, updater=VariationalScoreUpdater(steps=10), num_trajectories=32)
    total = 50
    stages = []
    for step in range(total):
        A_before = sde.A_v.detach().clone()
        w_before = torch.nn.utils.parameters_to_vector(net.parameters()).detach().clone()
        loss, stage = objective(step, total, gaussian_data(64))
        opt.zero_grad()
        loss.backward()
        opt.step()
        stages.append(stage)
        A_moved = not torch.equal(A_before, sde.A_v.detach())
        net_moved = not torch.equal(w_before, torch.nn.utils.parameters_to_vector(net.parameters()))
        assert (A_moved, net_moved) == ((True, False) if stage == "forward" else (False, True)), (step, stage)
    assert stages.count("forward") > 0 and stages[0] == "dsm" and stages[-1] == "backward"
    # SDEs without a learned A never leave the DSM stage
    assert VSMDObjective(make_sde("cld", (2,)), net).stage(30, 50) == "dsm"
