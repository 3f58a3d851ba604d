"""The one device lookup of the CNN side: ``"auto"`` and names to a checked torch device."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` into ``cuda`` when a GPU is available, else ``cpu``; check the rest.

    Used by training, evaluation and :class:`~optuna_bocr.pruning.PruningObjective` alike.

    Args:
        device:
            ``"auto"``, or anything :class:`torch.device` accepts (a name or a device).

    Returns:
        The device.

    Raises:
        ValueError: For an unknown device name, or a CUDA device when CUDA is not available.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(
            f"Unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:0', ..."
        ) from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"Device {str(device)!r} requested but CUDA is not available: use 'cpu' or 'auto'."
        )
    return dev


def autocast_dtype(device: torch.device) -> torch.dtype:
    """The reduced precision that ``autocast`` runs in on ``device``.

    bfloat16 wherever the device supports it (every CPU, NVIDIA GPUs from Ampere on): it
    keeps float32's range, so activations that outgrow float16's 65504 (an untrained or
    badly pruned network) stay finite; float16 on older GPUs.

    Args:
        device: Where the model runs.

    Returns:
        ``torch.bfloat16`` or, on a CUDA device without bfloat16, ``torch.float16``.
    """
    if device.type == "cuda":
        with torch.cuda.device(device):
            if not torch.cuda.is_bf16_supported(including_emulation=False):
                return torch.float16
    return torch.bfloat16


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are the same one (``cuda`` and ``cuda:<current>`` are)."""
    if a.type != b.type:
        return False
    if a.type == "cuda":
        ia = a.index if a.index is not None else torch.cuda.current_device()
        ib = b.index if b.index is not None else torch.cuda.current_device()
        return ia == ib
    return True
