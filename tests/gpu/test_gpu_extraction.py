"""Extraction on the GPU gives the CPU's features: fp32, bf16 and fp16 autocast, channels_last,
loader workers (with pinned memory, which a CUDA device turns on), images decoded from disk."""

from __future__ import annotations

import pytest
import torch

from sealab.backbones.timm_backbone import TimmBackbone
from sealab.data.imagefolder import ImageFolderDataset
from sealab.features.extract import extract_features

CPU = torch.device("cpu")
# Largest relative error of a feature row, ||device - cpu|| / ||cpu||. fp32 allows for TF32
# convolutions (cuDNN's default on Ampere and later: inputs rounded to a 10-bit mantissa, as
# fp16's); autocast for its own rounding. On the CPU, autocast's rows are 0.07% (fp16) and
# 0.5% (bf16) off fp32's on these images.
TOLERANCE = {"fp32": 0.005, "fp16": 0.01, "bf16": 0.02}
SETTINGS = {"plain": {}, "channels_last": {"channels_last": True}, "workers": {"num_workers": 2}}


def tiny_timm() -> TimmBackbone:
    return TimmBackbone("resnet10t", pretrained=False, img_size=32, name="resnet10t_random_init")


@pytest.fixture(scope="module")
def images(image_folder):
    return ImageFolderDataset(root=image_folder).split("train")


@pytest.fixture(scope="module")
def on_cpu(images):
    return extract_features(tiny_timm(), images, CPU, batch_size=8)


def row_errors(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return (x - reference).norm(dim=1) / reference.norm(dim=1)


@pytest.mark.gpu
@pytest.mark.parametrize("setting", sorted(SETTINGS))
@pytest.mark.parametrize("precision", sorted(TOLERANCE))
def test_device_features_are_the_cpus(device, images, on_cpu, precision, setting):
    x, y = extract_features(tiny_timm(), images, device, batch_size=8, precision=precision, **SETTINGS[setting])
    reference, y_cpu = on_cpu
    assert x.device == CPU and x.dtype == torch.float32 and x.shape == reference.shape
    assert torch.equal(y, y_cpu)  # same images, same order
    assert torch.isfinite(x).all()
    worst = row_errors(x, reference).max().item()
    assert worst <= TOLERANCE[precision], f"{precision} {setting}: a row is {worst:.2%} off the CPU's"


def test_the_tolerances_tell_rows_apart(on_cpu):
    """Every image's row is further from every other image's than 3x any tolerance above, so
    a row of the wrong image (order, batching) cannot pass."""
    reference, _ = on_cpu
    distances = torch.cdist(reference, reference).fill_diagonal_(float("inf"))
    assert (distances.min(dim=1).values / reference.norm(dim=1)).min() > 3 * max(TOLERANCE.values())

