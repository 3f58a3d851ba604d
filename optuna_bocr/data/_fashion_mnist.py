"""Fashion-MNIST's idx files: where they are looked for, and how they are decoded."""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import numpy as np
import torch

DATA_ENV = "OPTUNA_BOCR_DATA"
"""Environment variable naming a directory to search for datasets when ``root`` is ``None``."""

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package ``dataset-fashion-mnist`` installs the idx files."""

_FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> torch.Tensor:
    """Decode an idx (``.gz`` or plain) file of unsigned bytes into a tensor."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (gzip.BadGzipFile, EOFError) as e:
        raise ValueError(f"{path} is not a valid gzip file: {e}") from e
    if len(raw) < 4:
        raise ValueError(f"{path} is not an idx file (too short).")
    magic = int.from_bytes(raw[:4], "big")
    dtype_code, ndim = magic >> 8, magic & 0xFF
    if dtype_code != 0x08 or not 1 <= ndim <= 4:
        raise ValueError(f"{path} is not an idx file of unsigned bytes (magic {magic:#x}).")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: header says {dims}.")
    data = np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)
    return torch.from_numpy(data.copy())


def _find_idx_dir(directory: Path) -> dict[str, Path] | None:
    """The four Fashion-MNIST idx files (``.gz`` or not) in ``directory``, if all are there."""
    found: dict[str, Path] = {}
    for key, stem in _FASHION_FILES.items():
        for candidate in (directory / stem, directory / f"{stem}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


@functools.lru_cache(maxsize=2)
def _load_fashion_files(paths: tuple[tuple[str, str], ...]) -> dict[str, torch.Tensor]:
    return {key: read_idx(Path(p)) for key, p in paths}


def _fashion_candidates(root: Path) -> list[Path]:
    return [root, root / "FashionMNIST" / "raw", root / "raw", root / "fashion-mnist"]


def load_fashion_mnist(
    root: str | os.PathLike[str] | None, download: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train images, train labels, test images, test labels (``uint8`` / int tensors).

    Looks in ``root`` (or ``$OPTUNA_BOCR_DATA``, then the Debian package's folder) and
    downloads with torchvision when ``download`` is set and nothing is found.

    Raises:
        FileNotFoundError: Nothing found and no download asked (the message says what to do).
    """
    searched: list[Path] = []
    roots: list[Path] = []
    if root is not None:
        roots.append(Path(root).expanduser())
    else:
        if os.environ.get(DATA_ENV):
            roots.append(Path(os.environ[DATA_ENV]).expanduser())
        roots.append(DEBIAN_FASHION_MNIST)
    for r in roots:
        for candidate in _fashion_candidates(r):
            searched.append(candidate)
            files = _find_idx_dir(candidate)
            if files is not None:
                t = _load_fashion_files(tuple(sorted((k, str(v)) for k, v in files.items())))
                return t["train_images"], t["train_labels"], t["test_images"], t["test_labels"]
    if download:
        from torchvision.datasets import FashionMNIST

        target = roots[0] if root is not None else default_data_root()
        train = FashionMNIST(str(target), train=True, download=True)
        test = FashionMNIST(str(target), train=False, download=True)
        return train.data, train.targets, test.data, test.targets
    if root is not None and not Path(root).expanduser().is_dir():
        raise FileNotFoundError(f"Data directory {root} does not exist.")
    raise FileNotFoundError(
        "Fashion-MNIST not found (looked for the four idx files in "
        + ", ".join(str(p) for p in searched)
        + "): run `apt-get install dataset-fashion-mnist`, or pass --data-dir DIR "
        "(a folder holding the idx .gz files or torchvision's FashionMNIST/ folder), "
        "or --download."
    )


def default_data_root() -> Path:
    """Where datasets are downloaded when no directory is given.

    ``$OPTUNA_BOCR_DATA`` if set, else ``$XDG_CACHE_HOME/optuna-bocr/data`` (by default
    ``~/.cache/optuna-bocr/data``).
    """
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "optuna-bocr" / "data"
