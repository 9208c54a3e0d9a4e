"""How the probe runs one training step (every head's loss and closed-form gradient, then the
optimizer's step): eagerly, with the loss and gradient compiled by ``torch.compile``, or captured
whole in a CUDA graph and replayed. ``method.compile`` chooses; every mode gives the eager
numbers to rounding.

Only full batches are compiled or captured: the last, shorter batch of an epoch runs eagerly
(measured on this CPU: a recompile for its shape costs seconds, an eager step about a millisecond).
"""

from __future__ import annotations

import logging
import types
from typing import Callable

import torch

from sealab.rules import one_of

log = logging.getLogger(__name__)

# off: eager. inductor: torch.compile of the loss and gradient (any device). cuda_graphs: the whole
# step captured in a CUDA graph (CUDA only). auto: cuda_graphs on CUDA, off elsewhere.
COMPILE = one_of("off", "inductor", "cuda_graphs", "auto")
# auto leaves the CPU eager, by measurement (2-core CPU, B=256; README "Compiled and captured
# steps"): compiled, SeA's step is 0.2 ms faster when overhead-bound (d=64, C=10, 1 thread, idle:
# 0.64 -> 0.46 ms), within the noise when matmul-bound (d=2048, C=100), while compiling costs
# 13-14 s cold, 2-3 s with a warm inductor cache: more than 100 epochs of 20k rows save. On CUDA
# a graph is captured in milliseconds and replays the step's ~35 kernels with one launch: not
# measured here (no GPU); make gpu-check measures it (bench/gpu.json: compile, default_over_eager).
AUTO = {"cuda": "cuda_graphs"}
WARMUP_STEPS = 3  # eager steps on a side stream before capture, as in torch's CUDA-graph examples

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def resolve(mode: str, device: torch.device) -> str:
    """The mode a run on ``device`` uses (``auto`` resolved); refuses CUDA graphs off CUDA."""
    if mode == "auto":
        return AUTO.get(device.type, "off")
    if mode == "cuda_graphs" and device.type != "cuda":
        raise ValueError(f"method.compile=cuda_graphs needs a CUDA device, but this run trains on {device}: "
                         "use method.compile=auto (CUDA graphs on CUDA only) or off")
    return mode


def with_own_code(step: Step) -> Step:
    """``step`` called through a function whose code object is new. torch.compile keeps compiled
    code per code object, with a limit of recompilations (8) per process: the shared
    ``ProbeModule.step`` would reach it after a few fits of a sweep, and stop compiling."""

    def call(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return step(x, y)

    return types.FunctionType(call.__code__.replace(), call.__globals__, closure=call.__closure__)


class EagerSteps:
    """``step(x, y)`` (losses, with every head's gradient in ``.grad``), then ``optimizer.step()``."""

    def __init__(self, step: Step, optimizer: torch.optim.Optimizer):
        self.step, self.optimizer = step, optimizer

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        losses = self.step(x, y)
        self.optimizer.step()
        return losses


class CompiledSteps(EagerSteps):
    """Full batches through ``torch.compile(step)`` in one graph (``fullgraph``: no silent
    fall-back in the middle of a step), the optimizer's step eager (measured: compiling it
    made the step slower on the CPU, and a scheduler's new lr would recompile it every epoch).
    A step that cannot be compiled (an augmenter with data-dependent control flow, e.g. ISDA)
    runs eagerly for the rest of the fit, with one logged line. Random draws (mixup, noise) are
    eager's own (``fallback_random``)."""

    def __init__(self, step: Step, optimizer: torch.optim.Optimizer, batch_size: int):
        super().__init__(step, optimizer)
        self.batch_size = batch_size
        self.compiled: Step | None = torch.compile(with_own_code(step), fullgraph=True, dynamic=False,
                                                   options={"fallback_random": True})

    def __call__(self, x, y):
        if self.compiled is None or len(y) != self.batch_size:
            return super().__call__(x, y)
        try:
            losses = self.compiled(x, y)
        # What torch.compile raises on a step it cannot trace is of many kinds (dynamo's, the
        # symbolic shapes', the recompile limit's), all raised while tracing, before the step
        # ran: the eager step then runs, and raises again if the error was the step's own.
        except Exception as err:  # noqa: BLE001
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            log.warning("method.compile=inductor: the step does not compile (%s); it runs eagerly", reason)
            self.compiled = None
            return super().__call__(x, y)
        self.optimizer.step()
        return losses


class CapturedSteps(EagerSteps):
    """Full batches replay a CUDA graph of the whole step, the optimizer's included: the batch is
    copied into the graph's input buffers and one launch runs every kernel. The first
    ``WARMUP_STEPS`` full batches train eagerly on a side stream (lazy initialisation, momentum
    buffers), then the graph is captured from the next one; shorter batches run eagerly. A graph
    holds the optimizer's hyper-parameters as constants: when a scheduler changes them, the next
    full batch captures a new graph. The returned losses are the graph's output buffer: read
    them before the next step."""

    def __init__(self, step: Step, optimizer: torch.optim.Optimizer, batch_size: int):
        super().__init__(step, optimizer)
        self.batch_size, self.warmup_left = batch_size, WARMUP_STEPS
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: tuple[torch.Tensor, torch.Tensor] | None = None
        self.losses: torch.Tensor | None = None
        self.captured_with: list[dict] | None = None  # the optimizer's hyper-parameters at capture

    def hyper_parameters(self) -> list[dict]:
        return [{k: v for k, v in group.items() if k != "params"} for group in self.optimizer.param_groups]

    def __call__(self, x, y):
        if len(y) != self.batch_size:
            return super().__call__(x, y)
        if self.warmup_left:
            self.warmup_left -= 1
            side = torch.cuda.Stream(x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):
                losses = super().__call__(x, y)
            torch.cuda.current_stream(x.device).wait_stream(side)
            return losses
        if self.graph is None or self.captured_with != self.hyper_parameters():
            self.captured_with = self.hyper_parameters()
            self.inputs, self.graph = (x.clone(), y.clone()), torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):  # records the kernels, runs none
                self.losses = super().__call__(*self.inputs)
        self.inputs[0].copy_(x)
        self.inputs[1].copy_(y)
        self.graph.replay()
        return self.losses


def step_runner(mode: str, step: Step, optimizer: torch.optim.Optimizer, batch_size: int,
                device: torch.device, capturable: bool = True) -> EagerSteps:
    """What runs each training step for ``method.compile=mode`` on ``device``. ``capturable``:
    the step has no host synchronisation or autograd (every augmenter's ``capturable``).
    Otherwise, or with an optimizer that refuses capture (Adam without ``capturable=True``; SGD
    has no such flag), CUDA graphs give way to eager steps, with one logged line."""
    mode = resolve(mode, device)
    optimizer_capturable = all(group.get("capturable", True) for group in optimizer.param_groups)
    if mode == "cuda_graphs" and not (capturable and optimizer_capturable):
        part = "augmenter (it synchronises with the host)" if not capturable else "optimizer (capturable=False)"
        log.warning("method.compile: this method's %s cannot be captured in a CUDA graph; its steps run eagerly",
                    part)
        mode = "off"
    if mode == "inductor":
        return CompiledSteps(step, optimizer, batch_size)
    if mode == "cuda_graphs":
        return CapturedSteps(step, optimizer, batch_size)
    return EagerSteps(step, optimizer)
