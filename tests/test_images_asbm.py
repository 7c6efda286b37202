"""ASBM on the image front end: presets, the corrector U-Net, CLI train+sample round trip on digits, CIFAR-10 on
fake batches, resume of each stage, and the classifier check's NFE rows."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from vsmd_ts.images import TrainConfig, load_checkpoint, model_from_checkpoint, train  # noqa: E402
from vsmd_ts.images.__main__ import main  # noqa: E402
from vsmd_ts.images.config import build_asbm_nets  # noqa: E402
from vsmd_ts.images.unet import StateUNet  # noqa: E402
from vsmd_ts.training.asbm import BridgeScoreModel, ForwardNets  # noqa: E402

# a few steps of everything: tiny U-Nets, stage 1 = cycles of 3 CM + 3 AM steps, short simulations
TINY = dict(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, asbm_forward_res_blocks=1, attn_resolutions=(4,),
            num_heads=2, batch_size=16, lr_warmup=0, asbm_cm_steps=3, asbm_am_steps=3, asbm_refresh_every=2,
            asbm_check_num=64, asbm_check_batch=32, asbm_cm_sim_steps=5, asbm_am_sim_steps=4, log_every=2,
            ckpt_every=0, num_samples=4, sample_steps=4, progress=False)
TINY_ARGS = ["--base-channels", "8", "--channel-mult", "1,2", "--num-res-blocks", "1", "--asbm-forward-res-blocks", "1",
             "--attn-resolutions", "4", "--num-heads", "2", "--batch-size", "16", "--lr-warmup", "0",
             "--asbm-cm-steps", "3", "--asbm-am-steps", "3", "--asbm-refresh-every", "2", "--asbm-check-num", "64",
             "--asbm-check-batch", "32", "--asbm-cm-sim-steps", "5", "--asbm-am-sim-steps", "4", "--log-every", "2",
             "--ckpt-every", "0", "--num-samples", "4", "--sample-steps", "4", "--no-progress"]


def test_method_presets_and_errors():
    plain = TrainConfig(dataset="digits").resolved()
    assert (plain.method, plain.sde, plain.beta) == ("vsmd", "vscld", None)  # the default method is unchanged
    digits = TrainConfig(method="asbm", dataset="digits").resolved()
    assert (digits.sde, digits.beta, digits.num_res_blocks, digits.asbm_forward_res_blocks) == ("vp", 4.0, 2, 1)
    # CIFAR-10: the official run's settings (docs/asbm.md section 3)
    c = TrainConfig(method="asbm", dataset="cifar10").resolved()
    assert (c.sde, c.beta, c.base_channels, c.channel_mult, c.attn_resolutions, c.dropout) == (
        "vp", 4.0, 128, (1, 2, 2, 2), (16,), 0.1)
    assert (c.num_res_blocks, c.asbm_forward_res_blocks) == (4, 2)  # backward 4, forward u and h 2 residual blocks
    assert (c.batch_size, c.asbm_lr, c.lr, c.ema_decay) == (128, 1e-4, 2e-4, 0.999)
    assert (c.asbm_buffer_size, c.asbm_am_sim_steps, c.asbm_cm_sim_steps, c.asbm_check_num) == (20_000, 19, 99, 51_200)
    assert c.asbm_am_steps == 3 * c.asbm_cm_steps and c.sample_steps == 100  # 15 AM : 5 CM epochs; 100 EM steps
    with pytest.raises(ValueError, match="fixed base"):
        TrainConfig(method="asbm", sde="vscld").resolved()
    with pytest.raises(ValueError, match="unknown method"):
        TrainConfig(method="dsbm").resolved()
    with pytest.raises(ValueError, match="preconditioning"):
        TrainConfig(method="asbm", precond="gaussian").resolved()
    with pytest.raises(ValueError, match="asbm_am_steps"):
        TrainConfig(method="asbm", asbm_am_steps=0).resolved()


@pytest.mark.parametrize("base", ["vp", "cld"])
def test_asbm_networks_and_the_state_unet(base):
    cfg = TrainConfig(method="asbm", sde=base, beta=4.0, **TINY).resolved()
    sde, control, corrector, score_net = build_asbm_nets(cfg)
    K = sde.num_channels
    assert K == (2 if base == "cld" else 1) and (K == 1 or sde.initial_velocity == "sample")
    a, t = torch.randn(3, K, 1, 8, 8), torch.rand(3)
    assert control(a, t).shape == score_net(a, t).shape == (3, 1, 8, 8)
    assert isinstance(corrector, StateUNet) and corrector(a, t).shape == (3, K, 1, 8, 8)
    assert torch.all(corrector(a, t) == 0)  # zero-initialised: h = 0 before corrector matching
    with torch.no_grad():  # each output channel answers to the state (no mixing of the batch)
        corrector.out.weight.normal_(0, 0.1)
        b = a.clone()
        b[1] += 1.0
        out_a, out_b = corrector(a, t), corrector(b, t)
    assert torch.equal(out_a[0], out_b[0]) and not torch.allclose(out_a[1], out_b[1])
    with pytest.raises(ValueError, match="expected a state of shape"):
        corrector(torch.randn(3, K + 1, 1, 8, 8), t)


def test_cli_train_sample_round_trip_on_digits(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--method", "asbm", "--dataset", "digits", "--out", str(out), "--steps", "4",
            "--asbm-stage1-steps", "6", "--threads", "1"] + TINY_ARGS
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["stage1_steps"] == 6 and report["step"] == 4 and "top_eig" in report["last_prior_check"]
    stage1, stage2 = load_checkpoint(out / "stage1" / "last.ckpt"), load_checkpoint(out / "last.ckpt")
    assert stage1["vsmd"]["asbm_stage"] == 1 and stage2["vsmd"]["asbm_stage"] == 2
    assert len(stage1["objective_state"]["buffer"]["a0"]) > 0
    assert [c["step"] for c in stage2["vsmd"]["asbm_stage1"]["checks"]] == [6]
    summary = json.loads((out / "summary.json").read_text())
    assert {r["stage"] for r in summary["history"]} == {1, 2}
    losses = {k for r in summary["history"] for k in r if k.startswith("loss_")}
    assert losses == {"loss_cm", "loss_am", "loss_bridge"}
    assert (out / "samples.png").is_file() and (out / "data.png").is_file()

    model, cfg, _ = model_from_checkpoint(out / "last.ckpt")
    forward, _, _ = model_from_checkpoint(out / "stage1" / "last.ckpt")
    assert isinstance(model, BridgeScoreModel) and isinstance(forward, ForwardNets) and cfg.method == "asbm"
    for name, w in forward.control.state_dict().items():  # stage 2 carries the EMA control of stage 1, frozen
        assert torch.equal(w, model.control.state_dict()[name])
    assert not any(p.requires_grad for p in model.control.parameters())
    assert model.control.out.weight.abs().sum() > 0  # trained by adjoint matching

    png, npz = tmp_path / "grid.png", tmp_path / "s.npz"
    assert main(["sample", "--checkpoint", str(out / "last.ckpt"), "--num", "6", "--nfe", "5", "--out", str(png),
                 "--npz", str(npz), "--device", "cpu", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "5 Euler-Maruyama steps of the reverse SDE, 5 network calls per image" in text
    images = np.load(npz)["images"]
    assert images.shape == (6, 8, 8, 1) and images.dtype == np.uint8 and images.std() > 0
    # stage 1 has no backward network to sample with
    assert main(["sample", "--checkpoint", str(out / "stage1" / "last.ckpt"), "--out", str(png), "--device", "cpu"]) == 2
    assert "stage 1" in capsys.readouterr().err

    # the classifier check scores the ASBM samples per NFE (opt-in rows)
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "digits_check.py"
    spec = importlib.util.spec_from_file_location("digits_check_asbm", path)
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    result_file = tmp_path / "check.json"
    assert check.main(["--checkpoint", str(out / "last.ckpt"), "--num", "20", "--steps", "3", "--nfe", "2", "4",
                       "--out", str(result_file)]) == 0
    result = json.loads(result_file.read_text())
    assert result["sampler"] == "euler_maruyama" and [(r["nfe"], r["steps"]) for r in result["nfe_sweep"]] == [(2, 2), (4, 4)]
    assert all(0 <= r["share_top_prob_gt_0.9"] <= 1 and sum(r["per_class"]) == 20 for r in result["nfe_sweep"])
    assert sum(result["generated"]["per_class"]) == 20
    assert (result["model"], result["nfe"]) == ("asbm vp", 3)
    # a second "seed": the summary gives each (model, NFE) its mean, std and range over the files
    other = json.loads(result_file.read_text())
    for row in [other["generated"], *other["nfe_sweep"]]:
        row["share_top_prob_gt_0.9"] = 0.5
    first = {r["nfe"]: r["share_top_prob_gt_0.9"] for r in [dict(result["generated"], nfe=3), *result["nfe_sweep"]]}
    lines = check.summary_table([result, other]).splitlines()
    assert len(lines) == 2 + 3 and all(line.startswith("| asbm vp (euler_maruyama) | ") for line in lines[2:])
    for line, nfe in zip(lines[2:], [2, 3, 4]):
        cells = [c.strip() for c in line.strip("|").split("|")]
        shares = [100 * first[nfe], 50.0]
        assert cells[1:3] == [str(nfe), "2"]
        assert cells[3] == (f"{np.mean(shares):.1f} ± {np.std(shares, ddof=1):.1f} "
                            f"({min(shares):.1f} - {max(shares):.1f})")
    # files written before the model and its NFE were stored: read from the checkpoint
    legacy = {k: v for k, v in result.items() if k not in ("model", "nfe")}
    assert check.summary_table([legacy]) == check.summary_table([result])


def test_cifar10_asbm_runs_on_fake_batches(fake_cifar, tmp_path):
    root, _, _ = fake_cifar
    out = tmp_path / "run"
    cfg = TrainConfig(method="asbm", dataset="cifar10", data_dir=str(root), out=str(out), steps=2, asbm_stage1_steps=2,
                      **{**TINY, "batch_size": 4, "asbm_cm_steps": 1, "asbm_am_steps": 1, "asbm_check_num": 8,
                         "asbm_check_batch": 4, "log_every": 1})
    summary = train(cfg)
    assert summary["stage1_steps"] == 2 and summary["step"] == 2
    # the rest of the CIFAR-10 ASBM preset: VP 0.1 -> 4, dropout 0.1, ASBM's buffer and learning rates
    saved = load_checkpoint(out / "last.ckpt")["vsmd"]["image_config"]
    assert (saved["sde"], saved["beta"], saved["dropout"], saved["asbm_buffer_size"], saved["asbm_lr"]) == (
        "vp", 4.0, 0.1, 20_000, 1e-4)
    assert all(np.isfinite(r[k]) for r in summary["history"] for k in r if k.startswith("loss_"))
    # the check ran on all 20 fake training images (fewer than asbm_check_num), in chunks
    assert [c["step"] for c in summary["prior_checks"]] == [2]


def test_resume_continues_each_stage(tmp_path):
    out = tmp_path / "run"
    base = dict(method="asbm", dataset="digits", out=str(out), **TINY)
    first = train(TrainConfig(steps=4, asbm_stage1_steps=6, **base))
    assert first["stage1_steps"] == 6 and first["step"] == 4
    # stage 2 under way: a resume (only out and the budgets) continues it and keeps stage 1 as it was
    again = train(TrainConfig(out=str(out), resume=True, steps=6, asbm_stage1_steps=12, progress=False))
    assert again["start_step"] == 4 and again["step"] == 6 and again["stage1_steps"] == 6
    ckpt = load_checkpoint(out / "last.ckpt")
    assert ckpt["global_step"] == 6 and {float(s["step"]) for s in ckpt["optimizer_states"][0]["state"].values()} == {6.0}
    # without a stage-2 checkpoint, an unfinished stage 1 resumes from its own (buffer included)
    (out / "last.ckpt").unlink()
    buffer = load_checkpoint(out / "stage1" / "last.ckpt")["objective_state"]["buffer"]["a0"]
    more = train(TrainConfig(out=str(out), resume=True, steps=2, asbm_stage1_steps=12, progress=False))
    stage1 = load_checkpoint(out / "stage1" / "last.ckpt")
    assert stage1["global_step"] == 12 and more["stage1_steps"] == 12 and more["step"] == 2
    assert [c["step"] for c in more["prior_checks"]] == [6, 12]
    assert len(stage1["objective_state"]["buffer"]["a0"]) >= len(buffer)
    with pytest.raises(ValueError, match="resume from their output folder"):
        train(TrainConfig(out=str(tmp_path / "other"), resume=str(out / "stage1" / "last.ckpt"), progress=False))


def test_couplings_are_simulated_without_dropout():
    from vsmd_ts.diffusion import ASBM

    cfg = TrainConfig(method="asbm", **{**TINY, "dropout": 0.5}).resolved()
    sde, control, corrector, _ = build_asbm_nets(cfg)
    with torch.no_grad():
        for p in control.parameters():  # a control whose dropout would show
            p.normal_(0, 0.2)
    asbm = ASBM(sde, control, corrector, am_steps=3)
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    a1 = [asbm.couplings(x0, generator=torch.Generator().manual_seed(0))[1] for _ in range(2)]
    assert torch.equal(a1[0], a1[1]) and control.training  # same noise, same endpoints; the mode is restored
