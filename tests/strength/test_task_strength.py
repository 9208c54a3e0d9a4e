"""Tasks against independent computations where mutation testing (make mutants) found the
suite blind: the loss and gradient of one fused call, default arguments, soft and integer
targets, a batch with a single kept entry, and the messages that name what is wrong."""

import pytest
import torch
import torch.nn.functional as F

from sealab.task import MultiClass, MultiLabel, class_indices, make_task

LAMDA, DELTA = 0.1, 0.2


def logits_and_labels(b=7, c=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, generator=gen, dtype=torch.float64), torch.randint(0, c, (b,), generator=gen)


def margin_cross_entropy(logits, t):
    """lamda * mean_i CE((l_i - delta t_i) / lamda, t_i), written out for (soft) target rows t."""
    z = (logits - DELTA * t) / LAMDA
    return LAMDA * -(t * (z - torch.logsumexp(z, dim=1, keepdim=True))).sum(dim=1).mean()


def margin_bce(logits, y):
    """lamda * mean over kept entries of BCE((l - delta (2t - 1)) / lamda, t); -1 entries are left out."""
    keep = y >= 0
    t, l = y[keep].double(), logits[keep]
    z = (l - DELTA * (2 * t - 1)) / LAMDA
    return LAMDA * (torch.logaddexp(torch.zeros_like(z), z) - t * z).mean()


def autograd(loss_of, logits):
    logits = logits.clone().requires_grad_(True)
    loss = loss_of(logits)
    (grad,) = torch.autograd.grad(loss, logits)
    return loss.detach(), grad


@pytest.mark.parametrize("soft", [False, True])
def test_multiclass_fused_loss_and_gradient_equal_the_definition_and_autograd(soft):
    logits, y = logits_and_labels()
    task = MultiClass(4)
    if soft:  # mixup's targets: rows of a convex combination of two one-hot rows
        y = 0.3 * F.one_hot(y, 4).double() + 0.7 * F.one_hot(y.roll(1), 4).double()
    t = y if soft else F.one_hot(y, 4).double()
    expected_loss, expected_grad = autograd(lambda l: margin_cross_entropy(l, t), logits)
    loss, grad = task.loss_and_logit_grad(logits, y, LAMDA, DELTA)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-14)


def test_multilabel_fused_loss_and_gradient_equal_the_definition_and_autograd():
    logits, _ = logits_and_labels(c=5)
    y = torch.tensor([[1, 0, -1, 0, 1], [0, 0, 1, 1, -1], [1, 1, 1, 0, 0], [0, -1, 0, 0, 1],
                      [1, 0, 0, 1, 0], [0, 1, 0, 0, 0], [-1, -1, 1, 0, 0]], dtype=torch.float64)
    expected_loss, expected_grad = autograd(lambda l: margin_bce(l, y), logits)
    loss, grad = MultiLabel(5).loss_and_logit_grad(logits, y, LAMDA, DELTA)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("task, y", [
    (MultiClass(4), torch.tensor([0, 3, 1, 1, 2, 0, 3])),
    (MultiLabel(4), torch.tensor([[1, 0, -1, 0], [0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 1],
                                  [1, 0, 0, -1], [0, 0, 1, 0], [1, 0, 1, 1]], dtype=torch.float64)),
])
def test_the_default_reduction_is_the_losss_own_mean(task, y):
    logits, _ = logits_and_labels()
    _, expected = autograd(lambda l: task.loss(l, y, LAMDA, DELTA), logits)
    torch.testing.assert_close(task.logit_grad(logits, y, LAMDA, DELTA), expected, rtol=1e-12, atol=1e-14)


def test_multilabel_soft_targets_use_the_margin_2t_minus_1():
    """Mixup of multi-label rows gives targets between 0 and 1 (0.5 included)."""
    logits, _ = logits_and_labels(b=3, c=3)
    y = torch.tensor([[0.5, 0.25, 1.0], [0.0, 0.75, 0.5], [1.0, 0.5, 0.0]], dtype=torch.float64)
    expected_loss, expected_grad = autograd(lambda l: margin_bce(l, y), logits)
    task = MultiLabel(3)
    torch.testing.assert_close(task.loss(logits, y, LAMDA, DELTA), expected_loss, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(task.logit_grad(logits, y, LAMDA, DELTA), expected_grad, rtol=1e-12, atol=1e-14)


def test_multilabel_loss_with_a_single_kept_entry_is_that_entrys_loss():
    logits = torch.tensor([[0.3, -1.2], [2.0, 0.1]], dtype=torch.float64)
    y = torch.tensor([[-1, 1], [-1, -1]], dtype=torch.float64)  # one entry kept: (0, 1), positive
    z = (-1.2 - DELTA) / LAMDA
    by_hand = LAMDA * torch.log1p(torch.exp(torch.tensor(-z, dtype=torch.float64)))  # BCE(z, 1) = log(1 + e^-z)
    task = MultiLabel(2)
    torch.testing.assert_close(task.loss(logits, y, LAMDA, DELTA), by_hand, rtol=1e-12, atol=0)
    _, grad = autograd(lambda l: task.loss(l, y, LAMDA, DELTA), logits)
    torch.testing.assert_close(task.logit_grad(logits, y, LAMDA, DELTA), grad, rtol=1e-12, atol=1e-14)


def test_integer_multilabel_targets_give_the_loss_of_float_ones():
    logits, _ = logits_and_labels(b=3, c=3)
    y = torch.tensor([[1, 0, -1], [0, 1, 1], [-1, 0, 0]])
    task = MultiLabel(3)
    torch.testing.assert_close(task.loss(logits, y, LAMDA, DELTA), margin_bce(logits, y), rtol=1e-12, atol=1e-14)
    _, grad = autograd(lambda l: margin_bce(l, y), logits)
    torch.testing.assert_close(task.logit_grad(logits, y, LAMDA, DELTA), grad, rtol=1e-12, atol=1e-14)


def test_soft_multiclass_targets_come_in_the_requested_dtype():
    soft = torch.full((2, 3), 1 / 3, dtype=torch.float64)
    assert MultiClass(3).targets(soft, torch.float32).dtype == torch.float32


def test_make_task_is_multiclass_unless_asked():
    assert type(make_task(3)) is MultiClass and type(make_task(3, multilabel=True)) is MultiLabel


def test_an_unknown_metric_names_its_setting_and_the_task():
    with pytest.raises(ValueError, match=r"^primary_metric='map11' does not apply to a MultiClass task: "
                                         r"choose one of \('top1', 'mean_per_class'\)$"):
        MultiClass(3, primary_metric="map11")


def test_float_multiclass_targets_are_refused_naming_where_and_what():
    with pytest.raises(ValueError, match=r"^train labels: multi-class targets must be a 1-d integer tensor "
                                         r"of class indices, got torch.float32 of shape \(3,\)$"):
        MultiClass(3).check_targets(torch.tensor([0.0, 1.0, 2.0]), "train labels")


def test_multilabel_values_other_than_1_0_and_minus_1_are_refused():
    with pytest.raises(ValueError, match=r"^val labels: multi-label targets must be 1 \(positive\), "
                                         r"0 \(negative\) or -1 \(ignored\)$"):
        MultiLabel(2).check_targets(torch.tensor([[1.0, 2.0]]), "val labels")


def test_fractional_class_labels_name_the_first_and_the_multilabel_setting():
    with pytest.raises(ValueError, match=r"^labels \(y.npy\): class labels must be whole numbers 0..C-1, but 2 "
                                         r"are not \(the first, at position 1, is 0.5\)\. .*for targets with "
                                         r"several classes per example \(n x C, 0/1\) set dataset.multilabel=true\.$"):
        class_indices(torch.tensor([1.0, 0.5, 2.0, 1.5]), "labels (y.npy)")
