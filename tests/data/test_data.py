from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from optuna_bocr.data import DataSplits
from optuna_bocr.data import DEBIAN_FASHION_MNIST
from optuna_bocr.data import ImageTensorDataset
from optuna_bocr.data import load_splits
from optuna_bocr.data._fashion_mnist import read_idx

FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]

pytestmark = pytest.mark.skipif(
    not all((DEBIAN_FASHION_MNIST / f).is_file() for f in FILES),
    reason="Fashion-MNIST not installed: apt-get install dataset-fashion-mnist",
)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPTUNA_BOCR_DATA", raising=False)


def _hashes(images: torch.Tensor, labels: torch.Tensor) -> list[tuple[str, int]]:
    arr = images.contiguous().numpy()
    return sorted(
        (hashlib.sha1(arr[i].tobytes()).hexdigest(), int(labels[i])) for i in range(len(arr))
    )


def _link_files(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for f in FILES:
        os.symlink(DEBIAN_FASHION_MNIST / f, directory / f)
    return directory


def test_fashion_mnist_splits_partition_the_training_set() -> None:
    s = load_splits("fashion-mnist", val_size=5000, seed=0)
    assert isinstance(s, DataSplits)
    assert (s.name, s.num_classes, s.in_channels, s.image_size) == ("fashion-mnist", 10, 1, 32)
    assert len(s.classes) == 10
    assert (len(s.train), len(s.val), len(s.test)) == (55000, 5000, 10000)
    x, y = s.val[0]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    assert isinstance(s.train, ImageTensorDataset) and isinstance(s.val, ImageTensorDataset)

    # train + val is exactly the original training set (as a multiset of images and labels),
    # so the two are disjoint and the validation images never come from the test set.
    raw_x = read_idx(DEBIAN_FASHION_MNIST / FILES[0])
    raw_y = read_idx(DEBIAN_FASHION_MNIST / FILES[1])
    inner = slice(2, 30)  # undo the 2-pixel padding
    parts = torch.cat([s.train.images, s.val.images])[:, 0, inner, inner]
    labels = torch.cat([s.train.labels, s.val.labels])
    assert _hashes(parts, labels) == _hashes(raw_x, raw_y)
    # Validation labels are roughly balanced (a random draw, not the first 5000 images).
    counts = torch.bincount(s.val.labels, minlength=10)
    assert counts.min() > 400 and counts.max() < 600


def test_split_is_seeded_and_nested() -> None:
    a = load_splits("fashion-mnist", val_size=1000, seed=3)
    b = load_splits("fashion-mnist", val_size=1000, seed=3)
    c = load_splits("fashion-mnist", val_size=1000, seed=4)
    big = load_splits("fashion-mnist", val_size=3000, seed=3)
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.val.labels, b.val.labels)
    assert not torch.equal(a.val.images, c.val.images)
    small = set(_hashes(a.val.images, a.val.labels))
    assert small <= set(_hashes(big.val.images, big.val.labels))


def test_normalisation_padding_and_resizing() -> None:
    s = load_splits("fashion-mnist", val_size=2000)
    x, _ = s.val.tensors()
    assert x.shape == (2000, 1, 32, 32)
    background = (0.0 - 0.2860) / 0.3530
    assert torch.allclose(x[:, :, :2, :], torch.tensor(background))
    assert torch.allclose(x[:, :, :, -2:], torch.tensor(background))
    # The same image through __getitem__ and the batched path.
    assert torch.equal(s.val[7][0], x[7])
    inner = x[:, :, 2:30, 2:30]
    assert abs(inner.mean().item()) < 0.1 and abs(inner.std().item() - 1.0) < 0.1

    native = load_splits("fashion-mnist", val_size=2000, image_size=28)
    assert native.val[0][0].shape == (1, 28, 28)
    assert torch.equal(native.val.images, s.val.images[:, :, 2:30, 2:30])
    small = load_splits("fashion-mnist", val_size=2000, image_size=16)
    assert small.test[0][0].shape == (1, 16, 16)
    assert small.image_size == 16


def test_other_locations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = load_splits("fashion-mnist", val_size=500)
    # A plain folder holding the idx .gz files.
    flat = _link_files(tmp_path / "flat")
    got = load_splits("fashion-mnist", root=flat, val_size=500)
    assert torch.equal(got.val.images, ref.val.images)
    # torchvision's layout: <root>/FashionMNIST/raw/, uncompressed files there too.
    raw = tmp_path / "tv" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    import gzip
    import shutil

    for f in FILES:
        with gzip.open(DEBIAN_FASHION_MNIST / f, "rb") as src, open(raw / f[:-3], "wb") as dst:
            shutil.copyfileobj(src, dst)
    got = load_splits("fashion-mnist", root=tmp_path / "tv", val_size=500)
    assert torch.equal(got.test.images, ref.test.images)
    # $OPTUNA_BOCR_DATA when no root is given.
    monkeypatch.setenv("OPTUNA_BOCR_DATA", str(flat))
    assert torch.equal(load_splits("fashion-mnist", val_size=500).val.labels, ref.val.labels)


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Unknown dataset 'mnist'"):
        load_splits("mnist")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_splits("fashion-mnist", root=tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_splits("fashion-mnist", root=empty)
    with pytest.raises(ValueError, match="smaller than the training set"):
        load_splits("fashion-mnist", val_size=60000)
    with pytest.raises(ValueError, match="positive integer"):
        load_splits("fashion-mnist", val_size=0)
    with pytest.raises(ValueError, match="image_size"):
        load_splits("fashion-mnist", image_size=4)
    with pytest.raises(FileNotFoundError, match="--data-dir DIR .*or --download"):
        load_splits("cifar10", root=empty)
    with pytest.raises(FileNotFoundError, match="train"):
        load_splits("imagefolder", root=empty)
    with pytest.raises(ValueError, match="needs a directory"):
        load_splits("imagefolder")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / FILES[0][:-3]).write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 20)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(bad / FILES[0][:-3])
    (bad / FILES[1]).write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="not a valid gzip file"):
        read_idx(bad / FILES[1])


def test_imagefolder(tmp_path: Path) -> None:
    from PIL import Image

    s = load_splits("fashion-mnist", val_size=200, image_size=28)
    x = s.val.images[:, 0].numpy()
    y = s.val.labels.numpy()
    for split, idx in (("train", range(0, 150)), ("val", range(150, 200))):
        for i in idx:
            d = tmp_path / split / s.classes[y[i]].replace("/", "-")
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[i]).save(d / f"{i}.png")
    if len({s.classes[c] for c in y[150:200]}) != len({s.classes[c] for c in y[:150]}):
        pytest.skip("class folders differ in this tiny sample")
    got = load_splits("imagefolder", root=tmp_path, val_size=30, image_size=24)
    assert (len(got.train), len(got.val), len(got.test)) == (120, 30, 50)
    assert got.in_channels == 3 and got.num_classes == len(set(y[:150]))
    img, label = got.val[0]
    assert img.shape == (3, 24, 24) and img.dtype == torch.float32 and 0 <= label < 10
    assert np.isfinite(img.numpy()).all()
