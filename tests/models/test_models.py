from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from optuna_bocr.models import build_model
from optuna_bocr.models import cifar_resnet
from optuna_bocr.models import load_checkpoint
from optuna_bocr.models import mobilenet_v1
from optuna_bocr.models import model_names
from optuna_bocr.models import resnet20
from optuna_bocr.models import resnet32
from optuna_bocr.models import resnet44
from optuna_bocr.models import resnet56
from optuna_bocr.models import resnet110
from optuna_bocr.models import ShortcutA


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        # Parameter counts of the public CIFAR-10 checkpoints (He et al. 2016, table 6).
        (resnet20, 269_722),
        (resnet32, 464_154),
        (resnet44, 658_586),
        (resnet56, 853_018),
        (resnet110, 1_727_962),
    ],
)
def test_cifar_resnet_parameter_counts(factory: object, expected: int) -> None:
    model = factory()  # type: ignore[operator]
    assert _n_params(model) == expected


def test_resnet20_and_56_are_about_0_27m_and_0_85m() -> None:
    assert round(_n_params(resnet20()) / 1e6, 2) == 0.27
    assert round(_n_params(resnet56()) / 1e6, 2) == 0.85


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_cifar_resnet_forward_shapes(depth: int) -> None:
    model = cifar_resnet(depth, num_classes=7, in_channels=1).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 1, 32, 32))
    assert out.shape == (3, 7)
    n = (depth - 2) // 6
    assert len(model.layer1) == len(model.layer2) == len(model.layer3) == n


def test_cifar_resnet_key_layout_matches_public_checkpoints() -> None:
    keys = list(resnet20().state_dict())
    assert keys[:6] == [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "bn1.num_batches_tracked",
    ]
    for k in [
        "layer1.0.conv1.weight",
        "layer1.0.bn1.running_var",
        "layer1.0.conv2.weight",
        "layer2.0.bn2.bias",
        "layer3.2.conv2.weight",
        "linear.weight",
        "linear.bias",
    ]:
        assert k in keys
    # Option A shortcuts have no parameters: 1 + 9 * 2 convs/bns + linear.
    assert not any("shortcut" in k for k in keys)
    assert len([k for k in keys if k.endswith("conv1.weight") or k.endswith("conv2.weight")]) == 19


def test_option_a_shortcut_subsamples_and_zero_pads() -> None:
    x = torch.randn(2, 16, 8, 8)
    out = ShortcutA(16, 32, 2)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert torch.count_nonzero(out[:, :8]) == 0
    assert torch.count_nonzero(out[:, 24:]) == 0
    block = resnet20().layer2[0]
    assert isinstance(block.shortcut, ShortcutA)
    assert isinstance(resnet20().layer2[1].shortcut, nn.Identity)


def test_cifar_resnet_rejects_bad_depth() -> None:
    with pytest.raises(ValueError, match="depth must be one of"):
        cifar_resnet(18)


def test_mobilenet_v1_structure() -> None:
    model = mobilenet_v1(num_classes=10, in_channels=3).eval()
    assert len(model.features) == 13
    for block in model.features:
        dw, pw = block.conv_dw[0], block.conv_pw[0]
        assert dw.groups == dw.in_channels == dw.out_channels and dw.kernel_size == (3, 3)
        assert pw.kernel_size == (1, 1) and pw.groups == 1
        assert isinstance(block.conv_dw[1], nn.BatchNorm2d)
        assert isinstance(block.conv_pw[2], nn.ReLU)
    assert model.features[-1].conv_pw[0].out_channels == 1024
    assert 3.1e6 < _n_params(model) < 3.3e6
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    half = mobilenet_v1(width_mult=0.5, in_channels=1, num_classes=4).eval()
    assert half.features[-1].conv_pw[0].out_channels == 512
    with torch.no_grad():
        assert half(torch.randn(2, 1, 32, 32)).shape == (2, 4)
    with pytest.raises(ValueError, match="width_mult"):
        mobilenet_v1(width_mult=0.0)


@pytest.mark.parametrize("name", model_names())
def test_build_model_shipped(name: str) -> None:
    model = build_model(name, num_classes=5, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 5)


@pytest.mark.parametrize("name", ["torchvision:resnet18", "torchvision:mobilenet_v2"])
def test_build_model_torchvision_adapts_input_and_classes(name: str) -> None:
    model = build_model(name, num_classes=7, in_channels=1).eval()
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 1
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 64)).shape == (2, 7)


def test_build_model_unknown_names() -> None:
    with pytest.raises(ValueError, match="Unknown model 'resnet21'.*resnet20"):
        build_model("resnet21", num_classes=10, in_channels=3)
    with pytest.raises(ValueError, match="Unknown torchvision classification model"):
        build_model("torchvision:nope", num_classes=10, in_channels=3)


def _same_outputs(a: nn.Module, b: nn.Module) -> bool:
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


def _trained_like(model: nn.Module) -> nn.Module:
    # Non-default BN statistics, so that a forgotten buffer would change the outputs.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model


def test_load_checkpoint_raw_wrapped_and_dataparallel(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = _trained_like(resnet20())
    raw = src.state_dict()
    dp = nn.DataParallel(src).state_dict()
    assert all(k.startswith("module.") for k in dp)
    forms: dict[str, object] = {
        "raw": raw,
        "state_dict": {"state_dict": dp, "best_prec1": 91.7, "epoch": 200},
        "model": {"model": raw, "optimizer": {"lr": 0.1}},
    }
    for name, obj in forms.items():
        path = tmp_path / f"{name}.th"
        torch.save(obj, path)
        for source in (path, str(path), obj):
            dst = load_checkpoint(resnet20(), source)  # type: ignore[arg-type]
            assert _same_outputs(src, dst), (name, type(source))


def test_load_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(resnet20(), tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="Cannot read checkpoint"):
        load_checkpoint(resnet20(), garbage)
    with pytest.raises(ValueError, match="does not match the model"):
        load_checkpoint(resnet20(), resnet32().state_dict())
    with pytest.raises(ValueError, match="shapes do not match"):
        load_checkpoint(resnet20(), resnet20(num_classes=100).state_dict())
    with pytest.raises(ValueError, match="holds no state dict"):
        load_checkpoint(resnet20(), {"epoch": 3})
    # Non-strict loading tolerates missing keys.
    partial = {k: v for k, v in resnet20().state_dict().items() if not k.startswith("linear")}
    load_checkpoint(resnet20(), partial, strict=False)


def test_whole_model_pickles(tmp_path: Path) -> None:
    # Pruned models are saved whole (optuna_bocr.pruning.save_pruned): no lambdas inside.
    for model in (resnet20(), mobilenet_v1(width_mult=0.25)):
        path = tmp_path / "m.pt"
        torch.save(model, path)
        loaded = torch.load(path, weights_only=False)
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            assert torch.equal(model.eval()(x), loaded.eval()(x))


def test_build_model_seed_fixes_the_initial_weights() -> None:
    def weights(seed: int | None) -> torch.Tensor:
        model = build_model("resnet20", num_classes=10, in_channels=1, seed=seed)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = weights(0)
    assert torch.equal(torch.rand(3), expected_next)  # the global RNG is left as it was
    assert torch.equal(weights(0), a)
    assert not torch.equal(weights(1), a)
    assert not torch.equal(weights(None), weights(None))
