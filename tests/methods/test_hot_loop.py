"""The probe's training loop against a plain reference loop, written here independently of
sealab's loop, augmenters and losses: the same initialisation, the same epoch orders (a
``randperm`` seeded with ``seed + epoch``), the same updates, so the weights agree to rounding
for linear, clean SeA, faithful SeA and every head of a grid."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from helpers import fit_context, gaussian_blobs
from omegaconf import OmegaConf

from sealab.heads.linear import LinearHead
from sealab.methods.probe import LinearProbe
from sealab.task import MultiClass, make_task

N, D, C, BATCH, EPOCHS, SEED = 150, 12, 4, 32, 4, 0  # 150 = 4 x 32 + 22: a short last batch
LAMDA, DELTA, ALPHA = 0.1, 0.1, 0.1
SGD = {"lr": 0.8, "momentum": 0.9, "weight_decay": 1e-4}


pytestmark = pytest.mark.usefixtures("one_thread")  # runs compared to rounding: one thread


def loss_of(x, y, weight, lamda=LAMDA, delta=DELTA, reduction="mean"):
    """The head's loss written out: lamda * CE((x W^T - delta * onehot) / lamda, y)."""
    logits = x @ weight.T - delta * F.one_hot(y, C).to(x.dtype)
    return lamda * F.cross_entropy(logits / lamda, y, reduction=reduction)


def input_gradient(x, y, weight, reduction):
    with torch.enable_grad():
        x = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_of(x, y, weight.detach(), reduction=reduction), x)
    return grad


def clean_sea(x, y, weight, eta):
    """SeA as the paper states it, in feature space: exact unit gradients, softmax over j != i."""
    if len(x) < 2:
        return x
    grad = input_gradient(x, y, weight, "sum")
    unit = grad / grad.norm(dim=1, keepdim=True)
    scores = (unit @ x.T / ALPHA).fill_diagonal_(float("-inf"))
    direction = F.normalize(torch.softmax(scores, dim=1) @ x, dim=1)
    return F.normalize(x + eta * direction, dim=1)


def published_sea(x, y, weight, eta):
    """The reference code's step: batch-mean gradient, eps-normalised, softmax over all j, the
    diagonal zeroed and the rows renormalised."""
    unit = F.normalize(input_gradient(x, y, weight, "mean"), dim=1)
    q = torch.softmax(unit @ x.T / ALPHA, dim=1)
    q = q - torch.diag(torch.diag(q))
    q = q / q.sum(dim=1, keepdim=True)
    return F.normalize(x + eta * F.normalize(q @ x, dim=1), dim=1)


AUGMENT = {"linear": None, "clean": clean_sea, "faithful": published_sea}


def reference_loop(x, y, augment=None, eta=0.0, lr=SGD["lr"], gamma=1.0):
    """Plain SGD over seeded epoch permutations, the augmentation a constant of each step; the
    learning rate multiplied by ``gamma`` after every epoch."""
    L.seed_everything(SEED, verbose=False)
    weight = LinearHead(D, MultiClass(C)).weight.detach().clone().requires_grad_(True)
    optimizer = torch.optim.SGD([weight], **{**SGD, "lr": lr})
    for epoch in range(EPOCHS):
        order = torch.randperm(N, generator=torch.Generator().manual_seed(SEED + epoch))
        for start in range(0, N, BATCH):
            xb, yb = x[order[start:start + BATCH]], y[order[start:start + BATCH]]
            if augment is not None:
                with torch.no_grad():
                    xb = augment(xb, yb, weight.detach(), eta)
            optimizer.zero_grad()
            loss_of(xb, yb, weight).backward()
            optimizer.step()
        for group in optimizer.param_groups:
            group["lr"] *= gamma
    return weight.detach()


def probe(mode="linear", eta=0.3, grid=None, scheduler=None):
    """The probe as a config builds it (config nodes, which a grid needs)."""
    augmenter = None if mode == "linear" else {"_target_": "sealab.augment.sea.SeA", "eta": eta,
                                               "alpha": ALPHA, "mode": mode}
    cfg = OmegaConf.create({
        "head": {"_target_": "sealab.heads.linear.LinearHead", "_partial_": True, "lamda": LAMDA, "delta": DELTA},
        "optimizer": {"_target_": "torch.optim.SGD", "_partial_": True, **SGD}, "augmenter": augmenter})
    return LinearProbe(mode, head=cfg.head, optimizer=cfg.optimizer, augmenter=cfg.augmenter,
                       scheduler=scheduler, epochs=EPOCHS, batch_size=BATCH, grid=grid)


def fit(method):
    L.seed_everything(SEED, verbose=False)
    return method.fit(gaussian_blobs(N, D, C), None, fit_context(C, seed=SEED))


@pytest.mark.parametrize("mode", sorted(AUGMENT))
def test_the_probe_trains_as_the_reference_loop(mode):
    x, y = gaussian_blobs(N, D, C)
    weight = fit(probe(mode)).scorer.weight
    reference = reference_loop(x, y, AUGMENT[mode], eta=0.3)
    assert not torch.equal(reference, reference_loop(x, y, eta=0.3)) or mode == "linear"  # SeA moves it
    torch.testing.assert_close(weight, reference, rtol=1e-4, atol=2e-5)


def test_the_scheduler_steps_once_an_epoch():
    x, y = gaussian_blobs(N, D, C)
    halving = OmegaConf.create({"_target_": "torch.optim.lr_scheduler.StepLR", "_partial_": True,
                                "step_size": 1, "gamma": 0.5})
    weight = fit(probe("clean", scheduler=halving)).scorer.weight
    torch.testing.assert_close(weight, reference_loop(x, y, clean_sea, eta=0.3, gamma=0.5), rtol=1e-4, atol=2e-5)


def test_every_head_of_a_grid_trains_as_its_reference_loop():
    x, y = gaussian_blobs(N, D, C)
    grid = {"augmenter.eta": [0.1, 0.5], "optimizer.lr": [0.4, 0.8]}
    result = fit(probe("clean", grid=grid))
    assert len(result.candidates) == 4
    for candidate in result.candidates:
        values = candidate.values
        reference = reference_loop(x, y, clean_sea, eta=values["augmenter.eta"], lr=values["optimizer.lr"])
        torch.testing.assert_close(candidate.scorer.weight, reference, rtol=1e-4, atol=2e-5, msg=str(values))


@pytest.mark.parametrize("kind", ["hard", "soft", "multilabel"])
@pytest.mark.parametrize("delta", [0.0, 0.2])
def test_the_step_loss_and_gradient_are_the_loss_and_its_autograd_gradient(kind, delta):
    """The closed-form step takes the loss and d loss / d logits from one computation."""
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(9, C, generator=gen, dtype=torch.float64) * 3
    if kind == "multilabel":
        y = torch.randint(-1, 2, (9, C), generator=gen)  # -1: ignored entries
    elif kind == "soft":
        y = torch.softmax(torch.randn(9, C, generator=gen, dtype=torch.float64), dim=1)
    else:
        y = torch.randint(C, (9,), generator=gen)
    task = make_task(C, multilabel=kind == "multilabel")
    leaf = logits.clone().requires_grad_(True)
    expected = task.loss(leaf, y, LAMDA, delta)
    (grad,) = torch.autograd.grad(expected, leaf)
    loss, logit_grad = task.loss_and_logit_grad(logits, y, LAMDA, delta)
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(logit_grad, grad, rtol=1e-12, atol=1e-14)
