"""The run's one ``device`` setting, resolved once and handed to everything that places tensors:
feature extraction, the Lightning trainer and the closed-form methods."""

from __future__ import annotations

from typing import Any

import torch

DEVICE_TYPES = ("cpu", "cuda", "mps")


def resolve_device(name: str) -> torch.device:
    """``auto``: the first CUDA device when there is one, else the CPU; otherwise ``cpu``,
    ``cuda``, ``cuda:N`` or ``mps`` as named (a clear error when it is not there)."""
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"device={name!r} is not a device: use auto, cpu, cuda, cuda:N or mps") from err
    if device.type not in DEVICE_TYPES:
        raise ValueError(f"device={name!r}: sealab runs on {DEVICE_TYPES} (or auto)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={name!r} but torch sees no CUDA device: use device=cpu or device=auto")
        device = torch.device("cuda", device.index or 0)
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"device={name!r} but there are {torch.cuda.device_count()} CUDA devices")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={name!r} but MPS is not available: use device=cpu or device=auto")
    return device


def trainer_placement(device: torch.device) -> dict[str, Any]:
    """The Lightning Trainer arguments that put training on ``device``."""
    if device.type == "cuda":
        return {"accelerator": "gpu", "devices": [device.index]}
    return {"accelerator": device.type, "devices": 1}
