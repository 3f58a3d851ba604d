"""Networks from the user's own code: ``"package.module:factory"`` or ``"path/file.py:factory"``.

A *model spec* names a callable that returns a :class:`torch.nn.Module`; keyword arguments
for it come separately (the command line's ``--model-kwargs``). Every failure is a
:class:`ModelSpecError` whose message is one line naming the problem and what to do.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
import hashlib
import importlib
import importlib.util
import json
import os
from pathlib import Path
import sys
from typing import Any

import torch
from torch import nn

TORCHVISION_PREFIX = "torchvision:"


class ModelSpecError(ValueError):
    """A model spec that cannot be turned into a network (one-line message)."""


def is_factory_spec(spec: str) -> bool:
    """Whether ``spec`` names user code (``module:factory`` or ``file.py:factory``).

    Shipped names (``"resnet20"``) and ``"torchvision:<name>"`` are not factory specs.
    """
    return ":" in spec and not spec.startswith(TORCHVISION_PREFIX)


def _split(spec: str) -> tuple[str, str]:
    where, sep, attr = spec.rpartition(":")
    if not sep or not where or not attr:
        raise ModelSpecError(
            f"model {spec!r} is not of the form package.module:factory or path/file.py:factory"
        )
    return where, attr


def _is_file(where: str) -> bool:
    return where.endswith(".py") or "/" in where or os.sep in where


def normalize_spec(spec: str) -> str:
    """``spec`` with a file path made absolute, so that it still resolves from another folder.

    Module specs and non-factory names are returned unchanged.
    """
    if not is_factory_spec(spec):
        return spec
    where, attr = _split(spec)
    if _is_file(where):
        return f"{Path(where).expanduser().resolve()}:{attr}"
    return spec


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _module_from_file(path: Path) -> Any:
    if not path.is_file():
        raise ModelSpecError(f"model file not found: {path}")
    path = path.resolve()
    # Import the file under its own name (``my_nets`` for my_nets.py), as ``import my_nets``
    # would, so that pickled networks (exported models) load again wherever that module is
    # importable; a private name only when that name is taken by another module.
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) == str(path):
        return loaded
    if loaded is not None or not name.isidentifier():
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
        name = f"optuna_bocr_user_model_{path.stem}_{digest}"
        if name in sys.modules:
            return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ModelSpecError(f"cannot import {path}: not a Python source file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    # Let the file import its neighbours, as `python path/file.py` would.
    folder = str(path.parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - any error in the user's file is bad input
        del sys.modules[name]
        raise ModelSpecError(f"cannot import {path}: {_first_line(e)}") from e
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)
    return module


def _module_from_name(name: str) -> Any:
    # Like `python -m`, resolve modules from the current folder too.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - any error while importing user code is bad input
        raise ModelSpecError(
            f"cannot import module {name!r}: {_first_line(e)} (is it on PYTHONPATH, or "
            "give the file as path/to/file.py:factory)"
        ) from e


def load_factory(spec: str) -> Callable[..., Any]:
    """Import the callable named by ``spec``.

    Args:
        spec:
            ``"package.module:factory"`` (imported with :func:`importlib.import_module`, the
            current folder included) or ``"path/to/file.py:factory"`` (the file is imported
            as the module named by its stem, ``my_nets`` for ``my_nets.py``, unless another
            module has that name; its folder is importable while it runs). ``factory`` may
            be dotted (``"nets:Zoo.small"``).

    Returns:
        The callable.

    Raises:
        ModelSpecError: The spec is malformed, the code cannot be imported, the attribute
            does not exist or is not callable.
    """
    where, attr = _split(spec)
    module = _module_from_file(Path(where).expanduser()) if _is_file(where) else None
    if module is None:
        module = _module_from_name(where)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelSpecError(f"{where} has no attribute {attr!r} (model {spec!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelSpecError(
            f"{where}:{attr} is a {type(obj).__name__}, not a callable returning an nn.Module"
        )
    return obj


def parse_model_kwargs(text: str | None) -> dict[str, Any]:
    """Parse ``--model-kwargs``: a JSON object (``None`` or empty: no arguments)."""
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ModelSpecError(
            f"model kwargs are not valid JSON ({e.msg} at column {e.colno}): {text!r}"
        ) from e
    if not isinstance(value, dict):
        raise ModelSpecError(
            f'model kwargs must be a JSON object such as {{"width": 32}}, got {text!r}'
        )
    return value


def build_user_model(
    spec: str, kwargs: Mapping[str, Any] | None = None, *, seed: int | None = None
) -> nn.Module:
    """Build a network with the user's factory: ``factory(**kwargs)``.

    Args:
        spec:
            See :func:`load_factory`.
        kwargs:
            Keyword arguments of the factory.
        seed:
            Seed of the initial weights (the global torch RNG is left as it was);
            :obj:`None`: drawn from the global torch RNG.

    Returns:
        The network, on the CPU.

    Raises:
        ModelSpecError: See :func:`load_factory`; also when the call fails or returns
            something that is not an :class:`torch.nn.Module`.
    """
    factory = load_factory(spec)
    kwargs = dict(kwargs or {})
    shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    try:
        if seed is None:
            model = factory(**kwargs)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = factory(**kwargs)
    except Exception as e:  # noqa: BLE001 - any error in the user's factory is bad input
        raise ModelSpecError(f"{spec}({shown}) failed: {_first_line(e)}") from e
    if not isinstance(model, nn.Module):
        raise ModelSpecError(
            f"{spec}({shown}) returned a {type(model).__name__}, not a torch.nn.Module"
        )
    return model.cpu()
