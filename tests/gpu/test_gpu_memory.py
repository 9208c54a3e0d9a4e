"""A run on the GPU leaves nothing allocated there: sweeps (a multirun, a joblib worker) run
many jobs in one process, and whatever a job left on the device would pile up."""

from __future__ import annotations

import pytest
import torch
from gpu_helpers import allocated
from helpers import compose_train

from sealab.experiment import run

RUNS = {
    "sea_grid": ["method=sea", "method.epochs=2", "method.grid={augmenter.eta:[0.1,0.3]}"],
    "logreg": ["method=logreg", "method.grid_size=3"],
    "finetune": ["method=finetune", "method.epochs=1", "method.batch_size=8", "backbone=resnet10t_random_init",
                 "dataset=imagefolder"],
}


def cleared(device: torch.device) -> int:
    """Bytes allocated on ``device`` once garbage is collected and cuBLAS has let go of its
    workspaces (kept per stream after a first product; torch's own leak check clears them too)."""
    if device.type == "cuda":
        torch._C._cuda_clearCublasWorkspaces()
    return allocated(device)


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_run_leaves_nothing_allocated_on_the_device(device, image_folder, tmp_path, monkeypatch, name):
    monkeypatch.setenv("SEALAB_ROOT", str(tmp_path))
    overrides = [*RUNS[name], f"device={device.type}", "~logger", "trainer.enable_progress_bar=false"]
    if name == "finetune":
        overrides.append(f"dataset.root={image_folder}")
    before = cleared(device)
    for attempt in range(2):  # the second run finds the first one's features in the cache
        record = run(compose_train(overrides, output_dir=tmp_path / f"run{attempt}"))
        assert record["device"].startswith(device.type)
        del record
        left = cleared(device) - before
        assert left == 0, f"{name}, run {attempt}: {left} bytes left allocated on {device}"
