"""Tests marked ``gpu`` (``make gpu-check``): sealab on a CUDA device against the CPU. Without
CUDA they are skipped with the reason. ``SEALAB_GPU_TESTS_ON=cpu`` runs them on the CPU instead,
to check their own logic on a machine without a GPU (each then compares the CPU with itself)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from gpu_helpers import CPU
from PIL import Image

ON_CPU = os.environ.get("SEALAB_GPU_TESTS_ON") == "cpu"
NO_CUDA = ("no CUDA device (torch.cuda.is_available() is False): run make gpu-check on a machine "
           "with a GPU, or SEALAB_GPU_TESTS_ON=cpu to try these tests' logic on the CPU")


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
