"""L2 normalisation gives the same unit rows at any scale of the features: float32's sum of
squares overflows for entries of 1e20 (every row became 0) and underflows for 1e-30 (rows came
out near 1e-18): a probe on such features scored 10-12% where it scores 85%."""

import pytest
import torch
import torch.nn.functional as F

from sealab.heads.normalize import FeatureNormalizer
from sealab.settings import NORMS


def float64_reference(x: torch.Tensor, mode: str) -> torch.Tensor:
    x = x.double()
    if mode == "center_l2":
        x = x - x.mean(dim=0)
    return x / x.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("mode", ["l2", "center_l2"])
@pytest.mark.parametrize("scale", [1e20, 1e-30, 1e35, 1e-35])
def test_extreme_scales_normalise_as_in_float64(mode, scale):
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(0)) * scale
    assert torch.isfinite(x).all() and (x != 0).all()  # representable in float32
    z = FeatureNormalizer(mode).fit(x)(x)
    torch.testing.assert_close(z.double(), float64_reference(x, mode), rtol=0, atol=1e-6)
    unscaled = x / scale
    torch.testing.assert_close(z, FeatureNormalizer(mode).fit(unscaled)(unscaled), rtol=0, atol=1e-6)


def test_streamed_blocks_are_normalised_in_place_at_any_scale():
    x = torch.randn(10, 8) * 1e20
    block = x.clone()
    FeatureNormalizer("l2").fit(x).normalize_(block)
    torch.testing.assert_close(block.double(), float64_reference(x, "l2"), rtol=0, atol=1e-6)


def test_ordinary_features_keep_f_normalize_s_exact_numbers():
    x = torch.randn(200, 64)
    assert torch.equal(FeatureNormalizer("l2").fit(x)(x), F.normalize(x, dim=1))


def test_mixed_rows_and_a_zero_row():
    x = torch.randn(4, 8)
    x[1] *= 1e25
    x[2] *= 1e-33
    x[3] = 0
    z = FeatureNormalizer("l2").fit(x)(x)
    assert torch.equal(z[0], F.normalize(x[:1], dim=1)[0])  # an ordinary row: untouched numbers
    torch.testing.assert_close(z[1:3].double(), float64_reference(x[1:3], "l2"), rtol=0, atol=1e-6)
    assert torch.equal(z[3], torch.zeros(8))  # no 0/0


def test_norm_choices_are_the_settings_declared_ones():
    for mode in NORMS:
        FeatureNormalizer(mode)
    with pytest.raises(ValueError, match=r"^norm='zscore': must be one of 'l2', 'center_l2', 'none'$"):
        FeatureNormalizer("zscore")
