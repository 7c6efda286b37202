"""Tests of the image front end (vsmd_ts.images): tiny U-Nets, few steps, 8x8 images."""

import csv
import json
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from vsmd_ts.images import (  # noqa: E402
    CIFAR10NotFoundError,
    FIDUnavailableError,
    TrainConfig,
    UNet,
    build_model,
    compute_fid,
    generate,
    load_checkpoint,
    load_cifar10,
    load_dataset,
    load_inception,
    make_grid,
    model_from_checkpoint,
    train,
)
from vsmd_ts.diffusion import make_sde  # noqa: E402
from vsmd_ts.images.__main__ import main  # noqa: E402
from vsmd_ts.images.precond import GaussianResidualPrecond  # noqa: E402

TINY = dict(
    base_channels=8,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attn_resolutions=(4,),
    num_heads=2,
    progress=False,
    num_samples=4,
    sample_steps=4,
    log_every=1,
    num_trajectories=8,
    trajectory_steps=10,
)


# ------------------------------------------------------------------- U-Net
@pytest.mark.parametrize(
    "shape, mult, attn, classes",
    [((1, 8, 8), (1, 2), (4,), 0), ((3, 16, 16), (1, 2, 2), (8, 4), 10)],
)
def test_unet_shapes_and_zero_init(shape, mult, attn, classes):
    net = UNet(shape, base_channels=8, channel_mult=mult, num_res_blocks=1, attn_resolutions=attn, num_heads=2,
               num_classes=classes)
    a, t = torch.randn(5, 2, *shape), torch.rand(5) * 0.999 + 1e-3
    cond = torch.arange(5) % 10 if classes else None
    out = net(a, t, cond)
    assert out.shape == (5,) + shape
    assert torch.all(out == 0)  # zero-initialised output layer: eps_hat = 0 before training
    # with the zero-initialised layers perturbed, the prediction depends on x, v and t
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 1 and not p.any():
                p.normal_(0, 0.1)
    out = net(a, t, cond)
    a_x, a_v = a.clone(), a.clone()
    a_x[:, 0] += 1.0
    a_v[:, 1] += 1.0
    assert not torch.allclose(net(a_x, t, cond), out)
    assert not torch.allclose(net(a_v, t, cond), out)
    assert not torch.allclose(net(a, t.flip(0), cond), out)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["vscld", "vsuld", "vsdm"])
def test_gaussian_preconditioning_is_exact_for_gaussian_data(name):
    # For per-pixel Gaussian data E[eps_v | a_t] is linear in a_t: the closed-form
    # coefficients of the Gaussian part must match a least-squares regression.
    sde = make_sde(name, (1, 1, 2), beta=10.0)
    if sde.learns_A:
        sde.A.set_(torch.tensor([[[0.05, -0.1]]]))
    pc = GaussianResidualPrecond(sde, lambda a, t, c=None: torch.zeros_like(a[:, 0]), (1, 1, 2))
    mu, s2 = torch.tensor([[[0.3, -0.5]]]), torch.tensor([[[0.2, 0.6]]])
    pc.set_data_stats(mu, s2)
    n = 40_000
    for tv in (0.002, 0.05, 0.5):
        x0 = mu + s2.sqrt() * torch.randn(n, 1, 1, 2)
        t = torch.full((n,), tv)
        a, eps = sde.perturb(x0, t)
        eps_hat = pc(a, t)
        c = pc.coefficients(t[:1])
        for j in range(2):
            feats = torch.cat([a[:, :, 0, 0, j], torch.ones(n, 1)], 1).double()
            fit = torch.linalg.lstsq(feats, eps[:, -1, 0, 0, j, None].double()).solution[:, 0]
            names = ["x", "v", "b"] if sde.num_channels == 2 else ["x", "b"]
            closed = [c[name][0, 0, 0, j] for name in names]
            assert torch.allclose(fit.float(), torch.stack(closed), atol=0.02)
        # and it beats any other prediction, e.g. zero
        assert ((eps[:, -1] - eps_hat) ** 2).mean() < (eps[:, -1] ** 2).mean()


def test_unet_rejects_bad_shapes():
    with pytest.raises(ValueError, match="divisible"):
        UNet((1, 10, 10), channel_mult=(1, 2, 2))
    net = UNet((1, 8, 8), base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=())
    with pytest.raises(ValueError, match="expected a state of shape"):
        net(torch.randn(2, 1, 8, 8), torch.rand(2))
    cond_net = UNet((1, 8, 8), base_channels=8, channel_mult=(1,), num_res_blocks=1, num_classes=3)
    with pytest.raises(ValueError, match="class-conditional"):
        cond_net(torch.randn(2, 2, 1, 8, 8), torch.rand(2))


# -------------------------------------------------------------------- data
def test_digits_dataset_range_and_upsampling():
    d8 = load_dataset("digits")
    assert len(d8) == 1797 and d8.data_shape == (1, 8, 8)
    x = d8.batch(torch.arange(10))
    assert x.min() >= -1 and x.max() <= 1 and x.min() == -1 and x.max() == 1
    d16 = load_dataset("digits", image_size=16)
    assert d16.data_shape == (1, 16, 16)
    # bilinear upsampling keeps the mean brightness of each digit (up to border effects)
    assert torch.allclose(d16.images.mean((1, 2, 3)), d8.images.mean((1, 2, 3)), atol=0.03)


def test_cifar10_reads_the_python_batches(fake_cifar):
    root, images, labels = fake_cifar
    train_set = load_cifar10(root)  # parent folder works, and so does the batches folder itself
    assert train_set.images.dtype == torch.uint8 and train_set.data_shape == (3, 32, 32)
    np.testing.assert_array_equal(train_set.images.numpy(), images[:5].reshape(20, 3, 32, 32))
    np.testing.assert_array_equal(train_set.labels.numpy(), labels[:5].reshape(-1))
    test_set = load_cifar10(root / "cifar-10-batches-py", split="test")
    np.testing.assert_array_equal(test_set.images.numpy(), images[5])
    assert train_set.hflip and not test_set.hflip
    x = train_set.batch(torch.arange(20), augment=False)
    assert torch.allclose(x, torch.from_numpy(images[:5].reshape(20, 3, 32, 32)).float() / 127.5 - 1)
    flipped = train_set.batch(torch.arange(20), generator=torch.Generator().manual_seed(0))
    is_flipped = [(flipped[i] == x[i].flip(-1)).all() and not (flipped[i] == x[i]).all() for i in range(20)]
    assert 0 < sum(is_flipped) < 20


def test_missing_cifar10_names_the_expected_files(tmp_path, capsys):
    with pytest.raises(CIFAR10NotFoundError, match="data_batch_1.*data_batch_5"):
        load_dataset("cifar10", tmp_path / "nowhere")
    (tmp_path / "data_batch_1").write_bytes(b"")
    with pytest.raises(CIFAR10NotFoundError, match="lacks data_batch_2, data_batch_3, data_batch_4, data_batch_5"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(CIFAR10NotFoundError, match="test_batch"):
        load_dataset("cifar10", tmp_path, split="test")
    with pytest.raises(CIFAR10NotFoundError, match="--data-dir"):
        load_dataset("cifar10", None)
    # the command line turns it into a one-line error and exit status 2
    assert main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert "data_batch_1" in capsys.readouterr().err


def test_cifar10_training_runs_on_fake_batches(fake_cifar, tmp_path):
    root, _, _ = fake_cifar
    cfg = TrainConfig(dataset="cifar10", data_dir=str(root), out=str(tmp_path / "run"), steps=2, batch_size=4, **TINY)
    summary = train(cfg)
    assert summary["step"] == 2 and np.isfinite(summary["eval_loss_end"])
    assert load_checkpoint(tmp_path / "run" / "last.ckpt")["vsmd"]["image_config"]["dataset"] == "cifar10"


# ----------------------------------------------------------------- training
DIGITS_RUN = dict(dataset="digits", steps=40, batch_size=32, lr=2e-3, lr_warmup=5, warmup=0.25, cooldown=0.25,
                  cycle_steps=20, ckpt_every=0, **TINY)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    return out, train(TrainConfig(out=str(out), **DIGITS_RUN))


def test_training_on_digits_reduces_the_loss(digits_run):
    out, summary = digits_run
    # fixed times and noise; the zero-initialised U-Net predicts eps_v = 0: loss E|eps_v|^2 = 1
    assert summary["eval_loss_start"] == pytest.approx(1.0, abs=0.05)
    assert summary["eval_loss_end"] < 0.5 * summary["eval_loss_start"]
    # Algorithm 1 ran forward stages: A moved away from its initial value 0
    assert summary["A_v_absmax"] > 0
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    stages = {k for row in rows for k, v in row.items() if k.startswith("loss_") and v != ""}
    assert stages == {"loss_dsm", "loss_backward", "loss_forward"}
    assert [int(r["step"]) for r in rows] == list(range(1, 41))
    assert (out / "samples.png").is_file() and (out / "data.png").is_file()


def test_training_with_gaussian_preconditioning_reduces_the_loss(tmp_path):
    summary = train(TrainConfig(out=str(tmp_path), precond="gaussian", **DIGITS_RUN))
    # the zero-initialised U-Net leaves the exact noise prediction for per-pixel Gaussian data,
    # already far below E|eps_v|^2 = 1, and training lowers it further
    assert summary["eval_loss_start"] < 0.2
    assert summary["eval_loss_end"] < 0.97 * summary["eval_loss_start"]
    model, _, data_var = model_from_checkpoint(tmp_path / "last.ckpt")
    assert isinstance(model.net, GaussianResidualPrecond)
    x = generate(model, 4, steps=4, data_var=data_var)
    assert torch.isfinite(x).all() and x.abs().max() <= 1


def test_sampling_returns_finite_images_in_range(digits_run):
    out, _ = digits_run
    model, cfg, data_var = model_from_checkpoint(out / "last.ckpt")
    x = generate(model, 6, steps=5, seed=3, data_var=data_var, batch_size=4)
    assert x.shape == (6, 1, 8, 8) and torch.isfinite(x).all()
    assert x.min() >= -1 and x.max() <= 1 and x.std() > 0.05
    assert torch.equal(x, generate(model, 6, steps=5, seed=3, data_var=data_var, batch_size=4))  # seeded
    assert not torch.equal(x, generate(model, 6, steps=5, seed=4, data_var=data_var, batch_size=4))
    grid = make_grid(x, nrow=3)
    assert grid.shape == (2 * 9 + 1, 3 * 9 + 1, 1) and grid.dtype == np.uint8


def test_sample_command_writes_grid_and_npz(digits_run, tmp_path):
    out, _ = digits_run
    png, npz = tmp_path / "grid.png", tmp_path / "s.npz"
    rc = main(["sample", "--checkpoint", str(out / "last.ckpt"), "--num", "9", "--steps", "3", "--out", str(png),
               "--npz", str(npz), "--device", "cpu", "--no-progress"])
    assert rc == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    images = np.load(npz)["images"]
    assert images.shape == (9, 8, 8, 1) and images.dtype == np.uint8


def test_checkpoint_resume_continues_the_step_count(tmp_path):
    base = dict(dataset="digits", out=str(tmp_path), batch_size=16, ckpt_every=0, lr_warmup=0, **TINY)
    first = train(TrainConfig(steps=3, **base))
    assert first["step"] == 3 and first["start_step"] == 0
    ckpt = load_checkpoint(tmp_path / "last.ckpt")
    assert ckpt["global_step"] == 3
    second = train(TrainConfig(steps=6, resume=True, **base))
    assert second["start_step"] == 3 and second["step"] == 6
    ckpt = load_checkpoint(tmp_path / "last.ckpt")
    assert ckpt["global_step"] == 6 and ckpt["vsmd"]["train_seconds"] >= first["train_seconds"]
    # AdamW's own counter kept counting: 3 steps before the resume plus 3 after
    steps = {float(s["step"]) for s in ckpt["optimizer_states"][0]["state"].values()}
    assert steps == {6.0}
    logged = [int(r["step"]) for r in csv.DictReader(open(tmp_path / "metrics.csv"))]
    assert logged == [1, 2, 3, 4, 5, 6]  # one row per step, none repeated by the resume
    # resuming with only `out` keeps the saved run length (not the digits preset's 3000 steps)
    third = train(TrainConfig(out=str(tmp_path), resume=True, progress=False))
    assert third["start_step"] == third["step"] == 6 and third["config"]["steps"] == 6
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(TrainConfig(steps=6, resume=True, **{**base, "out": str(tmp_path / "empty")}))


def test_build_model_matches_the_config():
    cfg = TrainConfig(dataset="digits", sde="vsuld", damping_ratio=0.9, precond="gaussian", **TINY).resolved()
    model = build_model(cfg)
    assert model.sde.damping_ratio == 0.9 and model.sde.learns_A
    assert isinstance(model.net, GaussianResidualPrecond) and model.net.sde is model.sde
    assert model.net.net.data_shape == (1, 8, 8) and model.net.net.num_channels == 2
    # A belongs to the SDE only (not a parameter of the network: DDP, optimiser groups)
    assert [n for n, _ in model.named_parameters() if "A.theta" in n] == ["sde.A.theta"]
    plain = build_model(TrainConfig(dataset="digits", **TINY).resolved())  # default: the paper's parametrisation
    assert isinstance(plain.net, UNet)


def test_ema_warm_up_forgets_the_initial_weights():
    from torch.optim.swa_utils import AveragedModel

    from vsmd_ts.training import ema_multi_avg_fn

    m = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(m.weight)
    ema = AveragedModel(m, multi_avg_fn=ema_multi_avg_fn(0.999), use_buffers=True)
    ema.update_parameters(m)  # copies the initial weight 0
    with torch.no_grad():
        m.weight.fill_(1.0)
    for _ in range(3000):
        ema.update_parameters(m)
    # a fixed decay 0.999 would leave 0.999**3000 = 5% of the initial weight
    assert float(ema.module.weight.detach()) > 0.999


# ---------------------------------------------------------------------- FID
class _TinyFeatures(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 6, 5, stride=4)

    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(torch.tanh(self.conv(x)), 1)  # (N, 6, 1, 1)


def _save_tiny_extractor(path):
    with warnings.catch_warnings():  # TorchScript is deprecated in torch >= 2.10, but FID networks ship as it
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(_TinyFeatures()).save(str(path))
    return path


def test_fid_with_a_local_torchscript_extractor(tmp_path):
    path = _save_tiny_extractor(tmp_path / "features.pt")
    extractor = load_inception(path)
    assert extractor.num_features == 6
    digits = load_dataset("digits")
    real = digits.batch(torch.arange(64))
    same = compute_fid(real, real, extractor)
    other = compute_fid(real, digits.batch(torch.arange(64, 128)), extractor)
    noise = compute_fid(real, torch.rand(64, 1, 8, 8) * 2 - 1, extractor)
    assert abs(same) < 1e-4 and 0 < other < noise


def test_fid_command_end_to_end(digits_run, tmp_path):
    out, _ = digits_run
    path = _save_tiny_extractor(tmp_path / "features.pt")
    result = tmp_path / "fid.json"
    rc = main(["fid", "--checkpoint", str(out / "last.ckpt"), "--inception", str(path), "--num", "16", "--steps", "3",
               "--num-real", "64", "--device", "cpu", "--json", str(result), "--no-progress"])
    assert rc == 0
    report = json.loads(result.read_text())
    assert report["fid"] > 0 and report["reference_size"] == 64 and report["num_samples"] == 16


def test_fid_without_weights_gives_a_clear_message(tmp_path, capsys):
    with pytest.raises(FIDUnavailableError, match="nothing is downloaded"):
        load_inception(None)
    with pytest.raises(FIDUnavailableError, match="does not exist"):
        load_inception(tmp_path / "missing.pt")
    assert main(["fid", "--checkpoint", str(tmp_path / "x.ckpt")]) == 2
    assert "Inception weights on local disk" in capsys.readouterr().err
