"""Tests marked ``gpu`` (``make gpu-check``): sealab on a CUDA device against the CPU. Without
CUDA they are skipped with the reason. ``SEALAB_GPU_TESTS_ON=cpu`` runs them on the CPU instead,
to check their own logic on a machine without a GPU (each then compares the CPU with itself)."""

from __future__ import annotations

import gc
import os

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from sealab.device import trainer_placement
from sealab.methods.base import FitContext
from sealab.task import make_task

ON_CPU = os.environ.get("SEALAB_GPU_TESTS_ON") == "cpu"
NO_CUDA = ("no CUDA device (torch.cuda.is_available() is False): run make gpu-check on a machine "
           "with a GPU, or SEALAB_GPU_TESTS_ON=cpu to try these tests' logic on the CPU")
CPU = torch.device("cpu")


def pytest_collection_modifyitems(config, items):
    if ON_CPU or torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=NO_CUDA)
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The device under test: the first CUDA device (the CPU with SEALAB_GPU_TESTS_ON=cpu)."""
    return CPU if ON_CPU else torch.device("cuda", 0)


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


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """A tiny on-disk image folder (torchvision ImageFolder layout, classes a, b, c): 12 PNGs of
    40x40 per class, each a random colour with strong noise, so that every image's features
    differ clearly from every other's (a random-weight network maps similar images to nearly
    the same features)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name in "abc":
        (root / name).mkdir()
        for k in range(12):
            pixels = rng.uniform(0, 255, 3) + rng.normal(0, 60, (40, 40, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / name / f"{k}.png")
    return root
