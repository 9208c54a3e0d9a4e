"""Extraction settings and ensembles: features independent of batch size and workers, a float16
cache that reads back what it stored, ensembles built from their members' cache entries."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_digits

from sealab.backbones.ensemble import Ensemble
from sealab.backbones.random_features import RandomReLUFeatures
from sealab.backbones.timm_backbone import TimmBackbone
from sealab.features.extract import extract_features, resolve_workers
from sealab.features.store import load_split_features

CPU = torch.device("cpu")


def tiny_timm():
    return TimmBackbone("resnet10t", pretrained=False, img_size=32, name="resnet10t_random_init")


def entries(cache):
    return sorted(p.name for p in cache.iterdir() if p.is_dir()) if cache.exists() else []


def test_features_do_not_depend_on_batch_size_workers_or_memory_format():
    images = tiny_digits().split("train")
    reference, y = extract_features(tiny_timm(), images, CPU, batch_size=40)
    for settings in ({"batch_size": 7}, {"batch_size": 16, "num_workers": 2}, {"channels_last": True}):
        x, y2 = extract_features(tiny_timm(), images, CPU, **settings)
        torch.testing.assert_close(x, reference, rtol=1e-4, atol=1e-5, msg=str(settings))
        assert torch.equal(y, y2)


def test_bf16_autocast_stays_close_to_fp32_and_is_a_separate_cache_entry(tmp_path):
    dataset, backbone = tiny_digits(), tiny_timm()
    fp32 = load_split_features(dataset, backbone, tmp_path, CPU)
    bf16 = load_split_features(dataset, backbone, tmp_path, CPU, precision="bf16")
    assert not bf16.cache_hit and len(entries(tmp_path)) == 6
    x32, x16 = fp32.splits["test"][0], bf16.splits["test"][0]
    assert not torch.equal(x32, x16)
    assert F.cosine_similarity(x32, x16).min() > 0.99


def test_a_float16_cache_halves_the_entry_and_miss_and_hit_agree(tmp_path):
    dataset, backbone = tiny_digits(), RandomReLUFeatures(feature_dim=256, seed=0)
    sizes = {}
    for dtype in ("float32", "float16"):
        miss = load_split_features(dataset, backbone, tmp_path / dtype, CPU, cache_dtype=dtype)
        hit = load_split_features(dataset, backbone, tmp_path / dtype, CPU, cache_dtype=dtype)
        assert (miss.cache_hit, hit.cache_hit) == (False, True)
        for split, (x, _) in miss.splits.items():
            assert x.dtype == torch.float32 and torch.equal(x, hit.splits[split][0])
        sizes[dtype] = sum(p.stat().st_size for p in (tmp_path / dtype).rglob("features.npy"))
    assert sizes["float16"] < 0.6 * sizes["float32"]


def test_an_ensemble_concatenates_its_members_and_reuses_their_cache_entries(tmp_path):
    dataset = tiny_digits()
    first = RandomReLUFeatures(feature_dim=64, seed=0, name="a")
    alone = load_split_features(dataset, first, tmp_path, CPU)
    assert len(entries(tmp_path)) == 3
    ensemble = Ensemble([{"_target_": "sealab.backbones.random_features.RandomReLUFeatures", "feature_dim": 64,
                          "seed": 0, "name": "a"},
                         {"_target_": "sealab.backbones.random_features.RandomReLUFeatures", "feature_dim": 32,
                          "seed": 1, "name": "b"}])
    assert ensemble.feature_dim == 96 and ensemble.name == "ensemble(a+b)"
    combined = load_split_features(dataset, ensemble, tmp_path, CPU)
    assert len(entries(tmp_path)) == 6 and not combined.cache_hit  # b was new, a was reused
    again = load_split_features(dataset, ensemble, tmp_path, CPU)
    assert again.cache_hit and len(entries(tmp_path)) == 6
    b = RandomReLUFeatures(feature_dim=32, seed=1, name="b")
    x_b = load_split_features(dataset, b, tmp_path, CPU).splits["val"][0]
    expected = torch.cat([F.normalize(alone.splits["val"][0], dim=1), F.normalize(x_b, dim=1)], dim=1)
    torch.testing.assert_close(combined.splits["val"][0], expected)


def test_an_ensemble_member_can_be_a_config_name():
    ensemble = Ensemble(["random_features", "resnet10t_random_init"], normalize=False)
    assert [m.name for m in ensemble.members] == ["random_features", "resnet10t_random_init"]
    assert ensemble.feature_dim == 2048 + 512
    with pytest.raises(ValueError, match="at least two members"):
        Ensemble(["random_features"])


def test_bad_extraction_settings_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="extract.cache_dtype"):
        load_split_features(tiny_digits(), tiny_timm(), tmp_path, CPU, cache_dtype="int8")
    with pytest.raises(ValueError, match="extract.precision"):
        extract_features(tiny_timm(), tiny_digits().split("val"), CPU, precision="fp8")
    with pytest.raises(ValueError, match="extract.num_workers"):
        resolve_workers(-1, CPU)
    assert resolve_workers("auto", CPU) == 0
