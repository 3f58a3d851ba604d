"""Datasets as fixed, seeded train / validation / test splits of normalised image tensors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torch.utils.data import Subset

from optuna_bocr.data._fashion_mnist import DEBIAN_FASHION_MNIST  # noqa: F401 - old path
from optuna_bocr.data._fashion_mnist import default_data_root
from optuna_bocr.data._fashion_mnist import load_fashion_mnist

DATASET_NAMES = ("fashion-mnist", "cifar10", "imagefolder")

_FASHION_MEAN = (0.2860,)
_FASHION_STD = (0.3530,)
_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR_STD = (0.2470, 0.2435, 0.2616)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

_FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


class ImageTensorDataset(Dataset):
    """Images held in one ``uint8`` tensor, normalised on access.

    Items are ``(image, label)`` with ``image`` a ``float32`` tensor of shape ``(C, H, W)``,
    normalised per channel, and ``label`` an ``int``.

    Args:
        images:
            ``uint8`` tensor of shape ``(N, C, H, W)``.
        labels:
            Integer tensor of shape ``(N,)``.
        mean:
            Per-channel mean (of images scaled to [0, 1]) subtracted on access.
        std:
            Per-channel standard deviation divided out on access.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError("images must be a uint8 tensor of shape (N, C, H, W).")
        if labels.shape != (images.shape[0],):
            raise ValueError(
                f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}."
            )
        if len(mean) != images.shape[1] or len(std) != images.shape[1]:
            raise ValueError("mean and std need one value per image channel.")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self.normalize(self.images[index : index + 1] if index >= 0 else self.images[[index]])
        return x[0], int(self.labels[index])

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Turn a ``uint8`` batch ``(B, C, H, W)`` of this dataset into normalised floats."""
        mean = self.mean.to(images.device)
        std = self.std.to(images.device)
        return (images.float().div_(255.0) - mean) / std

    def tensors(
        self, indices: torch.Tensor | Sequence[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return normalised images and labels as two tensors (all items, or ``indices``)."""
        if indices is None:
            return self.normalize(self.images), self.labels.clone()
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return self.normalize(self.images[idx]), self.labels[idx]

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ImageTensorDataset:
        """A new dataset holding a copy of the selected items."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return ImageTensorDataset(
            self.images[idx],
            self.labels[idx],
            mean=self.mean.flatten().tolist(),
            std=self.std.flatten().tolist(),
        )


@dataclass(frozen=True)
class DataSplits:
    """Train, validation and test splits of one dataset.

    Attributes:
        train:
            Training images, without the validation images.
        val:
            Validation images: a fixed, seeded sample of the original training set.
        test:
            The dataset's own test set, for final reporting only.
        num_classes:
            Number of classes.
        in_channels:
            Image channels.
        image_size:
            Height and width of every image.
        name:
            Dataset name as given to :func:`load_splits`.
        classes:
            Class names, in label order.
    """

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    image_size: int
    name: str
    classes: tuple[str, ...] = field(default=())


def _fit_size(images: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad (centred) or resize ``uint8`` images ``(N, C, H, W)`` to ``size`` x ``size``."""
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images
    if h <= size and w <= size:
        top, left = (size - h) // 2, (size - w) // 2
        return F.pad(images, (left, size - w - left, top, size - h - top))
    out = []
    for chunk in images.split(4096):
        resized = F.interpolate(
            chunk.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        out.append(resized.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def _split_indices(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(val_size, int) or isinstance(val_size, bool) or val_size < 1:
        raise ValueError(f"val_size must be a positive integer, got {val_size!r}.")
    if val_size >= n:
        raise ValueError(
            f"val_size={val_size} must be smaller than the training set ({n} images)."
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:].sort().values, perm[:val_size].sort().values


def _tensor_splits(
    name: str,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    classes: Sequence[str],
    val_size: int,
    seed: int,
    image_size: int,
) -> DataSplits:
    train_idx, val_idx = _split_indices(train_images.shape[0], val_size, seed)
    train_images = _fit_size(train_images, image_size)
    test_images = _fit_size(test_images, image_size)
    full = ImageTensorDataset(train_images, train_labels, mean=mean, std=std)
    return DataSplits(
        train=full.subset(train_idx),
        val=full.subset(val_idx),
        test=ImageTensorDataset(test_images, test_labels, mean=mean, std=std),
        num_classes=len(classes),
        in_channels=train_images.shape[1],
        image_size=image_size,
        name=name,
        classes=tuple(classes),
    )


def _load_cifar10(root: str | os.PathLike[str] | None, download: bool) -> tuple[object, object]:
    from torchvision.datasets import CIFAR10

    base = Path(root).expanduser() if root is not None else default_data_root()
    if base.name == CIFAR10.base_folder:
        base = base.parent
    if not download and not (base / CIFAR10.base_folder).is_dir():
        raise FileNotFoundError(
            f"CIFAR-10 not found: {base / CIFAR10.base_folder} does not exist; pass --data-dir "
            "DIR (the folder holding cifar-10-batches-py) or --download."
        )
    try:
        train = CIFAR10(str(base), train=True, download=download)
        test = CIFAR10(str(base), train=False, download=download)
    except RuntimeError as e:
        raise FileNotFoundError(f"CIFAR-10 under {base} is incomplete or corrupt: {e}") from e
    return train, test


def _imagefolder_splits(
    root: str | os.PathLike[str] | None, *, val_size: int, seed: int, image_size: int
) -> DataSplits:
    from torchvision import datasets
    from torchvision import transforms

    if root is None:
        raise ValueError("The imagefolder dataset needs a directory (--data-dir).")
    base = Path(root).expanduser()
    if not (base / "train").is_dir():
        raise FileNotFoundError(f"ImageFolder dataset needs {base / 'train'}/<class>/<image>.")
    test_dir = next((base / d for d in ("test", "val") if (base / d).is_dir()), None)
    if test_dir is None:
        raise FileNotFoundError(f"ImageFolder dataset needs {base / 'val'} or {base / 'test'}.")
    transform = transforms.Compose(
        [
            transforms.Resize(image_size),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(_IMAGENET_MEAN, _IMAGENET_STD),
        ]
    )
    try:
        train_full = datasets.ImageFolder(str(base / "train"), transform=transform)
        test = datasets.ImageFolder(str(test_dir), transform=transform)
    except (FileNotFoundError, RuntimeError) as e:
        raise FileNotFoundError(f"Cannot read ImageFolder dataset under {base}: {e}") from e
    if test.classes != train_full.classes:
        raise ValueError(
            f"Class folders of {test_dir} differ from those of {base / 'train'}: "
            f"{test.classes} vs {train_full.classes}."
        )
    train_idx, val_idx = _split_indices(len(train_full), val_size, seed)
    return DataSplits(
        train=Subset(train_full, train_idx.tolist()),
        val=Subset(train_full, val_idx.tolist()),
        test=test,
        num_classes=len(train_full.classes),
        in_channels=3,
        image_size=image_size,
        name="imagefolder",
        classes=tuple(train_full.classes),
    )


def load_splits(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    val_size: int = 5000,
    seed: int = 0,
    image_size: int = 32,
) -> DataSplits:
    """Load a dataset as train / validation / test splits.

    The validation split is ``val_size`` images drawn from the *training* set with a
    generator seeded by ``seed`` (never from the test set); ``train`` holds the remaining
    training images. The draw is a prefix of one seeded permutation, so with the same seed
    a smaller ``val_size`` gives a subset of a larger one's validation images.

    Args:
        name:
            ``"fashion-mnist"``: the four original idx files (``.gz`` or not) in ``root``,
            torchvision's ``FashionMNIST/raw`` layout under ``root``, or, with ``root=None``,
            ``$OPTUNA_BOCR_DATA`` then ``/usr/share/datasets/fashion-mnist`` (Debian package
            ``dataset-fashion-mnist``). Images are 28x28, zero-padded to ``image_size``.
            ``"cifar10"``: torchvision's CIFAR10 under ``root`` (the folder holding
            ``cifar-10-batches-py``; default ``$OPTUNA_BOCR_DATA`` or
            ``~/.cache/optuna-bocr/data``). ``"imagefolder"``: ``root/train/<class>/*`` for
            training and validation, ``root/test`` or ``root/val`` for testing.
        root:
            Data directory.
        download:
            Download Fashion-MNIST or CIFAR-10 with torchvision when not found.
        val_size:
            Number of validation images taken from the training set.
        seed:
            Seed of the validation draw.
        image_size:
            Side of the (square) images returned.

    Returns:
        The splits. For Fashion-MNIST and CIFAR-10 they are :class:`ImageTensorDataset`.

    Raises:
        ValueError: For an unknown name or a bad size.
        FileNotFoundError: When the data cannot be found.
    """
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an integer >= 8, got {image_size!r}.")
    key = name.lower().replace("_", "-")
    if key in ("fashion-mnist", "fashionmnist"):
        tr_x, tr_y, te_x, te_y = load_fashion_mnist(root, download)
        return _tensor_splits(
            "fashion-mnist",
            tr_x.unsqueeze(1),
            tr_y,
            te_x.unsqueeze(1),
            te_y,
            mean=_FASHION_MEAN,
            std=_FASHION_STD,
            classes=_FASHION_CLASSES,
            val_size=val_size,
            seed=seed,
            image_size=image_size,
        )
    if key in ("cifar10", "cifar-10"):
        train, test = _load_cifar10(root, download)
        return _tensor_splits(
            "cifar10",
            torch.from_numpy(train.data).permute(0, 3, 1, 2).contiguous(),  # type: ignore[attr-defined]
            torch.tensor(train.targets),  # type: ignore[attr-defined]
            torch.from_numpy(test.data).permute(0, 3, 1, 2).contiguous(),  # type: ignore[attr-defined]
            torch.tensor(test.targets),  # type: ignore[attr-defined]
            mean=_CIFAR_MEAN,
            std=_CIFAR_STD,
            classes=train.classes,  # type: ignore[attr-defined]
            val_size=val_size,
            seed=seed,
            image_size=image_size,
        )
    if key == "imagefolder":
        return _imagefolder_splits(root, val_size=val_size, seed=seed, image_size=image_size)
    raise ValueError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}.")
