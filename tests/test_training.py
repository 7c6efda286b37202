"""Tests of the shared training path (vsmd_ts.training) and of the SDE registry it reads."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vsmd_ts.diffusion import (
    SDE_NAMES,
    SDE_REGISTRY,
    ScoreModel,
    default_kwargs,
    is_momentum,
    make_optimizer,
    make_sde,
    split_A_parameters,
)

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


# ------------------------------------------------------------------ registry
@pytest.mark.parametrize("name", SDE_NAMES)
def test_registry_builds_every_sde_with_its_defaults(name):
    sde = make_sde(name, (3,))
    spec = SDE_REGISTRY[name]
    assert isinstance(sde, spec.cls) and is_momentum(name) == (sde.num_channels == 2)
    assert sde.learns_A == spec.learns_A == name.startswith("vs")
    d = default_kwargs(name)
    assert sde.beta_value == d["beta"]
    if is_momentum(name):
        assert sde.damping_ratio == d["damping_ratio"]
    d["beta"] = -1.0  # a copy: the registry is unchanged
    assert default_kwargs(name)["beta"] > 0


def test_registry_defaults_and_overrides():
    assert [default_kwargs(n)["beta"] for n in ("vsuld", "uld", "vp")] == [10.0, 10.0, 20.0]
    assert default_kwargs("vsuld")["damping_ratio"] == default_kwargs("uld")["damping_ratio"] == 0.7
    assert make_sde("VSULD", (2,), beta=5.0, damping_ratio=0.5, gamma=3.0).gamma == 3.0
    assert make_sde("vscld", (2,), damping_ratio=1.0).damping_ratio == 1.0  # the fixed value is accepted
    with pytest.raises(ValueError, match="critically damped"):
        make_sde("cld", (2,), damping_ratio=0.7)
    with pytest.raises(ValueError, match="no velocity"):
        make_sde("vsdm", (2,), damping_ratio=0.7)
    with pytest.raises(ValueError, match="learn_A"):
        make_sde("uld", (2,), learn_A=True)
    with pytest.raises(ValueError, match="unknown sde"):
        make_sde("ddpm", (2,))


def test_A_parameters_are_found_by_identity():
    class Net(torch.nn.Module):  # a network parameter that *looks* like A by name
        def __init__(self):
            super().__init__()
            self.A = torch.nn.Module()
            self.A.theta = torch.nn.Parameter(torch.zeros(2))
            self.lin = torch.nn.Linear(2, 2)

    class Renamed(torch.nn.Module):  # the SDE under another attribute name
        def __init__(self):
            super().__init__()
            self.forward_process = make_sde("vsuld", (2,))
            self.denoiser = Net()

    m = Renamed()
    others, A = split_A_parameters(m)
    assert [id(p) for p in A] == [id(m.forward_process.A.theta)]
    assert any(p is m.denoiser.A.theta for p in others) and len(others) == 3
    groups = {g["name"]: g for g in make_optimizer(m, weight_decay=0.1).param_groups}
    assert groups["A"]["weight_decay"] == 0.0 and groups["A"]["params"][0] is m.forward_process.A.theta
    assert split_A_parameters(ScoreModel(make_sde("cld", (2,)), Net()))[1] == []  # fixed A: no A group


# ------------------------------------------------------------------ imports
def test_core_and_front_ends_stay_light():
    code = (
        "import sys\n"
        "import vsmd_ts.diffusion\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', 'gluonts')]\n"
        "assert not heavy, heavy\n"
        "import vsmd_ts.toys, vsmd_ts.images, vsmd_ts.training\n"
        "loaded = {m.split('.')[1] for m in sys.modules if m.startswith('vsmd_ts.')}\n"
        "assert 'timeseries' not in loaded, loaded\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('lightning', 'gluonts')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=ENV, cwd=ROOT)
    for front, other in (("toys", "images"), ("images", "toys")):
        src = "\n".join(p.read_text() for p in (ROOT / "vsmd_ts" / front).glob("*.py"))
        assert f"vsmd_ts.{other}" not in src and f"from ..{other}" not in src


# ------------------------------------------------------- lr schedule, EMA
def test_lr_multiplier_warm_up_and_cosine():
    from vsmd_ts.training import lr_multiplier

    assert [lr_multiplier(s, 100, 4) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert lr_multiplier(4, 100, 4, "cosine") == pytest.approx(1.0)
    assert lr_multiplier(100, 100, 4, "cosine") == pytest.approx(0.1)
    mid = lr_multiplier(52, 100, 4, "cosine")
    assert mid == pytest.approx(0.55)


# ------------------------------------------------------- kill, Ctrl-C, resume
TOY = ["--dataset", "spiral", "--sde", "vsuld", "--hidden", "8", "--num-blocks", "1", "--batch-size", "32",
       "--num-trajectories", "8", "--trajectory-steps", "3", "--log-every", "5", "--ckpt-every", "20", "--no-progress"]


def _rows(out):
    path = out / "metrics.csv"
    return list(csv.DictReader(open(path))) if path.is_file() else []


def _start_and_wait(out, min_step):
    # a shell without job control starts background jobs with SIGINT ignored, and children inherit that
    # (Python then never raises KeyboardInterrupt): give the child the default disposition
    proc = subprocess.Popen([sys.executable, "-m", "vsmd_ts.toys", "train", "--steps", "1000000", "--out", str(out), *TOY],
                            env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        rows = _rows(out)
        if rows and int(rows[-1]["step"]) >= min_step and (out / "last.ckpt").is_file():
            return proc
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"training did not reach step {min_step}: {proc.stderr.read().decode()[-2000:]}")


def _ckpt_step(out):
    return int(torch.load(out / "last.ckpt", weights_only=True)["global_step"])


def test_kill_then_resume_loses_at_most_one_checkpoint_interval(tmp_path):
    from vsmd_ts.toys import ToyConfig, train

    out = tmp_path / "run"
    proc = _start_and_wait(out, 45)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    last_logged = int(_rows(out)[-1]["step"])
    saved = _ckpt_step(out)
    # rows are written before the checkpoint of the same step: a kill between the two loses exactly one interval
    assert saved % 20 == 0 and last_logged - 20 <= saved <= last_logged + 20
    kw = dict(dataset="spiral", sde="vsuld", hidden=8, num_blocks=1, batch_size=32, num_trajectories=8,
              trajectory_steps=3, log_every=5, ckpt_every=20, progress=False)
    summary = train(ToyConfig(steps=saved + 10, resume=True, **kw), out=out)
    assert summary["start_step"] == saved and summary["steps"] == saved + 10
    steps = [int(r["step"]) for r in _rows(out)]
    assert steps == list(range(5, saved + 11, 5))  # rows after the checkpoint were logged once, by the resumed run


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_save_a_checkpoint(tmp_path, sig):
    out = tmp_path / "run"
    proc = _start_and_wait(out, 25)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    last_logged = int(_rows(out)[-1]["step"])
    assert _ckpt_step(out) >= last_logged  # nothing that was logged is lost


def test_time_budget_stops_and_checkpoints(tmp_path):
    from vsmd_ts.toys import ToyConfig, load_checkpoint, train

    cfg = ToyConfig(dataset="spiral", sde="cld", hidden=8, num_blocks=1, batch_size=32, log_every=0, ckpt_every=0,
                    steps=10**7, max_minutes=0.01, progress=False)
    summary = train(cfg, out=tmp_path)
    assert 0 < summary["steps"] < 10**7
    assert load_checkpoint(tmp_path)["global_step"] == summary["steps"]  # saved where it stopped


def test_each_checkpoint_is_written_after_the_row_of_its_step(tmp_path, monkeypatch):
    # a kill between the checkpoint of step k and the row of step k would lose the row for good
    from vsmd_ts.toys import ToyConfig, train
    from vsmd_ts.training.module import DiffusionModule

    seen = []
    original = DiffusionModule.on_save_checkpoint

    def spy(self, checkpoint):
        seen.append((self.global_step, [int(r["step"]) for r in _rows(tmp_path)]))
        original(self, checkpoint)

    monkeypatch.setattr(DiffusionModule, "on_save_checkpoint", spy)
    cfg = ToyConfig(dataset="spiral", sde="cld", hidden=8, num_blocks=1, batch_size=32, log_every=5, ckpt_every=10,
                    steps=30, progress=False)
    train(cfg, out=tmp_path)
    periodic = [(step, rows) for step, rows in seen if step in (10, 20)]
    assert [step for step, _ in periodic] == [10, 20]
    for step, rows in periodic:
        assert rows and rows[-1] == step, (step, rows)


# ------------------------------------------------------------- precision
def test_auto_precision_takes_bf16_only_on_a_cpu_where_it_is_much_faster(monkeypatch):
    from vsmd_ts.training import precision

    assert precision.resolve_precision("32-true", "cpu") == "32-true"
    assert precision.resolve_precision("bf16-mixed", "gpu") == "bf16-mixed"
    assert precision.resolve_precision("auto", "gpu") == "32-true"  # not measured on GPUs
    for speedup, expected in ((4.6, "bf16-mixed"), (2.0, "bf16-mixed"), (1.9, "32-true"), (0.7, "32-true")):
        monkeypatch.setattr(precision, "bf16_matmul_speedup", lambda: speedup)
        assert precision.resolve_precision("auto", "cpu") == expected
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert precision.resolve_precision("auto", "auto") == "32-true"  # no GPU: the CPU rule (speed-up 0.7)
    monkeypatch.setattr(precision, "bf16_matmul_speedup", lambda: 3.0)
    assert precision.resolve_precision("auto", None) == "bf16-mixed"
    # the real measurement: a finite positive ratio, memoised per thread count
    monkeypatch.undo()
    ratio = precision.bf16_matmul_speedup(rows=64, width=64, repeats=1)
    assert 0 < ratio < float("inf") and precision.bf16_matmul_speedup(rows=64, width=64, repeats=1) == ratio
