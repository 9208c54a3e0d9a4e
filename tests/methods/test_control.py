"""The control head: the probe's head trained without augmentation beside the augmented ones, from
the same initialisation on the same batches. The augmented heads' numbers do not move because it
trains beside them; it is the plain probe's own run; one control per combination of a grid's
values that are not the augmenter's."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from helpers import compose_train, fit_context
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sealab.methods.probe import LinearProbe, control_grid

C, D = 4, 24
GRID = {"augmenter.eta": [0.1, 0.5], "optimizer.lr": [0.4, 1.6]}

pytestmark = pytest.mark.usefixtures("one_thread")


def blobs(n: int, seed: int, classes: int = C, dim: int = D):
    means = torch.randn(classes, dim, generator=torch.Generator().manual_seed(7))
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    return F.normalize(means[y] + 1.2 * torch.randn(n, dim, generator=gen), dim=1), y


def method(name: str, *overrides: str, grid: dict | None = None) -> LinearProbe:
    cfg = compose_train([f"method={name}", "method.epochs=4", "method.batch_size=32", *overrides])
    cfg.method.grid = OmegaConf.create(grid) if grid else None
    return instantiate(cfg.method)


class LoggedKeys(L.Callback):
    def __init__(self):
        self.keys: set[str] = set()

    def on_fit_end(self, trainer, pl_module):
        self.keys = set(trainer.callback_metrics)


def fit(name: str, *overrides: str, grid: dict | None = None, callbacks=(), classes: int = C, dim: int = D):
    L.seed_everything(0, verbose=False)
    probe = method(name, *overrides, grid=grid)
    return probe.fit(blobs(150, 1, classes, dim), blobs(60, 2, classes, dim), fit_context(classes, callbacks=callbacks))


def weights(result) -> list[torch.Tensor]:
    return [c.scorer.weight for c in result.candidates] or [result.scorer.weight]


# Clean and faithful SeA, a grid, and two augmenters that draw random numbers every step (a
# control that drew any, or changed the order of the draws, would move them); and products large
# enough (d=2048, C=100) that stacking the control's weights with the head's would change the
# head's rounding.
CASES = {"sea": ("sea", None, C, D), "sea_faithful": ("sea_faithful", None, C, D), "sea_grid": ("sea", GRID, C, D),
         "sea_random": ("sea_random", None, C, D), "noise": ("noise", None, C, D), "mixup": ("mixup", None, C, D),
         "sea_wide": ("sea", None, 100, 2048)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_augmented_heads_are_bit_for_bit_those_of_a_run_without_control(case):
    name, grid, classes, dim = CASES[case]
    with_control = fit(name, "method.control=true", grid=grid, classes=classes, dim=dim)
    alone = fit(name, "method.control=false", grid=grid, classes=classes, dim=dim)
    assert with_control.controls and not alone.controls
    for a, b in zip(weights(with_control), weights(alone), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(with_control.controls[0].scorer.weight, weights(alone)[0])  # the augmentation moved it


@pytest.mark.parametrize("name", ["sea", "sea_random"])
def test_the_control_is_the_plain_probe_trained_alone(name):
    control = fit(name).controls
    assert [c.values for c in control] == [{}]
    assert torch.equal(control[0].scorer.weight, fit("linear").scorer.weight)


def test_a_grid_gets_one_control_per_combination_of_its_values_other_than_the_augmenters():
    result = fit("sea", grid=GRID)
    assert [c.values for c in result.controls] == [{"optimizer.lr": 0.4}, {"optimizer.lr": 1.6}]
    for control in result.controls:
        single = fit("linear", f"method.optimizer.lr={control.values['optimizer.lr']}").scorer
        torch.testing.assert_close(control.scorer.weight, single.weight, rtol=1e-4, atol=1e-5)
    # each augmented head's control is the one whose values are a subset of its own
    for head in result.candidates:
        assert [c.values.items() <= head.values.items() for c in result.controls].count(True) == 1


def test_control_grid_keeps_each_distinct_value_of_the_keys_other_than_the_augmenters():
    grid = {"augmenter.eta": [0.1, 0.3], "optimizer.lr": [0.4, 1.6, 0.4], "head.lamda": [0.1]}
    assert control_grid(grid) == {"optimizer.lr": [0.4, 1.6], "head.lamda": [0.1]}
    assert control_grid({"augmenter.eta": [0.1, 0.3]}) == {} == control_grid(None)


def test_the_control_logs_under_its_own_keys_and_the_heads_keep_theirs():
    keys = LoggedKeys()
    fit("sea", callbacks=[keys])
    assert {"val/top1", "val/top1[control]", "train/loss", "train/loss[control]"} <= keys.keys
    fit("sea", grid=GRID, callbacks=[keys])
    assert {"val/top1[0]", "val/top1[3]", "val/top1[control 0]", "val/top1[control 1]"} <= keys.keys


def test_control_is_a_declared_bool_off_for_the_plain_probe_on_for_every_augmenter():
    assert fit("sea", "method.control=false").controls == []
    assert method("linear").controls == []
    for name in ("sea", "sea_faithful", "sea_noproj", "sea_random", "sea_sameclass", "noise", "mixup", "pgd",
                 "isda"):
        assert compose_train([f"method={name}"]).method.control is True, name
    with pytest.raises((ValueError, InstantiationException), match="method.control=false"):
        method("linear", "method.control=true")  # the plain probe is its own control
    with pytest.raises((ValueError, InstantiationException), match="method.control='yes'"):
        method("sea", "method.control=yes")
