"""ASBM on the toy front end and the shared training path: stages, CLI round trip, resume, NFE accounting."""

import json

import pytest
import torch

from vsmd_ts.diffusion import ASBM, ResidualMLP, make_sde
from vsmd_ts.toys import ToyConfig, load_checkpoint, model_from_checkpoint, train
from vsmd_ts.toys.__main__ import main
from vsmd_ts.toys.sampling import steps_for_nfe
from vsmd_ts.training.asbm import BridgeFlowScore, BridgeScoreModel, ForwardNets, Stage1Objective, Stage1Schedule

# a few steps of everything: stage 1 = cycles of 3 CM + 3 AM steps
TINY = ["--steps", "4", "--asbm-stage1-steps", "6", "--asbm-cm-steps", "3", "--asbm-am-steps", "3", "--asbm-refresh-every",
        "2", "--hidden", "16", "--num-blocks", "1", "--batch-size", "64", "--asbm-check-num", "256",
        "--asbm-cm-sim-steps", "5", "--asbm-am-sim-steps", "4", "--log-every", "2", "--ckpt-every", "0", "--no-progress"]


def test_method_defaults_and_errors():
    assert (ToyConfig().sde, ToyConfig().beta, ToyConfig().prior) == ("vsuld", 5.0, "transition")  # unchanged
    cfg = ToyConfig(method="asbm")
    assert (cfg.sde, cfg.beta, cfg.prior) == ("vp", 4.0, "fixed")  # ASBM's VP 0.1 -> 4 and N(0, I)
    assert ToyConfig(method="asbm", sde="cld", beta=2.0).beta == 2.0
    with pytest.raises(ValueError, match="fixed base"):
        train(ToyConfig(method="asbm", sde="vsuld"))
    with pytest.raises(ValueError, match="unknown method"):
        train(ToyConfig(method="dsbm"))
    with pytest.raises(ValueError, match="asbm_am_steps"):
        train(ToyConfig(method="asbm", asbm_am_steps=0))


def test_stage1_schedule_and_nfe_accounting():
    s = Stage1Schedule(cm_steps=2, am_steps=3, refresh_every=2)
    assert [s.stage(i) for i in range(7)] == ["cm", "cm", "am", "am", "am", "cm", "cm"]
    assert [s.position(i) for i in range(7)] == [0, 1, 0, 1, 2, 0, 1]
    assert [d for d in range(12) if s.ends_am(d)] == [5, 10]
    assert steps_for_nfe(10, "euler_maruyama") == 10 and steps_for_nfe(10, "heun") == 5
    assert steps_for_nfe(20, "heun", networks_per_call=2) == 5  # the SB's PF-ODE calls two networks
    with pytest.raises(ValueError, match="multiple of 4"):
        steps_for_nfe(10, "heun", networks_per_call=2)


def test_stage1_stops_at_the_first_passed_prior_check():
    """Data N(0, 0.64 I) on VP: the zero-initialised control already ends near the prior (Euler-Maruyama
    with 20 steps inflates VP's variance by a few %), so the check after the first AM stage passes
    (tolerance 0.15) and stage 1 stops there."""
    from vsmd_ts.training import FitConfig, fit
    from vsmd_ts.training.callbacks import PriorCheck

    sde = make_sde("vp", (2,), beta=4.0)
    nets = ForwardNets(sde, ResidualMLP((2,), 1, hidden=8, num_blocks=1),
                       ResidualMLP((1, 2), 1, hidden=8, num_blocks=1))
    asbm = ASBM(sde, nets.control, nets.corrector, am_steps=20, cm_steps=4, buffer_size=256)
    objective = Stage1Objective(asbm, nets, Stage1Schedule(2, 2, 1))
    check = PriorCheck(objective, 0.8 * torch.randn(4000, 2, generator=torch.Generator().manual_seed(0)), tol=0.15)
    res = fit(nets, lambda step, rank, world: torch.randn(64, 2), FitConfig(steps=20, lr=1e-5, log_every=0),
              objective=objective, callbacks=[check])
    assert res.step == 4 and objective.passed and [c["step"] for c in objective.checks] == [4]
    assert objective.asbm.control is not nets.control  # the EMA control simulates
    assert objective.asbm.corrector is nets.corrector  # the terminal adjoint takes the trained corrector, as ASBM's
    assert set(objective.state_dict()) == {"stage", "buffer", "checks", "passed"}


@pytest.mark.parametrize("base", ["vp", "cld"])
def test_cli_train_sample_round_trip(base, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--method", "asbm", "--base", base, "--dataset", "spiral-8y", "--out", str(out)] + TINY) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["stage1_steps"] == 6 and report["steps"] == 4 and "top_eig" in report["last_prior_check"]
    stage1, stage2 = load_checkpoint(out / "stage1"), load_checkpoint(out)
    assert stage1["vsmd"]["asbm_stage"] == 1 and stage2["vsmd"]["asbm_stage"] == 2
    assert len(stage1["objective_state"]["buffer"]["a0"]) > 0
    assert [c["step"] for c in stage2["vsmd"]["asbm_stage1"]["checks"]] == [6]
    model, cfg, _ = model_from_checkpoint(out)
    forward, _, _ = model_from_checkpoint(out / "stage1")
    assert isinstance(model, BridgeScoreModel) and isinstance(forward, ForwardNets) and cfg.sde == base
    K = 2 if base == "cld" else 1
    assert model.sde.num_channels == K and (K == 1 or model.sde.initial_velocity == "sample")
    for name, w in forward.control.state_dict().items():  # stage 2 carries the EMA control of stage 1
        assert torch.equal(w, model.control.state_dict()[name])
    assert not any(p.requires_grad for p in model.control.parameters())
    # the control trained in stage 1 and stayed frozen in stage 2 (raw and EMA copies agree)
    raw, _, _ = model_from_checkpoint(out, ema=False)
    assert torch.equal(raw.control.out[-1].weight, model.control.out[-1].weight)
    assert model.control.out[-1].weight.abs().sum() > 0

    assert main(["sample", "--checkpoint", str(out), "--nfe", "5", "--num", "256", "--metrics", "--no-progress"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert (rep["sampler"], rep["nfe"], rep["steps"], rep["paths"]) == ("euler_maruyama", 5, 5, "reverse SDE")
    assert rep["pmf_rmse"] > 0 and len(rep["straightness"]) == 2
    check = rep["prior_check"]
    assert len(check["mean"]) == 2 * K and len(check["cov"]) == 2 * K and isinstance(check["passed"], bool)
    assert main(["sample", "--checkpoint", str(out), "--nfe", "8", "--sampler", "heun", "--num", "64",
                 "--no-progress"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert (rep["nfe"], rep["steps"], rep["paths"]) == (8, 2, "probability-flow ODE")  # 2 nets x 2 evaluations
    assert main(["sample", "--checkpoint", str(out / "stage1"), "--num", "64", "--no-progress"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["stage"] == 1 and "prior_check" in rep and "nfe" not in rep


def test_probability_flow_of_the_bridge_uses_both_networks():
    sde = make_sde("vp", (2,), beta=4.0)
    control = ResidualMLP((2,), 1, hidden=8, num_blocks=1)
    with torch.no_grad():
        control.out[-1].bias.fill_(0.5)
    model = BridgeScoreModel(sde, ResidualMLP((2,), 1, hidden=8, num_blocks=1), control)
    a, t = torch.randn(5, 1, 2), torch.full((5,), 0.3)
    torch.testing.assert_close(BridgeFlowScore(model)(a, t), model(a, t) - 0.5)


def test_resume_continues_each_stage(tmp_path):
    out = tmp_path / "run"
    kw = dict(method="asbm", dataset="checkerboard-6x", hidden=16, num_blocks=1, batch_size=64, asbm_cm_steps=3,
              asbm_am_steps=3, asbm_refresh_every=2, asbm_check_num=256, asbm_cm_sim_steps=5, asbm_am_sim_steps=4,
              log_every=2, ckpt_every=0, progress=False)
    first = train(ToyConfig(steps=4, asbm_stage1_steps=6, **kw), out=out)
    assert first["stage1_steps"] == 6 and first["steps"] == 4
    # stage 2 under way: a resume continues it and keeps stage 1 as it was
    again = train(ToyConfig(steps=6, asbm_stage1_steps=12, resume=True, **kw), out=out)
    assert again["start_step"] == 4 and again["steps"] == 6 and again["stage1_steps"] == 6
    assert load_checkpoint(out)["global_step"] == 6
    # without a stage-2 checkpoint, an unfinished stage 1 resumes from its own (buffer included)
    (out / "last.ckpt").unlink()
    buffer = load_checkpoint(out / "stage1")["objective_state"]["buffer"]["a0"]
    more = train(ToyConfig(steps=2, asbm_stage1_steps=12, resume=True, **kw), out=out)
    stage1 = load_checkpoint(out / "stage1")
    assert stage1["global_step"] == 12 and more["stage1_steps"] == 12
    assert [c["step"] for c in more["prior_checks"]] == [6, 12]
    assert len(stage1["objective_state"]["buffer"]["a0"]) >= len(buffer)


def test_benchmark_asbm_rows_and_nfe_sweep(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "toys.py"
    spec = importlib.util.spec_from_file_location("bench_toys_asbm", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert tuple(bench._parser().parse_args([]).configs) == bench.DEFAULT_CONFIGS  # the default grid is unchanged
    args = ["--quick", "--out", str(tmp_path / "runs"), "--datasets", "checkerboard-6x", "--configs", "ASBM-CLD-4",
            "VP-20", "--seeds", "0", "--nfe", "4", "8", "--nfe-samplers", "euler_maruyama", "heun",
            "--table", str(tmp_path / "t.md"), "--figures", str(tmp_path / "fig"), "--paths"]
    assert bench.main(args) == 0
    for name in ("samples", "pmf_vs_nfe", "ASBM-CLD-4_paths", "VP-20_paths"):
        assert (tmp_path / "fig" / f"checkerboard-6x_{name}.png").is_file()
    record = json.loads((tmp_path / "runs" / "checkerboard-6x" / "ASBM-CLD-4" / "seed0.json").read_text())
    assert record["stage1_steps"] == 8 and record["prior_checks"] and record["train_config"]["prior"] == "fixed"
    sweep = {(r["sampler"], r["nfe"]) for r in record["nfe_sweep"]}
    assert sweep == {("euler_maruyama", 4), ("euler_maruyama", 8), ("heun", 4), ("heun", 8)}
    twin = json.loads((tmp_path / "runs" / "checkerboard-6x" / "VP-20" / "seed0.json").read_text())
    assert twin["train_config"]["method"] == "vsmd" and twin["train_config"]["beta"] == 20.0 and "prior_checks" not in twin
    table = (tmp_path / "t.md").read_text()
    assert "| ASBM-CLD-4 | euler_maruyama |" in table and "ASBM stage 1" in table and "| VP-20 | heun |" in table
    assert "CPU s / run" in table
