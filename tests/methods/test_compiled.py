"""``method.compile``: the probe's step through torch.compile trains to the eager step's weights
(linear, clean and faithful SeA, a grid, in one fit), only full batches are compiled, a step
that cannot compile runs eagerly with one logged line, CUDA graphs are refused off CUDA and
chosen only for what a graph can hold (the capture itself: tests/gpu/test_captured_steps.py)."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
from helpers import fit_context, gaussian_blobs
from omegaconf import OmegaConf

from sealab.methods import compiled
from sealab.methods.compiled import CapturedSteps, CompiledSteps, EagerSteps, resolve
from sealab.methods.probe import LinearProbe

N, D, C, BATCH, EPOCHS = 150, 12, 4, 32, 3  # 150 = 4 x 32 + 22: a short last batch, run eagerly
SGD = {"lr": 0.8, "momentum": 0.9, "weight_decay": 1e-4}

pytestmark = pytest.mark.usefixtures("one_thread")  # runs compared to rounding: one thread


def probe(compile: str, augmenter: dict, grid=None, control=False) -> LinearProbe:
    cfg = OmegaConf.create({
        "head": {"_target_": "sealab.heads.linear.LinearHead", "_partial_": True, "lamda": 0.1, "delta": 0.1},
        "optimizer": {"_target_": "torch.optim.SGD", "_partial_": True, **SGD}, "augmenter": augmenter})
    return LinearProbe("sea", head=cfg.head, optimizer=cfg.optimizer, augmenter=cfg.augmenter, epochs=EPOCHS,
                       batch_size=BATCH, grid=grid, control=control, compile=compile)


def weights(method: LinearProbe) -> list[torch.Tensor]:
    L.seed_everything(0, verbose=False)
    result = method.fit(gaussian_blobs(N, D, C), None, fit_context(C))
    heads = [c.scorer for c in result.candidates] or [result.scorer]
    return [head.weight for head in [*heads, *(c.scorer for c in result.controls)]]


@pytest.mark.slow  # one torch.compile of the step: 10-40 s on this 2-core machine, cold cache
def test_the_compiled_step_trains_to_the_eager_weights(step_runners):
    """One fit covers clean SeA, faithful SeA, a grid of them (two etas each: batched steps,
    sealab.augment.batched) and the plain linear head (the control heads): every head of the
    compiled fit lands on the eager fit's weights."""
    sea = {"_target_": "sealab.augment.sea.SeA", "eta": 0.3, "alpha": 0.1, "mode": "clean"}
    grid = {"augmenter.mode": ["clean", "faithful"], "augmenter.eta": [0.1, 0.3]}
    eager = weights(probe("off", sea, grid, control=True))
    compiled_fit = weights(probe("inductor", sea, grid, control=True))
    assert len(eager) == len(compiled_fit) == 4 + 1  # the grid's heads and their control
    _, runner = step_runners  # the eager fit's, the compiled fit's
    assert isinstance(runner, CompiledSteps) and runner.compiled is not None  # compiled, no fall-back
    for k, (a, b) in enumerate(zip(compiled_fit, eager)):
        assert not torch.equal(a, eager[0]) or k == 0  # the heads differ: a real comparison
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5, msg=f"head {k}")


def test_a_step_that_cannot_compile_runs_eagerly_with_one_logged_line(step_runners, caplog):
    """ISDA's class loop reads the labels on the host: torch.compile cannot trace it."""
    isda = {"_target_": "sealab.augment.isda.ISDA", "lambda0": 0.5}
    eager = weights(probe("off", isda))
    with caplog.at_level(logging.WARNING, logger=compiled.__name__):
        fell_back = weights(probe("inductor", isda))
    lines = [r.getMessage() for r in caplog.records if r.name == compiled.__name__]
    assert len(lines) == 1 and "does not compile" in lines[0] and "runs eagerly" in lines[0], lines
    assert step_runners[-1].compiled is None
    torch.testing.assert_close(fell_back[0], eager[0], rtol=0, atol=0)


class Recorder:
    def __init__(self, name: str, calls: list):
        self.name, self.calls = name, calls

    def __call__(self, x, y=None):
        self.calls.append((self.name, None if x is None else len(x)))
        return torch.zeros(())


def test_only_full_batches_take_the_compiled_step():
    calls: list = []
    optimizer = Recorder("optimizer", calls)
    runner = CompiledSteps(Recorder("eager", calls), optimizer, batch_size=4)
    runner.optimizer.step = lambda: calls.append(("optimizer", None))
    runner.compiled = Recorder("compiled", calls)
    for rows in (4, 4, 3):
        runner(torch.zeros(rows, 2), torch.zeros(rows))
    assert calls == [("compiled", 4), ("optimizer", None), ("compiled", 4), ("optimizer", None),
                     ("eager", 3), ("optimizer", None)]


def test_auto_is_eager_on_the_cpu_and_cuda_graphs_need_cuda():
    cpu = torch.device("cpu")
    assert resolve("auto", cpu) == "off" and resolve("auto", torch.device("cuda", 0)) == "cuda_graphs"
    assert resolve("inductor", cpu) == "inductor"
    with pytest.raises(ValueError, match="method.compile=cuda_graphs needs a CUDA device.*cpu.*auto"):
        probe("cuda_graphs", None).fit(gaussian_blobs(N, D, C), None, fit_context(C))


@pytest.mark.parametrize(("optimizer", "augmenter_capturable", "captured", "part"), [
    (torch.optim.SGD, True, True, None),
    (torch.optim.SGD, False, False, "augmenter"),
    (torch.optim.Adam, True, False, "optimizer"),  # Adam refuses capture unless capturable=True
])
def test_cuda_graphs_capture_only_what_a_graph_can_hold(caplog, optimizer, augmenter_capturable, captured, part):
    """The choice is made before any CUDA call, so it is checked here without a GPU."""
    weight = torch.nn.Parameter(torch.zeros(2, 2))
    with caplog.at_level(logging.WARNING, logger=compiled.__name__):
        runner = compiled.step_runner("cuda_graphs", lambda x, y: x, optimizer([weight], lr=0.1), BATCH,
                                      torch.device("cuda", 0), capturable=augmenter_capturable)
    assert isinstance(runner, CapturedSteps) is captured and isinstance(runner, EagerSteps)
    lines = [r.getMessage() for r in caplog.records if r.name == compiled.__name__]
    assert lines == [] if captured else (len(lines) == 1 and part in lines[0] and "run eagerly" in lines[0]), lines
