"""SeA against independent computations: autograd gradients and the published update."""

import pytest
import torch
import torch.nn.functional as F
from helpers import fit_context, make_batch

from sealab.augment.base import SharedBatch
from sealab.augment.sea import SeA, gradient_dots
from sealab.augment.step import span_mixing
from sealab.heads.linear import LinearHead
from sealab.methods.probe import LinearProbe


def autograd_input_grad(head, x, y):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(head.loss(head(x), y), x)
    return grad


def published_update(x, y, weight, eta, alpha, lamda, delta):
    """The reference code's augmentation, written the plain way (autograd for the gradient)."""
    xb = x.clone().requires_grad_(True)
    logits = xb @ weight.T
    logits = logits - delta * F.one_hot(y, weight.shape[0]).to(x.dtype)
    loss = lamda * F.cross_entropy(logits / lamda, y)
    (grad,) = torch.autograd.grad(loss, xb)
    adv = F.normalize(grad, dim=1)  # eps 1e-12
    prob = torch.softmax(adv @ x.T / alpha, dim=1)
    prob = prob - torch.diag(torch.diag(prob))
    prob = prob / prob.sum(dim=1, keepdim=True)
    return F.normalize(x + eta * F.normalize(prob @ x, dim=1), dim=1)


@pytest.mark.parametrize("soft", [False, True])
def test_closed_form_gradient_equals_autograd(soft):
    x, y, head = make_batch()
    if soft:  # mixup-style soft targets go through the same formula
        y = torch.softmax(torch.randn(len(x), head.task.num_classes, dtype=x.dtype), dim=1)
    expected = autograd_input_grad(head, x, y)
    torch.testing.assert_close(head.input_grad(x, y), expected, rtol=1e-10, atol=1e-12)
    # the "sum" reduction used by clean mode is the same gradient without the 1/B factor
    torch.testing.assert_close(head.input_grad(x, y, reduction="sum"), expected * len(x))


@pytest.mark.parametrize("mode", ["clean", "faithful"])
def test_direction_weights_use_the_autograd_gradient(mode):
    """q computed from autograd's gradient equals SeA's q from the closed form, in both modes.

    Clean mode normalises every row exactly; faithful mode with eps 1e-12 (rows of a
    well-classified example have a batch-mean gradient far below it here)."""
    x, y, head = make_batch()
    sea = SeA(eta=0.5, alpha=0.5, mode=mode)
    grad = autograd_input_grad(head, x, y)
    if mode == "clean":
        g_hat = grad / grad.norm(dim=1, keepdim=True)
    else:
        g_hat = F.normalize(grad, dim=1, eps=1e-12)
        assert (g_hat.norm(dim=1) < 0.5).any(), "the batch should contain a sub-eps gradient row"
    scores = g_hat @ x.T / sea.alpha
    scores.fill_diagonal_(float("-inf"))
    torch.testing.assert_close(sea.direction_weights(x, y, head), torch.softmax(scores, dim=1))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_gradient_dots_equal_products_of_the_autograd_gradient(reduction):
    x, y, head = make_batch(b=9, d=20)
    grad = autograd_input_grad(head, x, y) * (len(x) if reduction == "sum" else 1)
    dots, norms_sq = gradient_dots(head, head(x), y, reduction)
    torch.testing.assert_close(dots, grad @ x.T)
    torch.testing.assert_close(norms_sq, grad.norm(dim=1) ** 2)


def test_faithful_matches_published_update_float32():
    x, y, head = make_batch(b=64, d=128, c=10, dtype=torch.float32)
    head.delta = 0.0
    for eta, alpha in [(0.8, 0.01), (0.3, 0.1)]:
        ours = SeA(eta=eta, alpha=alpha, mode="faithful").augment(x, y, head)[0]
        ref = published_update(x, y, head.weight.detach(), eta, alpha, head.lamda, head.delta)
        assert (ours - ref).abs().max() < 1e-6


def test_faithful_matches_published_update_with_margin_and_tiny_gradients():
    # Tiny weights: the batch-mean gradient falls below the 1e-12 eps, the reference's rows
    # are then not unit length, which flattens the softmax. Faithful mode must do the same.
    x, y, head = make_batch(b=32, d=24, c=4)
    with torch.no_grad():
        head.weight.mul_(1e-12)
    sea = SeA(eta=0.8, alpha=0.01, mode="faithful")
    ref = published_update(x, y, head.weight.detach(), 0.8, 0.01, head.lamda, head.delta)
    torch.testing.assert_close(sea.augment(x, y, head)[0], ref, rtol=0, atol=1e-6)
    # ... while clean mode still normalises every row to unit length
    q_clean = SeA(alpha=0.01).direction_weights(x, y, head)
    q_faithful = sea.direction_weights(x, y, head)
    assert q_clean.max(dim=1).values.mean() > q_faithful.max(dim=1).values.mean() + 0.1


def test_direction_lies_in_span_of_the_other_examples():
    x, y, head = make_batch(b=10, d=32)
    sea = SeA(eta=1.0, alpha=0.1)
    q = sea.direction_weights(x, y, head)
    assert torch.all(torch.diagonal(q) == 0)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(len(x), dtype=x.dtype))
    direction = F.normalize(q @ x, dim=1)
    for i in range(len(x)):
        others = torch.cat([x[:i], x[i + 1:]])  # (B-1) x d, B-1 < d: x_i is not in their span
        coef = torch.linalg.lstsq(others.T, direction[i]).solution
        assert torch.linalg.norm(others.T @ coef - direction[i]) < 1e-10
        coef_self = torch.linalg.lstsq(others.T, x[i]).solution
        assert torch.linalg.norm(others.T @ coef_self - x[i]) > 1e-3


def test_augmented_features_are_unit_norm_and_move_by_eta():
    x, y, head = make_batch()
    x_aug, y_aug = SeA(eta=0.3, alpha=0.1).augment(x, y, head)
    torch.testing.assert_close(x_aug.norm(dim=1), torch.ones(len(x), dtype=x.dtype))
    assert torch.equal(y_aug, y)
    assert ((x_aug - x).norm(dim=1) > 0).all()


def test_batch_of_one_clean_is_unaugmented_faithful_is_nan():
    x, y, head = make_batch(b=1)
    x_aug, _ = SeA(mode="clean").augment(x, y, head)
    assert torch.equal(x_aug, x)
    assert torch.isnan(SeA(mode="faithful").augment(x, y, head)[0]).all()


def test_clean_never_nan_with_a_very_sharp_softmax():
    x, y, head = make_batch(b=2, dtype=torch.float32)
    x_aug, _ = SeA(alpha=1e-6, mode="clean").augment(x, y, head)
    assert torch.isfinite(x_aug).all()


def _probe(mode):
    from functools import partial

    return LinearProbe("sea", head=partial(LinearHead, lamda=0.1),
                       optimizer=partial(torch.optim.SGD, lr=1.6, momentum=0.9),
                       augmenter=SeA(eta=0.3, mode=mode), epochs=3, batch_size=16)


def test_last_batch_of_one_fails_loudly_in_faithful_and_trains_in_clean():
    gen = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(33, 8, generator=gen), dim=1)  # 33 = 2 * 16 + 1
    y = torch.randint(0, 3, (33,), generator=gen)
    with pytest.raises(FloatingPointError, match="mode=clean"):
        _probe("faithful").fit((x, y), None, fit_context())
    head = _probe("clean").fit((x, y), None, fit_context()).scorer
    assert torch.isfinite(head.weight).all()


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="faithful"):
        SeA(mode="paper")


@pytest.mark.parametrize("eta", [0.05, 0.8, 3.0])
def test_span_mixing_matrix_moves_features_like_the_direct_formula(eta):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 5, generator=gen, dtype=torch.float64) * 3  # not unit length
    q = torch.softmax(torch.randn(7, 7, generator=gen, dtype=torch.float64), dim=1)
    q[2] = 0  # a row with no direction: F.normalize leaves it 0, the step is x alone
    moved = torch.tensor([True, True, True, False, True, True, True])
    for d in (5, 9):  # below the batch size (from Q X) and above it (from the Gram matrix)
        xd = torch.cat([x, x[:, :d - 5]], dim=1)
        direct = F.normalize(xd + eta * F.normalize(q @ xd, dim=1), dim=1)
        direct[~moved] = xd[~moved]
        torch.testing.assert_close(span_mixing(q, SharedBatch(xd, None), eta, moved) @ xd, direct,
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("b", [5, 200, 257])
def test_the_shared_gram_matrix_is_x_xt(b):
    """Small batches: one product; from HALVED_GRAM_ROWS rows (even or odd): three blocks, mirrored."""
    x = torch.randn(b, 300, generator=torch.Generator().manual_seed(b), dtype=torch.float64)
    gram = SharedBatch(x, None).gram
    torch.testing.assert_close(gram, x @ x.T, rtol=1e-12, atol=1e-12)
    assert torch.equal(gram, gram.T)
