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


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module's tests (``pytestmark = pytest.mark.usefixtures("one_thread")``),
    then back to what it had."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def step_runners(monkeypatch) -> list:
    """Every step runner (sealab.methods.compiled) the probe builds in the test, in order."""
    from sealab.methods import compiled

    built = []

    def recording(*args, **kwargs):
        built.append(compiled.step_runner(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr("sealab.methods.probe.step_runner", recording)
    return built
