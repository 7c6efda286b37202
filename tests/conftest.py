import pickle

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # the suite's tiny models are dominated by thread synchronisation; on a
    # shared 2-core machine two OpenMP threads make them far slower than one
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _write_official_batch(path, images, labels):
    # the CIFAR-10 "python version" layout: pickled dict with bytes keys, data (N, 3072) uint8
    d = {b"batch_label": b"fake", b"labels": list(map(int, labels)), b"data": images.reshape(len(images), -1),
         b"filenames": [b"f.png"] * len(images)}
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)


@pytest.fixture
def fake_cifar(tmp_path):
    """Six CIFAR-10 python batches of 4 random images each (train 1-5, test) under tmp_path: (root, images, labels)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    images = rng.integers(0, 256, size=(6, 4, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, size=(6, 4))
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        _write_official_batch(folder / name, images[i], labels[i])
    return tmp_path, images, labels
