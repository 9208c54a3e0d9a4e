"""Several devices: one process per device, started at the beginning of a run (``devices: N``).

Lightning Fabric's launcher starts the processes (it re-runs the command with Hydra's run dir,
so every rank shares the run dir) and joins them in a process group (gloo on the CPU, nccl on
CUDA); a Lightning Trainer created later in these processes joins that group instead of
starting processes again. Without a process group every helper here acts as the single
process it is.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

# The other ranks wait in a collective while rank zero trains a probe on features (hours on
# ImageNet-size data on a CPU); Lightning's default limit is 30 minutes.
WAIT_LIMIT = timedelta(hours=24)


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_rank_zero() -> bool:
    return rank() == 0


def launch(devices: int, device: torch.device) -> None:
    """Start ``devices`` processes running this command (this one is rank zero) and join them in
    a process group; nothing for one device, or when the group exists already (a launched rank,
    or a second run in the same process)."""
    if devices == 1 or dist.is_initialized():
        return
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from lightning.fabric import Fabric
    from lightning.fabric.strategies import DDPStrategy

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise ValueError(f"devices={devices} runs one job on {devices} processes, and the launcher cannot "
                         "re-run a job of a multirun (-m): run each job separately, or use devices=1")
    accelerator = "cuda" if device.type == "cuda" else "cpu"
    Fabric(accelerator=accelerator, devices=devices, strategy=DDPStrategy(timeout=WAIT_LIMIT)).launch()


def broadcast_from_zero(value: T) -> T:
    """Rank zero's ``value`` on every rank (a small picklable object)."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _transport_device() -> torch.device:
    """nccl moves CUDA tensors only; gloo CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_rows(part: torch.Tensor | None, sizes: list[int], chunk_rows: int = 65536) -> torch.Tensor | None:
    """Every rank's ``part`` (``sizes[r]`` rows from rank r; None for none, but rank zero's
    gives the row shape and dtype) stacked in rank order on rank zero, None on the others.
    Parts are padded to the largest size for the transfer and trimmed after it, and sent in
    chunks of ``chunk_rows`` rows so that a GPU never holds all of them."""
    if not dist.is_initialized():
        return part
    me, ranks = rank(), world_size()
    have = 0 if part is None else len(part)
    if have != sizes[me]:
        raise RuntimeError(f"rank {me} holds {have} rows but its shard has {sizes[me]}")
    row_shape, dtype = broadcast_from_zero((None, None) if part is None else (part.shape[1:], part.dtype))
    longest, device = max(sizes), _transport_device()
    pieces: list[list[torch.Tensor]] = [[] for _ in range(ranks)]
    for start in range(0, longest, chunk_rows):
        rows = min(chunk_rows, longest - start)
        block = torch.zeros((rows, *row_shape), dtype=dtype, device=device)
        if start < have:
            mine = part[start:start + rows]
            block[:len(mine)] = mine.to(device)
        received = [torch.empty_like(block) for _ in range(ranks)] if me == 0 else None
        dist.gather(block, received, dst=0)
        if received is not None:
            for r, got in enumerate(received):
                pieces[r].append(got[:max(0, min(rows, sizes[r] - start))].cpu())
    if me != 0:
        return None
    return torch.cat([c for p in pieces for c in p]) if longest else torch.empty((0, *row_shape), dtype=dtype)
