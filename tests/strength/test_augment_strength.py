"""Augmenters against independent computations where mutation testing (make mutants) found the
suite blind: multi-step PGD by autograd, noise drawn from another seed than the batch, mixup of
an example with itself, span steps of two examples and of one, the training loss and weight
gradient of every kind of plan by autograd, the ISDA ramp's start, constructor defaults against
the shipped configs, and the messages that name what is wrong."""

import inspect
import re

import pytest
import torch
import torch.nn.functional as F
from helpers import compose_train, make_batch

from sealab.augment.base import Augmented, SharedBatch
from sealab.augment.isda import ISDA
from sealab.augment.mixup import Mixup
from sealab.augment.noise import GaussianNoise
from sealab.augment.pgd import PGD
from sealab.augment.sea import NUMERICS, RandomSpan, SameClassSeA, SeA
from sealab.augment.step import GradientStep, SpanStep
from sealab.heads.linear import LinearHead
from sealab.task import MultiClass, MultiLabel


def loss_gradient(head, features, y):
    """d loss / d features by autograd, W held fixed."""
    features = features.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(head.loss(head(features), y), features)
    return grad


def pgd_by_autograd(x, y, head, steps, step_size, radius):
    x_adv = x
    for _ in range(steps):
        g = loss_gradient(head, x_adv, y)
        delta = x_adv + step_size * g / g.norm(dim=1, keepdim=True) - x
        length = delta.norm(dim=1, keepdim=True)
        delta = torch.where(length > radius, delta * radius / length, delta)  # onto the ball
        x_adv = F.normalize(x + delta, dim=1)  # onto the sphere
    return x_adv


def test_pgd_takes_every_step_from_the_gradient_where_it_stands():
    x, y, head = make_batch(b=10)
    expected = pgd_by_autograd(x, y, head, steps=4, step_size=0.1, radius=0.25)
    x_adv, _ = PGD(steps=4, step_size=0.1, radius=0.25).augment(x, y, head)
    torch.testing.assert_close(x_adv, expected, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(x_adv, pgd_by_autograd(x, y, head, steps=1, step_size=0.1, radius=0.25))


def test_noise_is_added_then_renormalised():
    x, y, head = make_batch(b=8)  # drawn from seed 0: the noise below comes from another seed
    torch.manual_seed(7)
    noisy, _ = GaussianNoise(sigma=0.1).augment(x, y, head)
    torch.manual_seed(7)
    noise = torch.randn(x.shape, dtype=x.dtype)
    expected = (x + 0.1 * noise) / (x + 0.1 * noise).norm(dim=1, keepdim=True)
    torch.testing.assert_close(noisy, expected, rtol=1e-12, atol=1e-12)
    assert (noisy - x).norm(dim=1).min() > 0.05


def test_mixup_of_an_example_with_itself_leaves_it_unchanged():
    x, y, head = make_batch(b=1)  # a batch of one: the example is its own partner
    torch.manual_seed(0)
    mixed, soft = Mixup(alpha=0.4).augment(x, y, head)
    torch.testing.assert_close(mixed, x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(soft, F.one_hot(y, 5).to(x.dtype))


def test_a_span_step_of_two_examples_moves_each_toward_the_other():
    x, y, head = make_batch(b=2)
    torch.manual_seed(0)
    moved, _ = RandomSpan(eta=0.5).augment(x, y, head)
    # each has one partner: q = [[0, 1], [1, 0]], so x~_i = normalize(x_i + eta * x_j / |x_j|)
    expected = F.normalize(x + 0.5 * x.flip(0), dim=1)
    torch.testing.assert_close(moved, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("augmenter", [lambda: SeA(eta=0.5), lambda: RandomSpan(eta=0.5)])
def test_a_batch_of_one_is_left_exactly_as_it_is(augmenter):
    x, y, head = make_batch(b=1)
    x = 3 * x  # not on the unit sphere: "left as it is" is not "normalised"
    out, _ = augmenter().augment(x, y, head)
    assert torch.equal(out, x)


class LogitSpan(SpanStep):
    """A span step of the kind the base class is for: scores from the logits and the head, same-class partners."""

    def scores(self, batch, logits, head):
        return logits @ head.weight @ batch.x.T

    def partners(self, y, head):
        return (y[:, None] == y[None, :]) & ~torch.eye(len(y), dtype=torch.bool)


def test_a_span_step_subclass_gets_its_scores_partners_and_unmoved_rows_honoured():
    x, _, head = make_batch(b=6)
    x = 2 * x
    y = torch.tensor([0, 1, 0, 2, 1, 0])  # example 3 has no partner
    out, _ = LogitSpan(0.4).augment(x, y, head)
    scores = head(x) @ head.weight @ x.T
    for i in range(len(x)):
        partners = [j for j in range(len(x)) if j != i and y[j] == y[i]]
        if not partners:
            assert torch.equal(out[i], x[i])
            continue
        q = torch.softmax(scores[i, partners], dim=0)
        direction = (q[:, None] * x[partners]).sum(dim=0)
        expected = F.normalize(x[i] + 0.4 * direction / direction.norm(), dim=0)
        torch.testing.assert_close(out[i], expected, rtol=1e-10, atol=1e-12)


PLANNED = {
    "features (gradient step)": lambda: GradientStep(eta=0.4),
    "features (noise)": lambda: GaussianNoise(sigma=0.2),
    "features (pgd)": lambda: PGD(steps=2, step_size=0.1, radius=0.2),
    "mixing (sea)": lambda: SeA(eta=0.5, alpha=0.1),
    "mixing (mixup)": lambda: Mixup(alpha=0.4),
}


@pytest.mark.parametrize("name", sorted(PLANNED))
def test_the_training_loss_and_weight_gradient_are_those_of_the_augmented_batch(name):
    x, y, head = make_batch(b=9)
    augmenter = PLANNED[name]()
    torch.manual_seed(3)
    with torch.no_grad():
        logits = head(x)
        plan = augmenter.plan(SharedBatch(x, y), logits, head)
        loss, a, f = augmenter.loss_and_grad(plan, logits, x, head)
    augmented = plan.apply(x)
    assert not torch.allclose(augmented, x)
    weight = head.weight.detach().clone().requires_grad_(True)
    expected_loss = head.task.loss(augmented @ weight.T, plan.targets, head.lamda, head.delta)
    (expected_grad,) = torch.autograd.grad(expected_loss, weight)
    torch.testing.assert_close(loss, expected_loss.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(a if f is None else a @ f, expected_grad, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(plan.logits(logits, head), augmented @ head.weight.T, rtol=1e-12, atol=1e-13)


def test_isda_starts_with_no_augmentation_before_its_ramp_is_set():
    x, y, head = make_batch(b=12, c=4)
    isda = ISDA(lambda0=0.8)
    with torch.no_grad():
        isda.augment(x, y, head)  # the covariance is estimated: only the strength can add to the loss
    torch.testing.assert_close(isda.loss(head(x), y, head), head.loss(head(x), y), rtol=0, atol=0)


# Constructor defaults (Python callers) and the shipped method configs (sealab-train) are the
# same published settings.
CONFIG_OF = {SeA: "sea", SameClassSeA: "sea_sameclass", RandomSpan: "sea_random", GradientStep: "sea_noproj",
             GaussianNoise: "noise", Mixup: "mixup", PGD: "pgd", ISDA: "isda"}


@pytest.mark.parametrize("cls", list(CONFIG_OF), ids=lambda c: c.__name__)
def test_constructor_defaults_are_the_shipped_configs(cls, tmp_path):
    node = compose_train(["experiment=none", f"method={CONFIG_OF[cls]}"], tmp_path).method.augmenter
    configured = {k: v for k, v in node.items() if not k.startswith("_")}
    assert configured.keys() == inspect.signature(cls).parameters.keys()
    built = cls()  # every argument left to its default
    assert {key: getattr(built, key) for key in configured} == configured


def test_every_bad_value_is_in_the_one_refusal():
    with pytest.raises(ValueError, match=r"^SeA: method\.augmenter\.eta=-1: .*; method\.augmenter\.alpha=0: "):
        SeA(eta=-1, alpha=0)
    with pytest.raises(ValueError, match=r"^RandomSpan: method\.augmenter\.eta=-1: .*; "
                                         r"method\.augmenter\.concentration=0: "):
        RandomSpan(eta=-1, concentration=0)


def test_a_span_step_subclass_without_rules_of_its_own_gets_the_steps_rule():
    with pytest.raises(ValueError, match=r"^LogitSpan: method\.augmenter\.eta=-1: must be "):
        LogitSpan(-1)


def test_a_plan_of_neither_mixing_nor_features_is_the_clean_batch():
    x, y, head = make_batch(b=5)
    plan, logits, grad = Augmented(y), head(x), torch.ones(5, 5, dtype=x.dtype)
    assert plan.logits(logits, head) is logits and plan.apply(x) is x
    a, f = plan.weight_grad_factors(grad, x)
    assert torch.equal(a, grad.T) and f is x


@pytest.mark.parametrize("cls, key, bad", [
    (SeA, "alpha", 0), (SameClassSeA, "eta", -1), (RandomSpan, "concentration", 0), (GradientStep, "eta", -1),
    (GaussianNoise, "sigma", -1), (Mixup, "alpha", 0), (PGD, "radius", 0), (ISDA, "lambda0", -1),
])
def test_a_refusal_opens_with_the_class_and_the_config_key(cls, key, bad):
    with pytest.raises(ValueError, match=rf"^{cls.__name__}: method\.augmenter\.{key}={bad}: must be "):
        cls(**{key: bad})


def test_isda_on_multilabel_targets_says_to_use_another_method():
    x, y, _ = make_batch(c=4)
    head = LinearHead(x.shape[1], MultiLabel(4)).to(x.dtype)
    message = ("ISDA needs multi-class targets (one class index per example); this dataset is multi-label "
               "or the targets are soft: use another method")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        ISDA().augment(x, F.one_hot(y, 4).to(x.dtype), head)


def test_faithful_numerics_refuse_a_restricted_span():
    dots, norms_sq = torch.zeros(3, 3), torch.ones(3)
    message = "the reference code has no restricted span (same-class SeA): use mode=clean"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        NUMERICS["faithful"].weights(dots, norms_sq, 0.1, torch.ones(3, 3, dtype=torch.bool))


def test_same_class_sea_in_faithful_mode_says_to_use_clean():
    message = ("same-class SeA has no mode='faithful' (the reference code has no such variant): "
               "use mode=clean")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        SameClassSeA(mode="faithful")


def test_the_gradient_direction_survives_a_batch_mean_that_underflows_float32():
    # A confident head on a large float32 batch: each row's gradient is ~1e-17, its 1/B share
    # of the batch-mean gradient ~4e-23, whose squares underflow. The direction must not
    # depend on B: the float64 computation gives it.
    b = 400_000
    y = torch.arange(b) % 2
    x = F.one_hot(y, 2).float()
    head = LinearHead(2, MultiClass(2), lamda=0.1, delta=0.0)
    with torch.no_grad():
        head.weight.copy_(4.0 * torch.eye(2))
    g = loss_gradient(head.double(), x[:2].double(), y[:2])  # rows are independent: two suffice
    expected = F.normalize(x[:2].double() + 0.5 * g / g.norm(dim=1, keepdim=True), dim=1).float()
    out, _ = GradientStep(eta=0.5).augment(x, y, head.float())
    torch.testing.assert_close(out[:2], expected)


class EvenSpan(SpanStep):
    """Equal weights over the same-class partners."""

    def scores(self, batch, logits, head):
        return torch.zeros(len(batch.x), len(batch.x), dtype=batch.x.dtype)

    def partners(self, y, head):
        return (y[:, None] == y[None, :]) & ~torch.eye(len(y), dtype=torch.bool)


@pytest.mark.parametrize("length", [1e-7, 1e-13])
def test_a_tiny_span_direction_is_normalised_as_f_normalize_does(length):
    # Row 0's partners nearly cancel: (Q X)_0 = length * e3, exactly (d < B: Q X itself is formed).
    # F.normalize divides by max(|v|, 1e-12): a unit direction at 1e-7, a tenth of one at 1e-13.
    x = torch.tensor([[1.0, 0, 0], [0, 1, 2 * length], [0, -1, 0], [1, 0, 0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1])
    head = LinearHead(3, MultiClass(2)).double()
    out, _ = EvenSpan(0.5).augment(x, y, head)
    span = torch.tensor([0, 0, length], dtype=torch.float64)
    expected = F.normalize(x[0] + 0.5 * span / max(length, 1e-12), dim=0)
    torch.testing.assert_close(out[0], expected, rtol=1e-9, atol=1e-12)
