from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import Subset

from optuna_bocr.data import DEBIAN_FASHION_MNIST
from optuna_bocr.data import ImageTensorDataset
from optuna_bocr.data import load_splits
from optuna_bocr.models import resnet20
from optuna_bocr.training import evaluate
from optuna_bocr.training import measure_latency
from optuna_bocr.training import resolve_device
from optuna_bocr.training import train
from optuna_bocr.training._training import _random_crop_flip

needs_data = pytest.mark.skipif(
    not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed: apt-get install dataset-fashion-mnist",
)


def _small_cnn(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(4),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, num_classes),
    )


@pytest.fixture(scope="module")
def splits():  # type: ignore[no-untyped-def]
    if not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")
    return load_splits("fashion-mnist", val_size=1000, seed=0)


@needs_data
def test_train_learns_fashion_mnist(splits) -> None:  # type: ignore[no-untyped-def]
    model = _small_cnn()
    before, _ = evaluate(model, splits.val, device="cpu")
    out = train(
        model, splits.train, epochs=2, max_images=3000, lr=0.05, device="cpu", progress=False
    )
    assert out is model and not model.training
    top1, top5 = evaluate(model, splits.val, device="cpu")
    assert before < 30.0
    assert top1 > 70.0, top1
    assert top1 <= top5 <= 100.0 and top5 > 95.0


@needs_data
def test_train_is_deterministic_and_handles_generic_datasets(splits) -> None:  # type: ignore[no-untyped-def]
    def run(dataset: object) -> list[torch.Tensor]:
        model = _small_cnn()
        train(model, dataset, epochs=1, max_images=512, batch_size=64, progress=False)  # type: ignore[arg-type]
        return [p.detach().clone() for p in model.parameters()]

    a, b = run(splits.train), run(splits.train)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    # Any map-style dataset works (DataLoader path).
    c = run(Subset(splits.train, range(2000)))
    assert all(torch.isfinite(x).all() for x in c)


@needs_data
def test_evaluate_counts_exactly(splits) -> None:  # type: ignore[no-untyped-def]
    class Constant(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # Always ranks class 3 first, then 0, 1, 2, 4.
            logits = torch.tensor([5.0, 4.0, 3.0, 6.0, 2.0, 0, 0, 0, 0, 0])
            return logits.expand(x.shape[0], 10)

    labels = splits.val.labels
    top1, top5 = evaluate(Constant(), splits.val, batch_size=300)
    assert top1 == pytest.approx(100.0 * (labels == 3).float().mean().item())
    assert top5 == pytest.approx(100.0 * (labels <= 4).float().mean().item())
    # The DataLoader path agrees with the tensor path.
    generic = Subset(splits.val, range(len(splits.val)))
    assert evaluate(Constant(), generic, batch_size=300) == (top1, top5)


def test_evaluate_and_train_errors() -> None:
    empty = ImageTensorDataset(
        torch.zeros(0, 1, 8, 8, dtype=torch.uint8), torch.zeros(0), mean=[0.5], std=[0.5]
    )
    with pytest.raises(ValueError, match="empty"):
        evaluate(_small_cnn(), empty)
    with pytest.raises(ValueError, match="empty"):
        train(_small_cnn(), empty, epochs=1)
    data = ImageTensorDataset(
        torch.randint(0, 255, (16, 1, 32, 32), dtype=torch.uint8),
        torch.randint(0, 10, (16,)),
        mean=[0.5],
        std=[0.5],
    )
    with pytest.raises(ValueError, match="epochs"):
        train(_small_cnn(), data, epochs=0)

    class NaNModel(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full((x.shape[0], 10), math.nan)

    with pytest.raises(FloatingPointError, match="NaN"):
        evaluate(NaNModel(), data)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="Unknown device"):
        resolve_device("gpu0")
    assert resolve_device("auto").type in ("cpu", "cuda")


def test_random_crop_flip_moves_pixels_only() -> None:
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8) + 1
    out = _random_crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape
    for b in range(2):
        values = set(out[b].unique().tolist()) - {0.0}
        assert values <= set(x[b].unique().tolist())
    # Without padding, a crop is the identity and only flips remain.
    same = _random_crop_flip(x, torch.Generator().manual_seed(0), pad=0)
    for b in range(2):
        assert torch.equal(same[b], x[b]) or torch.equal(same[b], x[b].flip(-1))


def test_measure_latency() -> None:
    model = resnet20()
    model.train()
    t = measure_latency(model, (8, 3, 32, 32), device="cpu", repeats=3, warmup=1)
    assert 0.0 < t < 10.0
    assert model.training  # restored
    # The fastest of a few runs each: a loaded machine (CI beside a benchmark) can stall one.
    big = min(measure_latency(model, (8, 3, 32, 32), device="cpu", repeats=3) for _ in range(3))
    small = min(
        measure_latency(_small_cnn(3), (8, 3, 32, 32), device="cpu", repeats=3) for _ in range(3)
    )
    assert small < big
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(model, (1, 3, 32, 32), device="cpu", repeats=0)


@needs_data
def test_freeze_bn_keeps_running_statistics(splits) -> None:  # type: ignore[no-untyped-def]
    model = _small_cnn()
    bn = model[1]
    before = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    train(model, splits.train, epochs=1, max_images=256, freeze_bn=True, progress=False)
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert int(bn.num_batches_tracked) == before[2]
    assert not torch.equal(model[0].weight, _small_cnn()[0].weight)  # the convs did train
    train(model, splits.train, epochs=1, max_images=256, progress=False)
    assert not torch.equal(bn.running_mean, before[0])


def test_top5_of_few_classes_is_100_and_accuracy_reports_progress() -> None:
    """One top-5 rule for evaluate and the pruning objective: every label of a model with
    5 classes or fewer is in its top five."""
    from optuna_bocr.training._evaluation import accuracy

    data = ImageTensorDataset(
        torch.randint(0, 255, (10, 1, 8, 8), dtype=torch.uint8),
        torch.tensor([0, 1, 2] * 3 + [0]),
        mean=[0.5],
        std=[0.5],
    )

    class ThreeClasses(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tensor([3.0, 2.0, 1.0]).expand(x.shape[0], 3)

    top1, top5 = evaluate(ThreeClasses(), data, batch_size=4)
    assert (top1, top5) == (40.0, 100.0)
    calls: list[tuple[int, int, int]] = []
    batches = [data.tensors(range(i, min(i + 4, 10))) for i in range(0, 10, 4)]
    result = accuracy(
        ThreeClasses(),
        batches,
        device=torch.device("cpu"),
        on_batch=lambda step, seen, hits: calls.append((step, seen, int(hits))),
    )
    assert result == (top1, top5)
    assert calls == [(0, 4, 2), (1, 8, 3), (2, 10, 4)]


def _large_activations_accuracy(device: torch.device) -> float:
    """Top-1 under autocast of a linear classifier whose logits (about 1e6) overflow float16."""
    from optuna_bocr.training._evaluation import accuracy

    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3, bias=False)).to(device)
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0] * 16, [2.0] * 16, [0.5] * 16]) * 1e5)
    x = torch.ones(6, 1, 4, 4)
    y = torch.tensor([1, 1, 1, 0, 0, 2])
    return accuracy(net, [(x, y)], device=device, autocast=True)[0]


def test_autocast_keeps_float32_range_on_cpu() -> None:
    from optuna_bocr.training._device import autocast_dtype

    assert autocast_dtype(torch.device("cpu")) == torch.bfloat16
    assert _large_activations_accuracy(torch.device("cpu")) == 50.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_autocast_keeps_float32_range_on_gpu() -> None:
    """float16 would turn the 1e6 logits into infinities (the evaluation refuses them)."""
    from optuna_bocr.training._device import autocast_dtype

    cuda = torch.device("cuda")
    with torch.cuda.device(cuda):
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    assert autocast_dtype(cuda) == (torch.bfloat16 if bf16 else torch.float16)
    if bf16:
        assert _large_activations_accuracy(cuda) == 50.0


@needs_data
def test_train_in_mixed_precision_learns_and_returns_the_default_layout(splits) -> None:  # type: ignore[no-untyped-def]
    """``autocast=True``: bfloat16 on the CPU, channels-last while training, float32 weights
    and the default memory format afterwards; it learns as float32 does."""
    model = _small_cnn()
    train(model, splits.train, epochs=2, max_images=3000, lr=0.05, autocast=True, progress=False)
    weight = model[0].weight
    assert weight.dtype == torch.float32
    assert weight.stride() == torch.empty(weight.shape).stride()  # not channels-last
    top1, _ = evaluate(model, splits.val, device="cpu")
    assert top1 > 70.0, top1
    # Not the float32 run: the steps did run in the lower precision.
    plain = _small_cnn()
    train(plain, splits.train, epochs=2, max_images=3000, lr=0.05, progress=False)
    assert not torch.equal(plain[0].weight, weight)
    # Deterministic like float32 training.
    again = _small_cnn()
    train(again, splits.train, epochs=2, max_images=3000, lr=0.05, autocast=True, progress=False)
    assert torch.equal(again[0].weight, weight)
