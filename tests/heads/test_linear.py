"""The linear head's loss and the shared feature normalisation, against direct formulas."""

import math

import pytest
import torch
import torch.nn.functional as F

from sealab.heads.linear import LinearHead
from sealab.heads.normalize import FeatureNormalizer
from sealab.task import MultiClass


def test_loss_is_the_temperature_margin_cross_entropy():
    torch.manual_seed(0)
    head = LinearHead(6, MultiClass(4), lamda=0.2, delta=0.3)
    x, y = torch.randn(5, 6), torch.tensor([0, 3, 1, 1, 2])
    logits = x @ head.weight.T
    expected = 0.0
    for i in range(5):  # lamda * -log softmax((z - delta e_y) / lamda)_y, averaged
        z = logits[i].clone()
        z[y[i]] -= 0.3
        z = z / 0.2
        expected += -0.2 * (z[y[i]] - torch.logsumexp(z, 0)) / 5
    torch.testing.assert_close(head.loss(head(x), y), expected)


def test_head_is_bias_free_and_initialised_like_nn_linear():
    torch.manual_seed(1)
    head = LinearHead(32, MultiClass(10))
    torch.manual_seed(1)
    reference = torch.nn.Linear(32, 10, bias=False)
    assert torch.equal(head.weight, reference.weight)
    assert [n for n, _ in head.named_parameters()] == ["weight"]


def test_lamda_must_be_positive():
    with pytest.raises(ValueError, match="lamda"):
        LinearHead(3, MultiClass(2), lamda=0)


def test_center_l2_stores_the_training_mean_and_applies_it_everywhere():
    torch.manual_seed(0)
    train, test = torch.randn(50, 8) + 5, torch.randn(7, 8) + 5
    norm = FeatureNormalizer("center_l2").fit(train)
    torch.testing.assert_close(norm.mean, train.mean(0))
    torch.testing.assert_close(norm(test), F.normalize(test - train.mean(0), dim=1))
    restored = FeatureNormalizer("center_l2", dim=8)
    restored.load_state_dict(norm.state_dict())  # saved with the classifier
    torch.testing.assert_close(restored(test), norm(test))


def test_l2_and_none():
    x = torch.tensor([[3.0, 4.0]])
    assert torch.equal(FeatureNormalizer("l2").fit(x)(x), torch.tensor([[0.6, 0.8]]))
    assert torch.equal(FeatureNormalizer("none").fit(x)(x), x)
    with pytest.raises(ValueError, match="center_l2"):
        FeatureNormalizer("zscore")


def test_centering_lowers_the_mean_cosine_of_one_sided_features():
    x = torch.rand(200, 64) + 1.0  # all-positive features: cosines near 1 after plain L2
    for mode, bound in (("l2", lambda c: c > 0.9), ("center_l2", lambda c: abs(c) < 0.05)):
        z = FeatureNormalizer(mode).fit(x)(x)
        cos = (z @ z.T).mean().item()
        assert bound(cos), (mode, cos)
    assert math.isclose(FeatureNormalizer("center_l2").fit(x)(x).norm(dim=1).mean().item(), 1, rel_tol=1e-5)
