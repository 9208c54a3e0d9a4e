"""The multi-label head: one-vs-rest BCE with ignored (-1) targets, its closed-form gradient
against autograd, and SeA driven by it.

Derivation checked here: with z = (l - delta * (2t - 1)) / lamda and the loss
lamda * mean_kept[log(1 + e^z) - t z], d loss / d l = lamda * (sigmoid(z) - t) / lamda / n_kept
= (sigmoid(z) - t) / n_kept on kept entries and 0 on ignored ones; d loss / d x = that @ W.
"""

import pytest
import torch
import torch.nn.functional as F

from sealab.augment.sea import SeA
from sealab.heads.linear import LinearHead
from sealab.task import MultiClass, MultiLabel


def make_batch(b=12, d=16, c=6, seed=0, ignored=0.3, lamda=0.1, delta=0.2):
    gen = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(b, d, generator=gen, dtype=torch.float64), dim=1)
    y = torch.randint(0, 2, (b, c), generator=gen).double()
    y[torch.rand(b, c, generator=gen) < ignored] = -1
    head = LinearHead(d, MultiLabel(c), lamda=lamda, delta=delta).double()
    with torch.no_grad():
        head.weight.copy_(torch.randn(c, d, generator=gen, dtype=torch.float64))
    return x, y, head


def loss_from_the_definition(logits, y, lamda, delta):
    keep = y >= 0
    t, logit = y[keep], logits[keep]
    z = (logit - delta * (2 * t - 1)) / lamda
    return lamda * (torch.logaddexp(torch.zeros_like(z), z) - t * z).mean()  # BCE: log(1 + e^z) - t z


def autograd(loss_of, tensor):
    tensor = tensor.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_of(tensor), tensor)
    return grad


@pytest.mark.parametrize("ignored", [0.0, 0.3])
def test_loss_is_the_mean_bce_over_kept_entries(ignored):
    x, y, head = make_batch(ignored=ignored)
    logits = head(x)
    expected = loss_from_the_definition(logits, y, head.lamda, head.delta)
    torch.testing.assert_close(head.loss(logits, y), expected, rtol=1e-12, atol=1e-14)
    if ignored == 0.0:  # without ignored entries: the plain mean over batch x classes, as before
        z = (logits - head.delta * (2 * y - 1)) / head.lamda
        torch.testing.assert_close(head.loss(logits, y), head.lamda * F.binary_cross_entropy_with_logits(z, y))


def test_ignored_entries_neither_count_nor_get_a_gradient():
    x, y, head = make_batch()
    logits = head(x)
    moved = torch.where(y < 0, logits + 100.0, logits)  # wildly different scores where ignored
    torch.testing.assert_close(head.loss(moved, y), head.loss(logits, y))
    assert (head.logit_grad(logits, y)[y < 0] == 0).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closed_form_gradients_equal_autograd(seed):
    x, y, head = make_batch(seed=seed)
    logits = head(x).detach()
    expected = autograd(lambda l: head.loss(l, y), logits)
    torch.testing.assert_close(head.logit_grad(logits, y), expected, rtol=1e-10, atol=1e-14)
    kept = (y >= 0).sum()
    torch.testing.assert_close(head.logit_grad(logits, y, reduction="sum"), expected * kept)
    expected_x = autograd(lambda v: head.loss(head(v), y), x)
    torch.testing.assert_close(head.input_grad(x, y), expected_x, rtol=1e-10, atol=1e-14)


def test_a_batch_with_every_entry_ignored_has_zero_loss_and_gradient():
    x, y, head = make_batch()
    y = torch.full_like(y, -1)
    assert head.loss(head(x), y).item() == 0.0
    assert (head.input_grad(x, y) == 0).all()


def test_multiclass_loss_and_gradient_are_unchanged():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(9, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (9,), generator=gen)
    head = LinearHead(5, MultiClass(4), lamda=0.5, delta=0.1).double()
    logits = head(x).detach()
    z = (logits - 0.1 * F.one_hot(y, 4)) / 0.5
    expected = 0.5 * (-torch.log_softmax(z, dim=1).gather(1, y[:, None])).mean()
    torch.testing.assert_close(head.loss(logits, y), expected)
    torch.testing.assert_close(head.logit_grad(logits, y), autograd(lambda l: head.loss(l, y), logits))


@pytest.mark.parametrize("mode", ["clean", "faithful"])
def test_sea_uses_the_masked_gradient(mode):
    x, y, head = make_batch()
    sea = SeA(eta=0.3, alpha=0.1, mode=mode)
    # SeA's weights from autograd's gradient of the masked loss, written out
    g = autograd(lambda v: head.loss(head(v), y), x)
    g_hat = F.normalize(g, dim=1, eps=1e-12 if mode == "faithful" else 1e-300)
    scores = g_hat @ x.T / sea.alpha
    if mode == "faithful":
        q = torch.softmax(scores, dim=1)
        q = q - torch.diag(torch.diag(q))
        q = q / q.sum(dim=1, keepdim=True)
    else:
        q = torch.softmax(scores.fill_diagonal_(float("-inf")), dim=1)
    torch.testing.assert_close(sea.direction_weights(x, y, head), q, rtol=1e-8, atol=1e-10)
    augmented, same_y = sea.augment(x, y, head)
    assert torch.isfinite(augmented).all() and same_y is y
    torch.testing.assert_close(augmented.norm(dim=1), torch.ones(len(x), dtype=x.dtype))
