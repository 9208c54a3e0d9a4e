"""``method.compile=cuda_graphs`` on CUDA: full batches replay a captured graph of the whole step
and train to the eager step's weights (linear, clean and faithful SeA, a grid, in one fit; a
scheduler's new learning rate is captured anew); an augmenter a graph cannot capture runs
eagerly with one logged line; ``auto`` captures on CUDA."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
from gpu_helpers import fit_context
from helpers import gaussian_blobs
from omegaconf import OmegaConf

from sealab.methods import compiled
from sealab.methods.compiled import WARMUP_STEPS, CapturedSteps, EagerSteps
from sealab.methods.probe import LinearProbe

N, D, C, BATCH, EPOCHS = 150, 12, 4, 32, 3  # 4 full batches an epoch (captured after the warm-up), 1 short
SGD = {"lr": 0.8, "momentum": 0.9, "weight_decay": 1e-4}
SEA = {"_target_": "sealab.augment.sea.SeA", "eta": 0.3, "alpha": 0.1, "mode": "clean"}
HALVING = {"_target_": "torch.optim.lr_scheduler.StepLR", "_partial_": True, "step_size": 1, "gamma": 0.5}

pytestmark = pytest.mark.gpu


@pytest.fixture
def cuda(device):
    if device.type != "cuda":
        pytest.skip("CUDA graphs need a CUDA device")
    return device


def probe(compile: str, augmenter: dict | None, grid=None, control=False, scheduler=None) -> LinearProbe:
    cfg = OmegaConf.create({
        "head": {"_target_": "sealab.heads.linear.LinearHead", "_partial_": True, "lamda": 0.1, "delta": 0.1},
        "optimizer": {"_target_": "torch.optim.SGD", "_partial_": True, **SGD}, "augmenter": augmenter,
        "scheduler": scheduler})
    return LinearProbe("sea", head=cfg.head, optimizer=cfg.optimizer, augmenter=cfg.augmenter,
                       scheduler=cfg.scheduler, epochs=EPOCHS, batch_size=BATCH, grid=grid, control=control,
                       compile=compile)


def weights(method: LinearProbe, device) -> list[torch.Tensor]:
    L.seed_everything(0, verbose=False)
    result = method.fit(gaussian_blobs(N, D, C, device), None, fit_context(device, C))
    heads = [c.scorer for c in result.candidates] or [result.scorer]
    return [head.weight for head in [*heads, *(c.scorer for c in result.controls)]]


def assert_same(replayed: list[torch.Tensor], eager: list[torch.Tensor]) -> None:
    assert len(replayed) == len(eager)
    for k, (a, b) in enumerate(zip(replayed, eager)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5, msg=f"head {k}")


@pytest.mark.parametrize("compile", ["cuda_graphs", "auto"])
def test_captured_steps_train_to_the_eager_weights(cuda, step_runners, compile):
    grid = {"augmenter.mode": ["clean", "faithful"]}
    eager = weights(probe("off", SEA, grid, control=True), cuda)
    replayed = weights(probe(compile, SEA, grid, control=True), cuda)
    runner = step_runners[-1]
    assert isinstance(runner, CapturedSteps) and runner.warmup_left == 0 and runner.graph is not None
    assert len(eager) == 3 and not torch.equal(eager[0], eager[1])  # clean and faithful differ
    assert_same(replayed, eager)


def test_a_new_learning_rate_is_captured_anew(cuda, step_runners):
    eager = weights(probe("off", SEA, scheduler=HALVING), cuda)
    replayed = weights(probe("cuda_graphs", SEA, scheduler=HALVING), cuda)
    assert step_runners[-1].captured_with[0]["lr"] == SGD["lr"] * 0.5 ** (EPOCHS - 1)
    assert_same(replayed, eager)


def test_an_augmenter_a_graph_cannot_capture_runs_eagerly_with_one_logged_line(cuda, step_runners, caplog):
    mixup = {"_target_": "sealab.augment.mixup.Mixup", "alpha": 1.0}
    eager = weights(probe("off", mixup), cuda)
    with caplog.at_level(logging.WARNING, logger=compiled.__name__):
        fell_back = weights(probe("cuda_graphs", mixup), cuda)
    lines = [r.getMessage() for r in caplog.records if r.name == compiled.__name__]
    assert len(lines) == 1 and "augmenter" in lines[0] and "cannot be captured" in lines[0], lines
    assert type(step_runners[-1]) is EagerSteps
    assert_same(fell_back, eager)


def test_the_warm_up_is_a_few_steps():
    assert 1 <= WARMUP_STEPS < (N // BATCH) * EPOCHS  # the tests above replay graphs
