"""The feature cache: keyed, verified, atomic, one writer per key."""

import json
import threading

import pytest
import torch

from sealab.features.cache import FeatureCache, cache_key


def features(n=20, d=4):
    return torch.randn(n, d), torch.arange(n) % 3


def test_store_then_load_round_trips(tmp_path):
    cache = FeatureCache(tmp_path)
    x, y = features()
    cache.store("k", (x, y), {"identity": {}})
    loaded = cache.load("k")
    assert loaded is not None and torch.equal(loaded[0], x) and torch.equal(loaded[1], y)
    assert json.loads((tmp_path / "k" / "meta.json").read_text())["shape"] == [20, 4]


def test_key_changes_with_every_identity_field():
    base = {"backbone": {"name": "a", "weights": "w1"}, "dataset": {"root": "/d"}, "split": "train"}
    keys = {cache_key(base)}
    for changed in ({**base, "split": "test"}, {**base, "backbone": {"name": "a", "weights": "w2"}},
                    {**base, "dataset": {"root": "/e"}}):
        keys.add(cache_key(changed))
    assert len(keys) == 4
    assert cache_key(dict(reversed(list(base.items())))) == cache_key(base)  # order-free


def test_second_request_is_a_hit_and_does_not_compute(tmp_path):
    cache = FeatureCache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return features()

    (x1, _), hit1 = cache.get_or_compute({"id": 1}, compute)
    (x2, _), hit2 = cache.get_or_compute({"id": 1}, compute)
    assert (hit1, hit2, len(calls)) == (False, True, 1)
    assert torch.equal(x1, x2)


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "delete_data", "garbage_meta"])
def test_damaged_entry_is_detected_and_recomputed(tmp_path, damage):
    cache = FeatureCache(tmp_path)
    identity = {"id": damage}
    (x, _), _ = cache.get_or_compute(identity, features)
    entry = tmp_path / cache_key(identity)
    data = entry / "features.pt"
    if damage == "truncate":
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    elif damage == "flip_byte":
        raw = bytearray(data.read_bytes())
        raw[-100] ^= 0xFF
        data.write_bytes(bytes(raw))
    elif damage == "delete_data":
        data.unlink()
    else:
        (entry / "meta.json").write_text("{not json")
    assert cache.load(cache_key(identity)) is None
    fresh = features()
    (x2, _), hit = cache.get_or_compute(identity, lambda: fresh)
    assert not hit and torch.equal(x2, fresh[0])
    assert cache.load(cache_key(identity)) is not None  # repaired on disk


def test_parallel_requests_compute_once(tmp_path):
    calls, results = [], []
    start = threading.Barrier(4)

    def compute():
        calls.append(1)
        return features()

    def job():
        start.wait()
        results.append(FeatureCache(tmp_path).get_or_compute({"id": "shared"}, compute)[1])

    threads = [threading.Thread(target=job) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and sorted(results) == [False, True, True, True]


def test_failed_compute_leaves_no_entry(tmp_path):
    cache = FeatureCache(tmp_path)

    def broken():
        raise RuntimeError("backbone crashed")

    with pytest.raises(RuntimeError):
        cache.get_or_compute({"id": "x"}, broken)
    assert cache.load(cache_key({"id": "x"})) is None
    assert not list(tmp_path.rglob("*.tmp"))
