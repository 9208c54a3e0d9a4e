"""Extraction settings and ensembles: features independent of batch size and workers, a float16
cache that reads back what it stored, ensembles built from their members' cache entries, rows
damaged after a hit found when read into RAM or before streaming, and extracted again once."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_digits

from sealab.backbones.ensemble import Ensemble
from sealab.backbones.random_features import RandomReLUFeatures
from sealab.backbones.timm_backbone import TimmBackbone
from sealab.features.extract import extract_features, resolve_workers
from sealab.features.ondisk import FileChangedError
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
    # the rules sealab.settings declares for these keys, the pre-run check's words
    with pytest.raises(ValueError, match="extract.cache_dtype='int8': must be one of 'float16', 'float32'"):
        load_split_features(tiny_digits(), tiny_timm(), tmp_path, CPU, cache_dtype="int8")
    with pytest.raises(ValueError, match="extract.shard_size=0: must be an integer >= 1"):
        load_split_features(tiny_digits(), tiny_timm(), tmp_path, CPU, shard_size=0)
    with pytest.raises(ValueError, match="extract.lock_timeout=-1: must be a number >= 0"):
        load_split_features(tiny_digits(), tiny_timm(), tmp_path, CPU, lock_timeout=-1)
    # 0 is a valid setting (give up at once when another job holds the entry): a free cache extracts
    assert not load_split_features(tiny_digits(), tiny_timm(), tmp_path, CPU, lock_timeout=0).cache_hit
    with pytest.raises(ValueError, match="extract.precision"):
        extract_features(tiny_timm(), tiny_digits().split("val"), CPU, precision="fp8")
    with pytest.raises(ValueError, match="extract.num_workers"):
        resolve_workers(-1, CPU)
    assert resolve_workers("auto", CPU) == 0


def test_a_float16_cache_gives_the_accuracy_of_float32_on_the_quickstart_data(tmp_path):
    """The quickstart as it runs (digits, 2048-d random ReLU features, SeA with its tuned step,
    100 epochs, seed 0), once on features read back from a float16 cache and once from float32:
    within 0.1 pt, i.e. the same number of the 773 test images right. (Measured over seeds 0-2,
    20 and 100 epochs, SeA and linear: 11 of 12 pairs equal, one differs by one image.)"""
    from helpers import compose_train
    from omegaconf import open_dict

    from sealab.experiment import run
    from sealab.features.cache import CacheEntry

    records = {}
    for dtype in ("float32", "float16"):
        cfg = compose_train(["experiment=quickstart", f"extract.cache_dtype={dtype}", "num_threads=1", "~logger",
                             "trainer.enable_progress_bar=false"], tmp_path / dtype)
        with open_dict(cfg):
            cfg.paths.cache_dir = str(tmp_path / "cache")
        records[dtype] = run(cfg)["metrics"]
    entries = {(e.meta["identity"]["cache_dtype"], e.meta["identity"]["split"]): e
               for e in (CacheEntry.open(p) for p in (tmp_path / "cache").iterdir() if p.is_dir())}
    x32, x16 = entries["float32", "train"].load()[0], entries["float16", "train"].load()[0]
    assert entries["float16", "train"].features.stat().st_size < 0.51 * entries["float32", "train"].features.stat().st_size
    assert not torch.equal(x16, x32) and torch.allclose(x16, x32, rtol=2**-11, atol=2**-25)  # float16 rounding, no more
    assert records["float32"]["test/top1"] > 0.95  # a trained probe, not chance
    for metric in ("val/top1", "test/top1", "test/mean_per_class"):
        assert abs(records["float16"][metric] - records["float32"][metric]) <= 0.001, metric


def test_rows_damaged_after_a_hit_are_found_on_read_and_extracted_again_once(tmp_path, caplog):
    dataset, backbone = tiny_digits(), RandomReLUFeatures(feature_dim=16, seed=0)
    first = load_split_features(dataset, backbone, tmp_path, CPU)
    expected = first.splits["val"][0]
    data = first.files["val"].features
    raw = bytearray(data.read_bytes())
    raw[-3] ^= 0x40  # one bit of the last row: size, header and labels still agree with meta.json
    data.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        hit = load_split_features(dataset, backbone, tmp_path, CPU)
        assert hit.cache_hit  # opening a hit does not read the rows...
        x, _ = hit.splits["val"]  # ...reading them does, and finds the flipped bit
    assert torch.equal(x, expected)
    damaged = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(damaged) == 1 and "shard 0" in damaged[0] and "extracting again" in damaged[0]
    assert load_split_features(dataset, backbone, tmp_path, CPU).files["val"].features.read_bytes() != bytes(raw)


def test_a_streamed_split_is_checked_row_by_row_first_and_a_damaged_entry_extracted_again_once(tmp_path, caplog):
    dataset, backbone = tiny_digits(), RandomReLUFeatures(feature_dim=16, seed=0)
    first = load_split_features(dataset, backbone, tmp_path, CPU)
    expected, path = first.splits["train"][0], first.files["train"].features
    past = path.stat().st_mtime_ns - 3600 * 10**9  # made well before, so a write now changes its mtime
    os.utime(path, ns=(past, past))
    clean = load_split_features(dataset, backbone, tmp_path, CPU).streamed("train", block_rows=16, chunk_rows=8)
    assert torch.equal(clean.read([(0, 40)]), expected)
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x40  # one bit of the last row: size, header and labels still agree with meta.json
    path.write_bytes(bytes(raw))
    with pytest.raises(FileChangedError, match="changed on disk"):  # a reader streaming it meanwhile stops
        clean.read([(0, 40)])
    hit = load_split_features(dataset, backbone, tmp_path, CPU)
    assert hit.cache_hit and hit.repaired == []  # opening a hit does not read the rows...
    with caplog.at_level(logging.WARNING):
        repaired = hit.streamed("train", block_rows=16, chunk_rows=8)  # ...streaming checks them all first
    damaged = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(damaged) == 1 and "shard 0" in damaged[0] and str(path) in damaged[0]
    assert (hit.cache_hit, hit.extracted, hit.repaired) == (False, ["train"], ["train"])
    assert torch.equal(repaired.read([(0, 40)]), expected) and torch.equal(repaired.targets, clean.targets)
    assert np.array_equal(np.load(path), expected.numpy().astype(np.float16))  # repaired on disk


def test_the_settings_kept_from_a_model_pass_are_the_extract_keys_the_store_owns():
    """CACHE_SETTINGS follows sealab.settings' owners: every extract.* key of the config is taken
    by load_split_features, and exactly those iter_outputs does not take are the store's own."""
    import inspect

    from helpers import compose_train

    from sealab.features.extract import iter_outputs
    from sealab.features.store import CACHE_SETTINGS

    keys = set(compose_train([]).extract)
    assert keys <= set(inspect.signature(load_split_features).parameters)
    assert set(CACHE_SETTINGS) == keys - set(inspect.signature(iter_outputs).parameters)
    assert set(CACHE_SETTINGS) == {"cache_dtype", "shard_size", "lock_timeout"}
