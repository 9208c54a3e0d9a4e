"""What the tests marked gpu share: a method's context on a device, the memory left on it."""

from __future__ import annotations

import gc

import lightning as L
import torch

from sealab.device import trainer_placement
from sealab.methods.base import FitContext
from sealab.task import make_task

CPU = torch.device("cpu")


def allocated(device: torch.device) -> int:
    """Bytes of tensors alive on ``device`` once garbage is collected (0 off CUDA)."""
    gc.collect()
    if device.type != "cuda":
        return 0
    torch.cuda.synchronize(device)
    return torch.cuda.memory_allocated(device)


def fit_context(device: torch.device, num_classes: int, seed: int = 0, run_dir=None, callbacks=()) -> FitContext:
    """What a run hands a method on ``device``: its trainer placed there, quiet."""

    def make_trainer(**kw):
        quiet = dict(logger=False, enable_progress_bar=False, enable_checkpointing=False,
                     enable_model_summary=False, num_sanity_val_steps=0)
        return L.Trainer(**{**quiet, **trainer_placement(device), **kw,
                            "callbacks": [*callbacks, *kw.get("callbacks", [])]})

    return FitContext(task=make_task(num_classes, False), seed=seed, device=device, make_trainer=make_trainer,
                      run_dir=run_dir)
