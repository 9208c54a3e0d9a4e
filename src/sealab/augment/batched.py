"""SeA for several heads of a grid at once: the heads whose augmenters differ only in ``eta`` and
``alpha`` (same class, same mode) and whose heads share the task, ``lamda`` and ``delta`` run
one SeA step over a leading head dimension K (K x B x C logits, K x B x B scores and mixing
matrices) instead of K steps of ~25 small kernels each: the step is overhead-bound on small
products (and on every GPU). The formulas are SeA's own (``SeA.plan``, ``loss_and_grad``),
which take a leading head dimension: only ``eta`` and ``alpha`` become K x 1 columns."""

from __future__ import annotations

import torch
from torch import nn

from sealab.augment.base import FeatureAugmenter, SharedBatch
from sealab.augment.sea import SameClassSeA, SeA
from sealab.heads.linear import LinearHead
from sealab.task import MultiClass

BATCHED = (SeA, SameClassSeA)  # exact classes: a subclass may plan differently


class StackedHeads:
    """K heads with the same task, ``lamda`` and ``delta`` as one head with a K x C x d weight:
    what SeA's formulas read of a head."""

    logit_grad = LinearHead.logit_grad
    loss_and_logit_grad = LinearHead.loss_and_logit_grad

    def __init__(self, head: LinearHead, weight: torch.Tensor):
        self.task, self.lamda, self.delta, self.weight = head.task, head.lamda, head.delta, weight

    def weight_gram(self) -> torch.Tensor:
        """K x C x C: each head's ``W W^T`` as its own product. A batched product rounds some
        shapes differently (d=24, C=4 here), and SeA's softmax at a low alpha amplifies that
        rounding over a fit beyond the grid's tolerance against single runs."""
        return torch.stack([weight @ weight.T for weight in self.weight])


def batch_key(augmenter: FeatureAugmenter | None, head: LinearHead) -> tuple | None:
    """Heads with equal keys can share one batched step; None: this head steps on its own."""
    if type(augmenter) not in BATCHED or type(head.task) is not MultiClass:
        return None
    return type(augmenter), augmenter.mode, head.lamda, head.delta


class BatchedSeA(nn.Module):
    """The heads at ``positions`` (in the probe's head order) of one ``batch_key``, as one SeA
    whose ``eta`` and ``alpha`` are K x 1 columns (buffers: they follow the module's device, so
    a step creates no tensor from Python numbers and a CUDA graph can capture it)."""

    def __init__(self, augmenters: list[SeA], positions: list[int]):
        super().__init__()
        first = augmenters[0]
        self.positions = positions
        self.sea = type(first)(first.eta, first.alpha, first.mode)
        del self.sea.eta, self.sea.alpha  # replaced by the K heads' columns
        for name in ("eta", "alpha"):
            column = torch.tensor([[float(getattr(a, name))] for a in augmenters])
            self.sea.register_buffer(name, column, persistent=False)
        contiguous = positions == list(range(positions[0], positions[0] + len(positions)))
        self.span = slice(positions[0], positions[-1] + 1) if contiguous else None
        self.register_buffer("index", torch.tensor(positions), persistent=False)

    def select(self, stacked: torch.Tensor, dim: int) -> torch.Tensor:
        """This group's heads out of all heads' ``stacked`` tensor."""
        if self.span is not None:
            return stacked[(slice(None),) * dim + (self.span,)]
        return stacked.index_select(dim, self.index)

    def step(self, shared: SharedBatch, scores: torch.Tensor, weights: torch.Tensor,
             head: LinearHead) -> tuple[torch.Tensor, torch.Tensor]:
        """The K losses and weight-gradient factors ``A`` (K x C x B; the gradients are
        ``A_k @ x``), from every head's ``scores`` (B x K' x C) and ``weights`` (K' x C x d);
        ``head`` is any head of the group (for its task, ``lamda``, ``delta``)."""
        logits = self.select(scores, 1).transpose(0, 1)  # K x B x C
        heads = StackedHeads(head, self.select(weights, 0))
        plan = self.sea.plan(shared, logits, heads)
        loss, factor, _ = self.sea.loss_and_grad(plan, logits, shared.x, heads)
        return loss, factor


def batched_groups(augmenters: list[FeatureAugmenter | None], heads: list[LinearHead]) -> list[BatchedSeA]:
    """The groups of two or more heads that share a ``batch_key``, in order of their first head."""
    members: dict[tuple, list[int]] = {}
    for k, (augmenter, head) in enumerate(zip(augmenters, heads)):
        key = batch_key(augmenter, head)
        if key is not None:
            members.setdefault(key, []).append(k)
    return [BatchedSeA([augmenters[k] for k in positions], positions)
            for positions in members.values() if len(positions) > 1]
