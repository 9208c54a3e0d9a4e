"""The feature augmenters of the comparison: formulas against independent computations,
span properties, seeded determinism, learning on synthetic blobs, and their configs."""

from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import (
    compose_train,
    fit_context,
    make_batch,
    metrics_files,
    read_metrics,
    run_train,
)
from hydra.utils import instantiate

from sealab.augment.base import SharedBatch
from sealab.augment.isda import ISDA, ClassCovariance
from sealab.augment.mixup import Mixup
from sealab.augment.noise import GaussianNoise
from sealab.augment.pgd import PGD
from sealab.augment.sea import RandomSpan, SameClassSeA
from sealab.augment.step import GradientStep
from sealab.heads.linear import LinearHead
from sealab.methods.probe import LinearProbe
from sealab.task import MultiLabel

make_batch = partial(make_batch, c=4)  # four classes unless a test says otherwise

C, D = 5, 32
# config name -> augmenter with hyper-parameters that suit unit-norm 32-d blobs
AUGMENTERS = {
    "sea_noproj": lambda: GradientStep(eta=0.3),
    "sea_random": lambda: RandomSpan(eta=0.3),
    "sea_sameclass": lambda: SameClassSeA(eta=0.3, alpha=0.1),
    "noise": lambda: GaussianNoise(sigma=0.05),
    "mixup": lambda: Mixup(alpha=1.0),
    "pgd": lambda: PGD(steps=3, step_size=0.1, radius=0.3),
    "isda": lambda: ISDA(lambda0=0.5),
}
CLASSES = {"sea_noproj": GradientStep, "sea_random": RandomSpan, "sea_sameclass": SameClassSeA,
           "noise": GaussianNoise, "mixup": Mixup, "pgd": PGD, "isda": ISDA}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These batches are tiny: a second intra-op thread only adds contention (up to 100x
    slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def blobs(n, seed):
    """Unit-norm Gaussian class blobs (C classes, D dims; class means fixed across calls)."""
    means = torch.randn(C, D, generator=torch.Generator().manual_seed(123))
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % C
    return F.normalize(means[y] + 1.5 * torch.randn(n, D, generator=gen), dim=1), y


def fit(augmenter, seed=0, epochs=15):
    probe = LinearProbe(
        "probe", head=partial(LinearHead, lamda=0.1),
        optimizer=partial(torch.optim.SGD, lr=0.4, momentum=0.9, weight_decay=1e-6),
        augmenter=augmenter, epochs=epochs, batch_size=64)
    L.seed_everything(seed, verbose=False)
    return probe.fit(blobs(300, seed=1), None, fit_context(C, seed=seed)).scorer


@pytest.mark.parametrize("name", sorted(AUGMENTERS))
def test_trains_beats_chance_and_is_deterministic(name):
    head = fit(AUGMENTERS[name]())
    x_test, y_test = blobs(500, seed=2)
    with torch.no_grad():
        accuracy = (head(x_test).argmax(1) == y_test).float().mean().item()
    assert accuracy > 0.6, f"{name}: test accuracy {accuracy:.3f} (chance {1 / C})"
    assert torch.equal(fit(AUGMENTERS[name]()).weight, head.weight), "same seed, different weights"


def test_pgd_with_one_step_is_the_gradient_step():
    x, y, head = make_batch()
    pgd_x, pgd_y = PGD(steps=1, step_size=0.4, radius=0.5).augment(x, y, head)
    fgsm_x, _ = GradientStep(eta=0.4).augment(x, y, head)
    torch.testing.assert_close(pgd_x, fgsm_x, rtol=0, atol=1e-12)
    assert torch.equal(pgd_y, y)


def test_gradient_step_moves_along_the_autograd_gradient():
    x, y, head = make_batch()
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(head.loss(head(xg), y), xg)
    expected = F.normalize(x + 0.4 * grad / grad.norm(dim=1, keepdim=True), dim=1)
    torch.testing.assert_close(GradientStep(eta=0.4).augment(x, y, head)[0], expected)


def test_pgd_stays_near_the_ball_and_increases_the_loss():
    x, y, head = make_batch(b=32)
    radius = 0.2
    x_adv, _ = PGD(steps=10, step_size=0.1, radius=radius).augment(x, y, head)
    torch.testing.assert_close(x_adv.norm(dim=1), torch.ones(len(x), dtype=x.dtype))
    # normalize(p) is the point of the sphere nearest p, so |normalize(p) - x| <= 2 |p - x|
    assert ((x_adv - x).norm(dim=1) <= 2 * radius + 1e-9).all()

    def per_example_loss(features):  # the head's margin loss, row by row
        margin = head.delta * F.one_hot(y, head.task.num_classes)
        return F.cross_entropy((head(features) - margin) / head.lamda, y, reduction="none")

    assert (per_example_loss(x_adv) > per_example_loss(x)).all()


def _assert_mixes_only_partners(mixing, allowed, moved):
    """Row i of the mixing matrix combines x_i with its allowed partners only (all of them, with
    positive weight); a row that does not move is e_i."""
    eye = torch.eye(len(mixing), dtype=torch.bool)
    assert (mixing[~allowed & ~eye] == 0).all()
    assert (mixing[moved][allowed[moved]] > 0).all()
    assert torch.equal(mixing[~moved], eye[~moved].to(mixing.dtype))


def test_random_span_weights_and_direction():
    x, y, head = make_batch(b=10, d=32)
    others = ~torch.eye(len(x), dtype=torch.bool)
    torch.manual_seed(0)
    q = RandomSpan(eta=0.5).direction_weights(x, y, head)
    assert (q.diagonal() == 0).all() and (q[others] > 0).all()
    torch.testing.assert_close(q.sum(dim=1), torch.ones(len(x), dtype=x.dtype))
    torch.manual_seed(1)
    mixing = RandomSpan(eta=0.5).plan(SharedBatch(x, y), head(x), head).mixing
    _assert_mixes_only_partners(mixing, others, moved=torch.ones(len(x), dtype=torch.bool))
    # the same seed draws the same weights, the next draw different ones
    torch.manual_seed(0)
    augmenter = RandomSpan(eta=0.5)
    assert torch.equal(augmenter.direction_weights(x, y, head), q)
    assert not torch.equal(augmenter.direction_weights(x, y, head), q)


def test_same_class_weights_use_only_same_class_partners():
    x, y, head = make_batch(b=12, d=32)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 1, 0])  # class 3 has a single example
    q = SameClassSeA(eta=0.5, alpha=0.5).direction_weights(x, y, head)
    allowed = torch.tensor([[y[i] == y[j] and i != j for j in range(12)] for i in range(12)])
    assert torch.all(q[~allowed] == 0) and (q[allowed] > 0).all()
    lonely = torch.tensor([not allowed[i].any() for i in range(12)])
    assert lonely.tolist() == (y == 3).tolist()
    torch.testing.assert_close(q[~lonely].sum(dim=1), torch.ones(11, dtype=x.dtype))
    mixing = SameClassSeA(eta=0.5, alpha=0.5).plan(SharedBatch(x, y), head(x), head).mixing
    _assert_mixes_only_partners(mixing, allowed, moved=~lonely)
    # on its partners, a row is SeA's softmax over those partners alone
    sea_scores = F.normalize(head.input_grad(x, y), dim=1) @ x.T / 0.5  # ghat_i . x_j / alpha
    for i in torch.nonzero(~lonely).flatten():
        torch.testing.assert_close(q[i][allowed[i]], torch.softmax(sea_scores[i][allowed[i]], dim=0))
    x_aug, _ = SameClassSeA(eta=0.5, alpha=0.5).augment(x, y, head)
    assert torch.isfinite(x_aug).all()
    assert torch.equal(x_aug[lonely], x[lonely]) and (x_aug[~lonely] != x[~lonely]).any(dim=1).all()


def test_same_class_multilabel_partners_share_a_label():
    y = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]])
    head = LinearHead(4, MultiLabel(3))
    partners = SameClassSeA().partners(y, head)
    expected = torch.tensor([[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(partners, expected)
    # an ignored (-1, VOC "difficult") entry is not a shared label
    y_ignored = torch.tensor([[-1, 0, 0], [-1, 0, 1], [0, 0, 1]])
    expected = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 0]], dtype=torch.bool)
    assert torch.equal(SameClassSeA().partners(y_ignored, head), expected)


def test_same_class_has_no_faithful_mode():
    with pytest.raises(ValueError, match="mode=clean"):
        SameClassSeA(mode="faithful")


def test_noise_is_gaussian_then_renormalised():
    x, y, head = make_batch(b=8)
    # Another seed than the batch's (make_batch draws x from seed 0): noise drawn from the same
    # seed would be parallel to x, and normalising would hide whether it was added at all.
    torch.manual_seed(1)
    noisy, y_noise = GaussianNoise(sigma=0.1).augment(x, y, head)
    torch.manual_seed(1)
    torch.testing.assert_close(noisy, F.normalize(x + 0.1 * torch.randn(x.shape, dtype=x.dtype), dim=1))
    assert not torch.allclose(noisy, x)  # the noise moved the features
    assert torch.equal(y_noise, y)


def test_mixup_mixes_features_and_targets_with_the_same_weight():
    x, y, head = make_batch(b=8, d=16, c=8)
    y = torch.arange(8)  # distinct classes: a target row tells which two examples were mixed
    torch.manual_seed(0)
    mixed, soft = Mixup(alpha=0.4).augment(x, y, head)
    partners = []
    for i in range(len(x)):
        # the partner j is the other class with weight; the weight of class i is lambda
        lam = soft[i, i]
        others = [j for j in range(len(x)) if j != i and soft[i, j] > 0]
        j = others[0] if others else i
        assert len(others) <= 1 and 0 <= lam <= 1
        torch.testing.assert_close(mixed[i], lam * x[i] + (1 - lam) * x[j])
        torch.testing.assert_close(soft[i].sum(), torch.tensor(1.0, dtype=x.dtype))
        partners.append(j)
    assert sorted(partners) == list(range(len(x))), "partners must be a permutation of the batch"
    assert (soft.diagonal() < 1).any(), "some rows must actually be mixed"


def test_mixup_keeps_ignored_multilabel_entries_ignored():
    x, _, _ = make_batch(b=6, d=8)
    head = LinearHead(8, MultiLabel(3)).to(x.dtype)
    y = torch.tensor([[1, 0, -1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [-1, 0, 0], [1, 0, 0]], dtype=x.dtype)
    torch.manual_seed(0)
    _, soft = Mixup(alpha=0.4).augment(x, y, head)
    torch.manual_seed(0)  # the same draws: weights, then the partner permutation
    lam = torch.distributions.Beta(torch.tensor(0.4, dtype=x.dtype), torch.tensor(0.4, dtype=x.dtype)).sample((6, 1))
    partner = torch.randperm(6)
    expected = lam * y + (1 - lam) * y[partner]
    ignored = (y < 0) | (y[partner] < 0)
    expected[ignored] = -1
    assert ignored.any() and torch.equal(soft, expected)


def test_isda_estimator_equals_per_class_mean_and_biased_covariance():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(90, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (90,), generator=gen)
    y[y == 3] = 2  # class 3 never occurs: its statistics stay zero
    estimator = ClassCovariance()
    for start in range(0, 90, 16):  # batches of uneven class make-up, last one short
        estimator.update(x[start:start + 16], y[start:start + 16], num_classes=4)
    for c in range(3):
        xc = x[y == c].numpy()
        np.testing.assert_allclose(estimator.mean[c].numpy(), xc.mean(axis=0), atol=1e-12)
        np.testing.assert_allclose(estimator.cov[c].numpy(), np.cov(xc, rowvar=False, bias=True), atol=1e-12)
        assert estimator.count[c] == len(xc)
    assert estimator.count[3] == 0 and torch.all(estimator.cov[3] == 0)


def isda_loss_numpy(x, y, w, cov, strength, lamda, delta):
    """ISDA's bound written out per example and class, in numpy."""
    losses = []
    for i in range(len(x)):
        logits = np.empty(len(w))
        for j in range(len(w)):
            dw = w[j] - w[y[i]]
            logits[j] = w[j] @ x[i] + strength / 2 * dw @ cov[y[i]] @ dw - delta * (j == y[i])
        z = logits / lamda
        losses.append(-(z[y[i]] - z.max() - np.log(np.exp(z - z.max()).sum())))
    return lamda * np.mean(losses)


def test_isda_loss_equals_its_formula_and_ramps():
    x, y, head = make_batch(b=20, d=6, c=4)
    isda = ISDA(lambda0=0.8)
    isda.on_train_epoch_start(epoch=3, max_epochs=4)
    assert isda.strength == pytest.approx(0.6)
    with torch.no_grad():
        x_out, y_out = isda.augment(x, y, head)
    assert x_out is x and y_out is y
    cov = np.stack([np.cov(x[y == c].numpy(), rowvar=False, bias=True) if (y == c).any() else np.zeros((6, 6))
                    for c in range(4)])
    expected = isda_loss_numpy(x.numpy(), y.numpy(), head.weight.detach().numpy(), cov, 0.6,
                               head.lamda, head.delta)
    loss = isda.loss(head(x), y, head)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    loss.backward()  # the bound is differentiable in W: the quadratic term trains it too
    assert head.weight.grad is not None
    # at epoch 0 the strength is 0: the plain loss, and the estimator of an earlier fit is gone
    isda.on_train_epoch_start(epoch=0, max_epochs=4)
    assert isda.estimator.cov is None
    isda.augment(x, y, head)
    assert isda.loss(head(x), y, head).item() == pytest.approx(head.loss(head(x), y).item(), rel=1e-12)


def test_isda_rejects_multilabel():
    x, y, _ = make_batch()
    head = LinearHead(x.shape[1], MultiLabel(4)).to(x.dtype)
    with pytest.raises(ValueError, match="multi-label"):
        ISDA().augment(x, F.one_hot(y, 4).to(x.dtype), head)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_config_composes_and_instantiates(name):
    cfg = compose_train([f"method={name}"])
    method = instantiate(cfg.method)
    assert isinstance(method, LinearProbe) and method.name == name
    (spec,) = method.specs
    assert type(spec.augmenter) is CLASSES[name]


def test_every_method_trains_end_to_end(tmp_path, monkeypatch):
    """One multirun subprocess over all methods here, on the default digits data."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # see one_thread
    # Centred features keep every augmenter's default step stable (README's digits study).
    run_train(tmp_path, f"method={','.join(sorted(CLASSES))}", "method.epochs=10", "norm=center_l2",
              multirun=True)
    records = [read_metrics(p) for p in metrics_files(tmp_path)]
    assert sorted(r["method"] for r in records) == sorted(CLASSES)
    for record in records:  # ten digit classes: chance is 0.1
        assert record["metrics"]["test/top1"] > 0.5, (record["method"], record["metrics"])
