"""A grid of heads in one pass: each head trained exactly as its single run (deterministic
augmenters) or like it in distribution (stochastic ones), checked keys, selection on val."""

from __future__ import annotations

import itertools

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from helpers import compose_train, fit_context
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sealab.methods import probe
from sealab.methods.probe import LinearProbe

C, D = 4, 24
BAD_GRID = (ValueError, InstantiationException)  # Hydra wraps what the constructor raised
# method -> grid over two of its hyper-parameters (2 x 2 = 4 heads). One pass and single runs
# differ by float rounding only (one stacked product instead of K); values where SeA collapses
# (eta 0.8 with alpha 0.01: a chaotic regime) would amplify that rounding, so none are used.
EXACT = {
    "linear": {"optimizer.lr": [0.2, 1.6], "head.lamda": [0.1, 0.5]},
    "sea": {"augmenter.eta": [0.1, 0.5], "augmenter.alpha": [0.05, 0.5]},
    "sea_faithful": {"augmenter.eta": [0.1, 0.3], "optimizer.weight_decay": [0.0, 1e-3]},
    "sea_noproj": {"augmenter.eta": [0.1, 0.3], "head.delta": [0.0, 0.2]},
    "sea_sameclass": {"augmenter.eta": [0.1, 0.5], "optimizer.lr": [0.4, 1.6]},
    "pgd": {"augmenter.step_size": [0.02, 0.1], "augmenter.steps": [1, 3]},
}
STOCHASTIC = {"noise": "augmenter.sigma", "mixup": "augmenter.alpha", "sea_random": "augmenter.eta",
              "isda": "augmenter.lambda0"}


pytestmark = pytest.mark.usefixtures("one_thread")  # runs compared to rounding: one thread


def blobs(n: int, seed: int):
    means = torch.randn(C, D, generator=torch.Generator().manual_seed(7))
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % C
    return F.normalize(means[y] + 1.2 * torch.randn(n, D, generator=gen), dim=1), y


def method(name: str, grid: dict | None = None, *overrides: str) -> LinearProbe:
    cfg = compose_train([f"method={name}", "method.epochs=4", "method.batch_size=32", *overrides])
    cfg.method.grid = OmegaConf.create(grid) if grid else None
    return instantiate(cfg.method)


def fit(name: str, grid: dict | None = None, *overrides: str, seed: int = 0):
    L.seed_everything(seed, verbose=False)
    return method(name, grid, *overrides).fit(blobs(150, seed=1), blobs(60, seed=2), fit_context(C, seed=seed))


@pytest.mark.parametrize("name", sorted(EXACT))
def test_each_head_of_a_grid_is_its_single_run(name):
    grid = EXACT[name]
    result = fit(name, grid)
    combinations = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    assert [c.values for c in result.candidates] == combinations
    weights = [c.scorer.weight for c in result.candidates]
    assert len({tuple(w.flatten()[:5].tolist()) for w in weights}) == len(weights), "heads must differ"
    for values, weight in zip(combinations, weights):
        single = fit(name, None, *(f"method.{key}={value}" for key, value in values.items())).scorer
        torch.testing.assert_close(weight, single.weight, rtol=1e-4, atol=1e-5, msg=f"{name} {values}")


def accuracy(scorer, data) -> float:
    x, y = data
    with torch.no_grad():
        return (scorer(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("name", sorted(STOCHASTIC))
def test_stochastic_heads_match_their_single_runs_in_distribution(name):
    """Each head draws its own augmentations from the run's random stream, so head k sees
    different draws than its single run: the same method, other noise. Over seeds, the mean
    test accuracy of heads and single runs agree within the spread between seeds."""
    key = STOCHASTIC[name]
    value = OmegaConf.select(compose_train([f"method={name}"]).method, key)
    test = blobs(400, seed=3)
    grid_acc, single_acc = [], []
    for seed in range(3):
        result = fit(name, {key: [value, value]}, seed=seed)
        grid_acc += [accuracy(c.scorer, test) for c in result.candidates]
        single_acc.append(accuracy(fit(name, None, seed=seed).scorer, test))
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    spread = max(single_acc) - min(single_acc) + 0.02
    assert min(single_acc) > 0.5 and abs(mean(grid_acc) - mean(single_acc)) <= spread, (grid_acc, single_acc)


def test_unknown_keys_and_empty_lists_name_the_valid_keys():
    with pytest.raises(BAD_GRID, match=r"'augmenter.etta'.*augmenter.alpha.*augmenter.eta.*optimizer.lr"):
        method("sea", {"augmenter.etta": [0.1]})
    with pytest.raises(BAD_GRID, match="augmenter.eta"):
        method("linear", {"augmenter.eta": [0.1]})  # the linear probe has no augmenter
    with pytest.raises(BAD_GRID, match="non-empty list"):
        method("sea", {"augmenter.eta": []})
    with pytest.raises(BAD_GRID, match="non-empty list"):
        method("sea", {"augmenter.eta": 0.3})


def test_a_grid_that_does_not_fit_in_memory_fails_before_training(monkeypatch):
    monkeypatch.setattr(probe, "available_memory", lambda device: 1_000)  # bytes: two 4 x 24 heads need 3 KiB
    with pytest.raises(MemoryError, match="shrink method.grid"):
        fit("sea", {"augmenter.eta": [0.1, 0.3]})
