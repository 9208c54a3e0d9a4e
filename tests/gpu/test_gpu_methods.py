"""Every method on features trains on the GPU to the CPU's result: the SGD probe (linear, SeA),
a grid of SeA heads in one pass, and the closed-form methods (logreg, ncm, gda, knn)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from gpu_helpers import CPU, fit_context
from helpers import compose_train
from hydra.utils import instantiate

C, D = 4, 24
# SeA steps well below its chaotic regime (eta 0.8 with alpha 0.01), which would amplify the
# devices' different rounding; a few epochs of small batches (40 SGD steps).
SHORT = ["method.epochs=4", "method.batch_size=16"]
PROBES = {
    "linear": ["method=linear", *SHORT],
    "sea": ["method=sea", "method.augmenter.eta=0.2", "method.augmenter.alpha=0.1", *SHORT],
    "sea_grid": ["method=sea", "method.augmenter.alpha=0.1", "method.grid={augmenter.eta:[0.1,0.3]}", *SHORT],
}
CLOSED_FORM = {
    "logreg": ["method=logreg", "method.grid_size=5"],
    "ncm": ["method=ncm"],
    "gda": ["method=gda"],
    "knn": ["method=knn", "method.k=10"],
}


def blobs(n: int, seed: int):
    means = torch.randn(C, D, generator=torch.Generator().manual_seed(7))
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % C
    return F.normalize(means[y] + 1.2 * torch.randn(n, D, generator=gen), dim=1), y


TRAIN, VAL, TEST = blobs(160, seed=1), blobs(60, seed=2), blobs(100, seed=3)


def fit(overrides: list[str], device: torch.device):
    """The method's result on ``device``, seeded as a run seeds it."""
    cfg = compose_train(overrides)
    L.seed_everything(0, verbose=False)
    return instantiate(cfg.method).fit(TRAIN, VAL, fit_context(device, C))


def scorers(result) -> list:
    return [c.scorer for c in result.candidates] or [result.scorer]


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(PROBES))
def test_the_probe_trains_on_the_device_to_the_cpus_weights(device, name):
    on_device, on_cpu = fit(PROBES[name], device), fit(PROBES[name], CPU)
    assert len(scorers(on_device)) == len(scorers(on_cpu)) == (2 if name == "sea_grid" else 1)
    for ours, reference in zip(scorers(on_device), scorers(on_cpu)):
        assert ours.weight.device == CPU  # handed back on the CPU, as every scorer is
        torch.testing.assert_close(ours.weight, reference.weight, rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(CLOSED_FORM))
def test_closed_form_methods_on_the_device_score_as_on_the_cpu(device, name):
    on_device, on_cpu = fit(CLOSED_FORM[name], device), fit(CLOSED_FORM[name], CPU)
    # logreg: the same weight decay; gda: its Ledoit-Wolf shrinkage, to rounding
    assert on_device.selected.keys() == on_cpu.selected.keys()
    for key, value in on_cpu.selected.items():
        assert on_device.selected[key] == (value if isinstance(value, str) else pytest.approx(value, rel=1e-4)), key
    scores, reference = on_device.scorer(TEST[0]), on_cpu.scorer(TEST[0])
    assert scores.device == CPU
    torch.testing.assert_close(scores, reference, rtol=1e-3, atol=1e-4, msg=name)
