import os

import pytest
import torch

# Tests never touch the network: hubs and wandb stay offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def sealab_root(tmp_path, monkeypatch):
    """A private SEALAB_ROOT (data, feature cache, outputs) for one test."""
    monkeypatch.setenv("SEALAB_ROOT", str(tmp_path))
    return tmp_path
