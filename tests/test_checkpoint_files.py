"""Missing, empty, damaged or foreign checkpoints fail with a message naming the file and what to do (issue 28).

The command lines print ``error: ...`` and exit with status 2 instead of a
torch traceback (``EOFError``, ``OSError``, ``UnpicklingError``...).
"""

import argparse
import os
import warnings

import pytest
import torch

from vsmd_ts.images.__main__ import main as images_main
from vsmd_ts.toys import ToyConfig, train
from vsmd_ts.toys.__main__ import main as toys_main
from vsmd_ts.training import CheckpointError, CheckpointNotFoundError, load_checkpoint

TINY_TOY = dict(steps=2, hidden=8, num_blocks=1, batch_size=16, num_trajectories=4, trajectory_steps=2,
                progress=False, log_every=1, eval_every=0)
BAD = ["empty", "truncated", "random bytes", "text", "pickled object", "tensor", "missing"]
# what each message must say about the file
WHY = {"empty": "is empty", "truncated": "truncated or damaged", "random bytes": "truncated or damaged",
       "text": "truncated or damaged", "pickled object": "pickled argparse.Namespace", "tensor": "it holds a Tensor",
       "missing": "does not exist"}


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    train(ToyConfig(**TINY_TOY), out=out)
    return out


def _bad_file(folder, kind, good):
    path = folder / "bad.ckpt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random bytes":
        path.write_bytes(os.urandom(4096))
    elif kind == "text":
        path.write_text("step,loss\n1,0.5\n")
    elif kind == "pickled object":
        torch.save(argparse.Namespace(weights=1), path)  # loading it needs weights_only=False
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    return path


def _clean_error(capsys, path, *words):
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}"), err
    for word in words:
        assert word in err, (word, err)
    assert "Traceback" not in err and "weights_only" not in err, err
    return err


@pytest.mark.parametrize("kind", BAD)
def test_load_checkpoint_names_the_file_and_what_to_do(toy_run, tmp_path, kind):
    path = _bad_file(tmp_path, kind, toy_run / "last.ckpt")
    error = CheckpointNotFoundError if kind == "missing" else CheckpointError
    with pytest.raises(error) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and WHY[kind] in message and "pass a checkpoint written by" in message
    assert "weights_only" not in message
    assert isinstance(err.value, ValueError)
    if kind == "missing":
        assert isinstance(err.value, FileNotFoundError)


@pytest.mark.parametrize("kind", BAD)
def test_toys_sample_reports_a_bad_checkpoint(toy_run, tmp_path, capsys, kind):
    path = _bad_file(tmp_path, kind, toy_run / "last.ckpt")
    assert toys_main(["sample", "--checkpoint", str(path), "--num", "4", "--steps", "1", "--no-progress"]) == 2
    _clean_error(capsys, path, WHY[kind], "python -m vsmd_ts.toys train")


@pytest.mark.parametrize("kind", ["truncated", "random bytes", "pickled object"])
def test_toys_train_resume_reports_a_damaged_last_checkpoint(toy_run, tmp_path, capsys, kind):
    out = tmp_path / "run"
    out.mkdir()
    _bad_file(out, kind, toy_run / "last.ckpt").rename(out / "last.ckpt")
    args = ["train", "--out", str(out), "--resume", "--steps", "3", "--hidden", "8", "--num-blocks", "1",
            "--batch-size", "16", "--num-trajectories", "4", "--trajectory-steps", "2", "--eval-every", "0",
            "--no-progress"]
    assert toys_main(args) == 2
    _clean_error(capsys, out / "last.ckpt", WHY[kind], "without --resume")


def test_toys_train_resume_reports_a_checkpoint_of_another_model(toy_run, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.ckpt").write_bytes((toy_run / "last.ckpt").read_bytes())  # hidden 8
    args = ["train", "--out", str(out), "--resume", "--steps", "3", "--hidden", "16", "--num-blocks", "1",
            "--batch-size", "16", "--num-trajectories", "4", "--trajectory-steps", "2", "--eval-every", "0",
            "--no-progress"]
    assert toys_main(args) == 2
    _clean_error(capsys, out / "last.ckpt", "a model of another size", "options of the run that wrote it")


@pytest.mark.parametrize("kind", BAD)
def test_images_sample_reports_a_bad_checkpoint(toy_run, tmp_path, capsys, kind):
    path = _bad_file(tmp_path, kind, toy_run / "last.ckpt")
    args = ["sample", "--checkpoint", str(path), "--num", "1", "--steps", "1", "--out", str(tmp_path / "g.png"),
            "--device", "cpu", "--no-progress"]
    assert images_main(args) == 2
    _clean_error(capsys, path, WHY[kind], "python -m vsmd_ts.images train")


@pytest.mark.parametrize("kind", ["empty", "random bytes", "text"])
def test_images_train_resume_reports_a_bad_checkpoint(toy_run, tmp_path, capsys, kind):
    path = _bad_file(tmp_path, kind, toy_run / "last.ckpt")
    assert images_main(["train", "--out", str(tmp_path / "run"), "--resume", str(path), "--no-progress"]) == 2
    _clean_error(capsys, path, WHY[kind], "without --resume")


def test_images_commands_report_a_toys_checkpoint(toy_run, tmp_path, capsys):
    ckpt = toy_run / "last.ckpt"
    assert images_main(["sample", "--checkpoint", str(ckpt), "--out", str(tmp_path / "g.png"), "--no-progress"]) == 2
    _clean_error(capsys, ckpt, "is a vsmd_ts.toys checkpoint", "python -m vsmd_ts.toys")
    assert images_main(["train", "--out", str(tmp_path / "run"), "--resume", str(ckpt), "--no-progress"]) == 2
    _clean_error(capsys, ckpt, "is a vsmd_ts.toys checkpoint")


class _Features(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


@pytest.mark.parametrize("kind", ["truncated", "pickled object"])
def test_images_fid_reports_a_bad_checkpoint(toy_run, tmp_path, capsys, kind):
    path = _bad_file(tmp_path, kind, toy_run / "last.ckpt")
    inception = tmp_path / "features.pt"
    with warnings.catch_warnings():  # TorchScript is deprecated in torch >= 2.10
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(_Features()).save(str(inception))
    args = ["fid", "--checkpoint", str(path), "--inception", str(inception), "--num", "2", "--device", "cpu",
            "--no-progress"]
    assert images_main(args) == 2
    _clean_error(capsys, path, WHY[kind])
