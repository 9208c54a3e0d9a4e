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


def check_devices(devices: int, device: torch.device) -> int:
    """``devices`` (a count >= 1, checked with the config): how many processes, one per device of
    ``device``'s type, run the job."""
    if devices > 1 and device.type == "mps":
        raise ValueError(f"devices={devices} but device={device} is a single device: use devices=1")
    if devices > 1 and device.type == "cuda" and devices > torch.cuda.device_count():
        raise ValueError(f"devices={devices} but there are {torch.cuda.device_count()} CUDA devices")
    return devices


def rank_device(device: torch.device, devices: int, rank: int) -> torch.device:
    """The device of process ``rank``: with several CUDA devices rank r uses cuda:r (an index in
    ``device`` is then refused, it would put every rank on one GPU); CPU ranks share the CPU."""
    if devices == 1 or device.type != "cuda":
        return device
    if device.index not in (None, 0):
        raise ValueError(f"device={device} with devices={devices}: the ranks use cuda:0..cuda:{devices - 1}; "
                         "set device=cuda (or auto)")
    return torch.device("cuda", rank)


def trainer_placement(device: torch.device, devices: int = 1) -> dict[str, Any]:
    """The Lightning Trainer arguments that put training on ``device``; with ``devices`` > 1,
    DDP over that many devices (inside processes already launched: the Trainer joins their
    process group and starts no processes of its own)."""
    if devices > 1:
        return {"accelerator": "gpu" if device.type == "cuda" else "cpu", "devices": devices, "strategy": "ddp"}
    if device.type == "cuda":
        return {"accelerator": "gpu", "devices": [device.index]}
    return {"accelerator": device.type, "devices": 1}
