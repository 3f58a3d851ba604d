"""The user's own network from ``package.module:factory`` or ``path/file.py:factory``."""

from __future__ import annotations

from pathlib import Path
import sys
import textwrap

import pytest
import torch
from torch import nn

from optuna_bocr.models import build_user_model
from optuna_bocr.models import is_factory_spec
from optuna_bocr.models import load_factory
from optuna_bocr.models import ModelSpecError
from optuna_bocr.models import normalize_spec
from optuna_bocr.models import parse_model_kwargs

NET = textwrap.dedent(
    """
    import torch
    from torch import nn

    from helper_widths import WIDTH  # a neighbour module: the file's folder is importable


    class Net(nn.Module):
        def __init__(self, width: int = WIDTH, classes: int = 10) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            )
            self.head = nn.Linear(width, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x).mean((2, 3)))


    def make_net(width: int = WIDTH, classes: int = 10) -> nn.Module:
        return Net(width, classes)


    def make_nothing() -> int:
        return 3


    def make_broken(width: int = 4) -> nn.Module:
        raise RuntimeError("the factory itself failed")


    NOT_CALLABLE = 42
    """
)


@pytest.fixture()
def net_file(tmp_path: Path) -> Path:
    (tmp_path / "helper_widths.py").write_text("WIDTH = 6\n")
    path = tmp_path / "my_nets.py"
    path.write_text(NET)
    return path


def test_is_factory_spec() -> None:
    assert is_factory_spec("mypkg.nets:make_net")
    assert is_factory_spec("nets/my.py:make_net")
    assert not is_factory_spec("resnet20")
    assert not is_factory_spec("torchvision:resnet18")


def test_file_spec_builds_the_network(net_file: Path) -> None:
    model = build_user_model(f"{net_file}:make_net", {"width": 5}, seed=3)
    assert isinstance(model, nn.Module)
    assert model.body[0].out_channels == 5
    again = build_user_model(f"{net_file}:make_net", {"width": 5}, seed=3)
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # The default comes from the neighbour module, and a class is a factory too.
    assert build_user_model(f"{net_file}:Net").body[0].out_channels == 6


def test_module_spec_from_current_folder(net_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(net_file.parent)
    monkeypatch.syspath_prepend(str(net_file.parent))
    monkeypatch.delitem(sys.modules, "my_nets", raising=False)
    factory = load_factory("my_nets:make_net")
    assert isinstance(factory(width=3), nn.Module)


def test_normalize_spec_makes_file_paths_absolute(
    net_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(net_file.parent)
    assert normalize_spec("my_nets.py:make_net") == f"{net_file.resolve()}:make_net"
    assert normalize_spec("mypkg.nets:make_net") == "mypkg.nets:make_net"
    assert normalize_spec("resnet20") == "resnet20"


@pytest.mark.parametrize(
    ("spec", "kwargs", "match"),
    [
        ("{dir}/missing.py:make_net", None, "model file not found"),
        ("no_such_package_xyz.nets:make_net", None, "cannot import module 'no_such_package_xyz"),
        ("{file}:make_nothing", None, "returned a int, not a torch.nn.Module"),
        ("{file}:NOT_CALLABLE", None, "is a int, not a callable"),
        ("{file}:no_such_factory", None, "has no attribute 'no_such_factory'"),
        ("{file}:make_broken", None, "the factory itself failed"),
        ("{file}:make_net", {"depth": 3}, "unexpected keyword argument 'depth'"),
        ("{file}:", None, "is not of the form"),
    ],
)
def test_errors_are_one_line(
    net_file: Path, spec: str, kwargs: dict[str, int] | None, match: str
) -> None:
    spec = spec.format(dir=net_file.parent, file=net_file)
    with pytest.raises(ModelSpecError, match=match) as info:
        build_user_model(spec, kwargs)
    assert "\n" not in str(info.value)


def test_syntax_error_in_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad_net.py"
    bad.write_text("def make_net(:\n")
    with pytest.raises(ModelSpecError, match="cannot import .*bad_net.py: SyntaxError"):
        load_factory(f"{bad}:make_net")


def test_parse_model_kwargs() -> None:
    assert parse_model_kwargs(None) == {}
    assert parse_model_kwargs(' {"width": 8} ') == {"width": 8}
    with pytest.raises(ModelSpecError, match="not valid JSON"):
        parse_model_kwargs("{width: 8}")
    with pytest.raises(ModelSpecError, match="must be a JSON object"):
        parse_model_kwargs("[1, 2]")
