"""The batched SeA step of a grid (``sealab.augment.batched``): K heads' losses and weight
gradients in one set of kernels equal each head's own step (``SeA.plan`` and ``loss_and_grad``
on one head) and autograd of the augmented loss written out, for clean, faithful and same-class
SeA, K = 1..4 heads with their own eta and alpha, a batch of one and a short batch."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from helpers import fit_context
from omegaconf import OmegaConf

from sealab.augment import batched as batched_module
from sealab.augment.base import SharedBatch
from sealab.augment.batched import BatchedSeA, batched_groups
from sealab.augment.sea import SameClassSeA, SeA
from sealab.heads.linear import LinearHead
from sealab.methods.probe import LinearProbe
from sealab.task import MultiClass, MultiLabel

C, LAMDA, DELTA = 5, 0.1, 0.1
ETAS, ALPHAS = (0.1, 0.3, 0.5, 0.05), (0.05, 0.5, 0.1, 0.2)

pytestmark = pytest.mark.usefixtures("one_thread")


def batch(b: int, d: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(b, d, generator=gen), dim=1), torch.randint(C, (b,), generator=gen)


def heads(k: int, d: int) -> list[LinearHead]:
    torch.manual_seed(1)
    return [LinearHead(d, MultiClass(C), LAMDA, DELTA) for _ in range(k)]


def batched(kind, mode, k, x, y, members):
    augmenters = [kind(eta=ETAS[i], alpha=ALPHAS[i], mode=mode) for i in range(k)]
    group = BatchedSeA(augmenters, list(range(k)))
    weights = torch.stack([h.weight.detach() for h in members])
    scores = (x @ weights.reshape(-1, x.shape[1]).T).view(len(x), len(members), C)  # as the probe forms them
    losses, factors = group.step(SharedBatch(x, y), scores, weights, members[0])
    return augmenters, losses, factors @ x


def augmented_loss(augmenter, x, y, weight):
    """The head's loss on SeA's augmented batch, the batch formed in feature space (a constant)."""
    head = LinearHead(x.shape[1], MultiClass(C), LAMDA, DELTA)
    with torch.no_grad():
        head.weight.copy_(weight)
        moved, _ = augmenter.augment(x, y, head)
    weight = weight.detach().clone().requires_grad_(True)
    logits = moved @ weight.T - DELTA * F.one_hot(y, C).to(x.dtype)
    loss = LAMDA * F.cross_entropy(logits / LAMDA, y)
    (grad,) = torch.autograd.grad(loss, weight)
    return loss.detach(), grad


CASES = [(SeA, "clean"), (SeA, "faithful"), (SameClassSeA, "clean")]


@pytest.mark.parametrize("kind,mode", CASES)
@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("b,d", [(32, 12), (23, 40), (200, 300)])  # d < B, a short batch, d >= B (the Gram route)
def test_batched_step_equals_each_heads_own_step_and_autograd(kind, mode, k, b, d):
    x, y = batch(b, d)
    members = heads(k, d)
    augmenters, losses, grads = batched(kind, mode, k, x, y, members)
    assert losses.shape == (k,) and grads.shape == (k, C, d)
    for augmenter, head, loss, grad in zip(augmenters, members, losses, grads):
        with torch.no_grad():
            clean = head(x)
            plan = augmenter.plan(SharedBatch(x, y), clean, head)
            own_loss, factor, features = augmenter.loss_and_grad(plan, clean, x, head)
        torch.testing.assert_close(loss, own_loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, factor @ features, rtol=1e-5, atol=1e-6)
        auto_loss, auto_grad = augmented_loss(augmenter, x, y, head.weight)
        torch.testing.assert_close(loss, auto_loss, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(grad, auto_grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind,mode", [(SeA, "clean"), (SameClassSeA, "clean")])
def test_a_batch_of_one_is_left_unaugmented(kind, mode):
    x, y = batch(1, 12)
    members = heads(3, 12)
    _, losses, grads = batched(kind, mode, 3, x, y, members)
    for head, loss, grad in zip(members, losses, grads):
        auto_loss, auto_grad = augmented_loss(SeA(eta=0.0), x, y, head.weight)  # no step: the clean loss
        torch.testing.assert_close(loss, auto_loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, auto_grad, rtol=1e-5, atol=1e-6)


def test_groups_join_heads_that_differ_in_eta_and_alpha_only():
    multi, label = MultiClass(C), MultiLabel(C)
    augmenters = [SeA(0.1), SeA(0.3, alpha=0.5), SeA(0.1, mode="faithful"), None, SeA(0.5), SameClassSeA(0.1),
                  SeA(0.2, mode="faithful"), SeA(0.3), SeA(0.4)]
    members = [LinearHead(4, multi) for _ in range(7)] + [LinearHead(4, multi, lamda=0.5), LinearHead(4, label)]
    groups = batched_groups(augmenters, members)
    assert [g.positions for g in groups] == [[0, 1, 4], [2, 6]]  # lamda 0.5, multi-label, single same-class: alone
    assert groups[0].span is None and batched_groups(augmenters[:2], members[:2])[0].span == slice(0, 2)
    torch.testing.assert_close(groups[0].sea.eta, torch.tensor([[0.1], [0.3], [0.5]]))
    torch.testing.assert_close(groups[0].sea.alpha, torch.tensor([[0.01], [0.5], [0.01]]))


def test_a_probe_grid_steps_its_sea_heads_together_as_it_would_one_by_one(monkeypatch):
    """A grid over eta (and alpha) trains through one batched step per batch (150 rows: four full
    batches and a short one), to the weights of the per-head steps; the control head stays out."""
    d, n = 24, 150
    gen = torch.Generator().manual_seed(3)
    means = torch.randn(C, d, generator=gen)
    y = torch.arange(n) % C
    data = F.normalize(means[y] + 1.2 * torch.randn(n, d, generator=gen), dim=1), y
    grid = {"augmenter.eta": [0.1, 0.3], "augmenter.alpha": [0.1, 0.5]}

    cfg = OmegaConf.create({
        "head": {"_target_": "sealab.heads.linear.LinearHead", "_partial_": True, "lamda": LAMDA, "delta": DELTA},
        "optimizer": {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.8, "momentum": 0.9},
        "augmenter": {"_target_": "sealab.augment.sea.SeA", "eta": 0.1, "alpha": 0.1, "mode": "clean"}})

    def fit():
        L.seed_everything(0, verbose=False)
        probe = LinearProbe("sea", head=cfg.head, optimizer=cfg.optimizer, augmenter=cfg.augmenter, epochs=3,
                            batch_size=32, grid=grid, control=True, compile="off")
        result = probe.fit(data, None, fit_context(C))
        return [c.scorer.weight for c in result.candidates], result.controls[0].scorer.weight

    calls = []
    step = batched_module.BatchedSeA.step

    def counted(self, *args):
        calls.append(len(self.positions))
        return step(self, *args)

    monkeypatch.setattr(batched_module.BatchedSeA, "step", counted)
    together, control = fit()
    assert calls == [4] * 15  # 3 epochs x 5 batches, the 4 heads in one step, the control not among them
    monkeypatch.setattr("sealab.methods.probe.batched_groups", lambda augmenters, heads: [])
    one_by_one, control_alone = fit()
    assert torch.equal(control, control_alone)
    for a, b in zip(together, one_by_one, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
