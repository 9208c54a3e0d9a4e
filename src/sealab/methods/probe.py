"""The SGD probe: a bias-free linear head on fixed features, with any feature augmenter, and
optionally a whole grid of hyper-parameters trained side by side in one pass over the data."""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sealab.augment.base import FeatureAugmenter, SharedBatch
from sealab.augment.batched import BatchedSeA, batched_groups
from sealab.features.batches import (
    BlockShuffledBatches,
    FeatureDataModule,
    feature_blocks,
)
from sealab.features.ondisk import StreamedFeatures
from sealab.heads.linear import LinearHead
from sealab.methods.base import (
    METHOD,
    OPTIMIZER_RULES,
    Candidate,
    Features,
    FitContext,
    FitResult,
    HeadModule,
    Method,
    settings_of,
)
from sealab.methods.compiled import COMPILE, EagerSteps, resolve, step_runner
from sealab.rules import BOOL, COUNT, component, mapping, validate

GRID_PARTS = ("head", "optimizer", "augmenter")  # what a grid may vary; the data pass is shared
AUGMENTER_KEYS = "augmenter."  # grid keys a control head leaves out: it trains without augmentation


@dataclass
class HeadSpec:
    """One member of the grid: its hyper-parameter values and what trains it."""

    values: dict[str, Any]
    head: Callable[..., LinearHead]
    optimizer: Callable[..., torch.optim.Optimizer]
    augmenter: FeatureAugmenter | None


def _build(component: Any) -> Any:
    """A config node (the method config is instantiated non-recursively) or a ready object."""
    return instantiate(component) if isinstance(component, (DictConfig, Mapping)) else component


def grid_keys(components: dict[str, Any]) -> list[str]:
    """Every scalar hyper-parameter of the head, optimizer and augmenter configs."""
    return sorted(f"{part}.{key}" for part in GRID_PARTS if isinstance(components.get(part), DictConfig)
                  for key, value in components[part].items()
                  if not str(key).startswith("_") and not OmegaConf.is_config(value))


def expand_grid(name: str, components: dict[str, Any], grid: Mapping | None) -> list[HeadSpec]:
    """One ``HeadSpec`` per combination of the grid's values, in grid order (the last key
    varies fastest); an empty grid is the single configured head."""
    grid = dict(grid or {})
    if grid:
        valid = grid_keys(components)
        if not valid:
            raise ValueError(f"method={name}: a grid needs the method's config (head, optimizer, augmenter)")
        for key, values in grid.items():
            if key not in valid:
                raise ValueError(f"method.grid key {key!r} is not a hyper-parameter of method={name}: "
                                 f"choose among {valid}")
            is_list = OmegaConf.is_list(values) or isinstance(values, (list, tuple))
            if not is_list or len(values) == 0:
                raise ValueError(f"method.grid.{key} must be a non-empty list of values, got {values!r}")
    specs = []
    for combination in itertools.product(*grid.values()):
        values = dict(zip(grid, combination))
        parts = {part: copy.deepcopy(components.get(part)) for part in GRID_PARTS}
        for key, value in values.items():
            part, _, leaf = key.partition(".")
            OmegaConf.update(parts[part], leaf, value, merge=False)
        specs.append(HeadSpec(values, *(_build(parts[part]) for part in GRID_PARTS)))
    return specs


def control_grid(grid: Mapping | None) -> dict[str, list[Any]]:
    """The control heads' grid: ``grid``'s keys other than the augmenter's, each with its distinct
    values in order. It gives one control per distinct combination of the values that are not
    the augmentation's, so every augmented head of a grid has the control that differs from it in
    the augmentation alone (the head whose ``values`` are a subset of its own)."""
    return {key: list(dict.fromkeys(values)) for key, values in (grid or {}).items()
            if not str(key).startswith(AUGMENTER_KEYS)}


def combined_optimizer(specs: list[HeadSpec], heads: list[LinearHead]) -> torch.optim.Optimizer:
    """One optimizer with a parameter group per head, each with its own hyper-parameters:
    the same update as one optimizer per head."""
    factories = [spec.optimizer for spec in specs]
    kinds = {getattr(f, "func", None) for f in factories}
    if len(kinds) != 1 or None in kinds:
        raise ValueError("every head of a grid needs the same optimizer class, given as a partial")
    groups = [{"params": [head.weight], **f.keywords} for f, head in zip(factories, heads)]
    return kinds.pop()(groups, *factories[0].args)


class ProbeModule(HeadModule):
    """Trains K heads (K = 1 without a grid) on the same batches. One matrix product gives every
    head's clean logits; each head's augmenter then plans its augmented batch, and a mixing
    matrix is applied in logit space. Each head's loss depends on its weights only, so the
    summed loss gives every head exactly the gradient of its own single run. SeA heads that
    differ only in eta and alpha plan and step together, over a leading head dimension
    (``sealab.augment.batched``): a few dozen kernels per step for the group instead of each.

    The hot loop is plain PyTorch: one Lightning step is a whole epoch of optimiser steps
    (manual optimisation, the data module's ``WholeEpochs``), so Lightning's per-batch hooks,
    logging and bookkeeping run once per epoch. Per step: the losses and closed-form weight
    gradients (``step``), the raw optimizer's step, and one in-place sum of the losses for
    the epoch's mean.

    ``control_specs`` and ``control_heads``: heads trained without augmentation on the same
    batches, from the same initialisation (the run's free baseline). Their products are their
    own, never stacked with the augmented heads', so the augmented heads' numbers are those of a
    run without them, bit for bit. They come after the augmented heads in ``heads``."""

    def __init__(self, specs: list[HeadSpec], heads: list[LinearHead],
                 scheduler: Callable[..., Any] | None = None,
                 control_specs: list[HeadSpec] = (), control_heads: list[LinearHead] = (),
                 compile: str = "off"):
        super().__init__([*heads, *control_heads])
        self.automatic_optimization = False
        self.specs, self.scheduler_factory = [*specs, *control_specs], scheduler
        self.augmented = len(specs)  # heads[:augmented] are the method's, the rest its controls
        self.augmenters = nn.ModuleList([s.augmenter for s in specs if s.augmenter is not None])
        # SeA heads stepped together (sealab.augment.batched); the controls are never among them
        self.batched = nn.ModuleList(batched_groups([s.augmenter for s in specs], list(heads)))
        # (specs, heads, whether any augments, batched groups): the method's heads, then the controls if any
        self.groups = [(list(specs), list(heads), len(self.augmenters) > 0, list(self.batched)),
                       *([(list(control_specs), list(control_heads), False, [])] if control_heads else [])]
        self._epoch_losses: torch.Tensor | None = None  # each head's example-weighted mean
        self.compile = compile  # how each step runs (sealab.methods.compiled), resolved for the device
        self._steps: EagerSteps | None = None  # built at the first step: it needs the optimizer

    def head_scores(self, x: torch.Tensor) -> torch.Tensor:
        """B x K x C: every head's logits from one product."""
        heads = list(self.heads)
        if len(heads) == 1:
            return (x @ heads[0].weight.T).unsqueeze(1)
        return _scores(torch.stack([head.weight for head in heads]), x)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Every head's loss on the batch (K, or a scalar for one head), with its weight gradient
        put in ``.grad`` in closed form (no autograd graph: the head is linear)."""
        if len(self.groups) == 1:
            return self.group_step(*self.groups[0], x, y)
        return torch.cat([self.group_step(*group, x, y).reshape(-1) for group in self.groups])

    def group_step(self, specs: list[HeadSpec], heads: list[LinearHead], augments: bool,
                   batched: list[BatchedSeA], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``step`` for one group of heads. Heads whose gradient is ``A_k @ x`` (plain, or a mixing
        matrix: SeA, mixup) share one product; the ``batched`` SeA heads share every kernel."""
        if len(heads) == 1:
            weights, scores = None, (x @ heads[0].weight.T).unsqueeze(1)
        else:
            weights = torch.stack([head.weight for head in heads])  # K x C x d
            scores = _scores(weights, x)
        shared = SharedBatch(x, y) if augments else None
        losses: list[torch.Tensor | None] = [None] * len(heads)
        on_x, on_x_heads = [], []
        for group in batched:
            group_losses, factors = group.step(shared, scores, weights, heads[group.positions[0]])
            for k, loss in zip(group.positions, group_losses.unbind()):
                losses[k] = loss
            on_x.append(factors.flatten(0, 1))
            on_x_heads += [heads[k] for k in group.positions]
        for k, (spec, head, clean) in enumerate(zip(specs, heads, scores.unbind(1))):
            if losses[k] is not None:
                continue
            if spec.augmenter is None:
                loss, logit_grad = head.loss_and_logit_grad(clean, y)
                factor, features = logit_grad.T, x
            else:
                plan = spec.augmenter.plan(shared, clean, head)
                loss, factor, features = spec.augmenter.loss_and_grad(plan, clean, x, head)
            losses[k] = loss
            if features is x:
                on_x.append(factor)
                on_x_heads.append(head)
            else:
                head.weight.grad = factor if features is None else factor @ features
        if on_x:
            grads = (on_x[0] if len(on_x) == 1 else torch.cat(on_x)) @ x
            for head, grad in zip(on_x_heads, grads.split(len(heads[0].weight))):
                head.weight.grad = grad
        return losses[0] if len(losses) == 1 else torch.stack(losses)

    def training_step(self, batches: BlockShuffledBatches, batch_idx: int) -> None:
        if self._steps is None:  # the raw optimizer: no per-step hooks
            self._steps = step_runner(self.compile, self.step, self.optimizers(use_pl_optimizer=False),
                                      batches.batch_size, self.device, all(a.capturable for a in self.augmenters))
        total = torch.zeros(len(self.heads), device=self.device)
        with torch.no_grad():
            for x, y in batches:
                total.add_(self._steps(x, y), alpha=len(y))
        self._epoch_losses = total / max(batches.examples, 1)

    def on_train_end(self) -> None:
        self._steps = None  # a CUDA graph's memory goes with it

    def on_train_epoch_start(self) -> None:
        self._epoch_losses = None
        for augmenter in self.augmenters:
            augmenter.on_train_epoch_start(self.current_epoch, self.trainer.max_epochs)

    def on_train_epoch_end(self) -> None:
        if self._epoch_losses is not None:
            self.log_dict({self.metric_key("train/loss", k): loss for k, loss in enumerate(self._epoch_losses)})
        for k, head in enumerate(self.heads):
            if not torch.isfinite(head.weight).all():
                raise FloatingPointError(
                    f"classifier weights{self.grid_label(k)} became NaN/Inf in epoch {self.current_epoch}. "
                    "With SeA mode=faithful this is the reference code's failure on a last batch of one "
                    "example (n = k*batch_size + 1): use mode=clean or method.drop_last=true; "
                    "otherwise lower the learning rate."
                )
        scheduler = self.lr_schedulers()
        if scheduler is not None:  # stepped every epoch, as Lightning steps it in automatic optimisation
            scheduler.step()

    def metric_key(self, name: str, k: int) -> str:
        """The augmented heads' keys as without controls; a control's ends in ``[control]`` (or
        ``[control j]`` for the j-th of several)."""
        controls = len(self.heads) - self.augmented
        if k < self.augmented:
            return name if self.augmented == 1 else f"{name}[{k}]"
        return f"{name}[control]" if controls == 1 else f"{name}[control {k - self.augmented}]"

    def grid_label(self, k: int) -> str:
        if k >= self.augmented:
            return f" of the control head {self.specs[k].values or ''}".rstrip()
        return f" of grid head {k} {self.specs[k].values}" if self.augmented > 1 else ""

    def configure_optimizers(self):
        optimizer = combined_optimizer(self.specs, list(self.heads))
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}


def _scores(weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """B x K x C: the logits of K heads' stacked ``weights`` (K x C x d) from one product."""
    k, c, d = weights.shape
    return (x @ weights.reshape(k * c, d).T).view(len(x), k, c)


def grid_memory_bytes(num_heads: int, num_classes: int, dim: int, itemsize: int = 4) -> int:
    """Weights, gradients and up to two optimizer buffers (momentum; Adam's two moments) per head."""
    return 4 * num_heads * num_classes * dim * itemsize


def available_memory(device: torch.device) -> int | None:
    """Free bytes on ``device`` (the kernel's MemAvailable for the CPU), or None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    match = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


class LinearProbe(Method):
    """``method=linear`` and every feature augmenter: SGD on a bias-free linear head, or on a
    grid of heads. ``grid`` maps dotted keys of the head, optimizer and augmenter configs to
    lists of values (``{"augmenter.eta": [0.1, 0.3], "optimizer.lr": [0.4, 1.6]}``); every
    combination gets its own head, initialised, batched and updated exactly as its single run,
    all in one pass over the data. The run then selects the best on validation.

    ``head``, ``optimizer``, ``augmenter`` and ``scheduler`` are config nodes (the method
    config is instantiated with ``_recursive_: false`` so the grid can vary them) or ready
    objects (a head factory, an optimizer partial, an augmenter).

    The training split may stay on disk (``StreamedFeatures``): it is then read by shuffled
    blocks (``BlockShuffledBatches``), so resident memory is about
    ``block_rows x d x (4 + itemsize)`` bytes for the block, 16 bytes per training row for the
    epoch's order and targets, the validation split, and ``grid_memory_bytes`` for the heads,
    whatever the number of training rows.

    ``control``: also train, in the same pass, the head without augmentation (same initialisation,
    same batches): one per distinct combination of the grid's values that are not the
    augmenter's (``control_grid``). The fit returns them as ``FitResult.controls``; the augmented
    heads' numbers are the same with and without them."""

    streams = True
    # head, augmenter, scheduler: nodes with a _target_, checked by their classes' own rules.
    RULES = {**Method.RULES, "head": component(), **OPTIMIZER_RULES, "scheduler": component(nullable=True),
             "augmenter": component(nullable=True), "epochs": COUNT, "batch_size": COUNT, "drop_last": BOOL,
             "grid": mapping(nullable=True), "control": BOOL, "compile": COMPILE}

    def __init__(self, name: str, head: Any, optimizer: Any, augmenter: Any = None, scheduler: Any = None,
                 epochs: int = 100, batch_size: int = 256, drop_last: bool = False, grid: Mapping | None = None,
                 control: bool = False, compile: str = "auto"):
        validate(type(self).__name__, self.RULES, prefix=METHOD, name=name, head=head,
                 optimizer=settings_of(optimizer), augmenter=augmenter, scheduler=scheduler, epochs=epochs,
                 batch_size=batch_size, drop_last=drop_last, grid=grid, control=control, compile=compile)
        super().__init__(name)
        if control and augmenter is None:
            raise ValueError(f"method={name} has no augmenter: a control head (the head without augmentation) "
                             "would be the method itself; set method.control=false")
        self.specs = expand_grid(name, {"head": head, "optimizer": optimizer, "augmenter": augmenter}, grid)
        self.controls = (expand_grid(name, {"head": head, "optimizer": optimizer, "augmenter": None},
                                     control_grid(grid)) if control else [])
        self.scheduler = _build(scheduler)
        self.epochs, self.batch_size, self.drop_last, self.compile = epochs, batch_size, drop_last, compile

    def fit(self, train: Features | StreamedFeatures, val: Features | None, ctx: FitContext) -> FitResult:
        train = feature_blocks(train)
        dim = train.shape[1]
        specs = [*self.specs, *self.controls]
        need, have = grid_memory_bytes(len(specs), ctx.task.num_classes, dim), available_memory(ctx.device)
        if have is not None and need > have:
            raise MemoryError(f"method={self.name}: {len(specs)} heads of {ctx.task.num_classes} x {dim} "
                              f"need about {need / 2**30:.1f} GiB with their gradients and optimizer state, "
                              f"but {ctx.device} has {have / 2**30:.1f} GiB free: shrink method.grid"
                              + (" (or method.control=false)" if self.controls else ""))
        # Every head starts from the initialisation its single run would draw.
        start = torch.get_rng_state()
        heads = []
        for spec in specs:
            torch.set_rng_state(start)
            heads.append(spec.head(in_features=dim, task=ctx.task))
        heads, control_heads = heads[:len(self.specs)], heads[len(self.specs):]
        module = ProbeModule(self.specs, heads, self.scheduler, self.controls, control_heads,
                             compile=resolve(self.compile, ctx.device))
        data = FeatureDataModule(train, val, batch_size=self.batch_size,
                                 drop_last=self.drop_last, seed=ctx.seed)
        # Without a validation split, switch the validation loop off (and its warning).
        trainer = ctx.make_trainer(max_epochs=self.epochs, **({} if val else {"limit_val_batches": 0}))
        trainer.fit(module, datamodule=data)
        heads = [head.cpu().eval() for head in heads]
        controls = [Candidate(s.values, head.cpu().eval()) for s, head in zip(self.controls, control_heads)]
        if len(heads) == 1:
            return FitResult(heads[0], controls=controls)
        return FitResult(heads[0], candidates=[Candidate(s.values, h) for s, h in zip(self.specs, heads)],
                         controls=controls)
