"""The feature cache: keyed, verified, atomic, one writer per key; .npy entries a streaming
reader can open; waits that say who holds the lock; a read-only cache directory."""

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from filelock import FileLock

from sealab.features import locks
from sealab.features.cache import CacheEntry, DamagedEntry, FeatureCache, cache_key
from sealab.features.shards import PartialEntry


def features(n=20, d=4, dtype=torch.float32):
    return torch.randn(n, d).to(dtype), torch.arange(n) % 3


def filler(made, calls=None):
    """A ``compute`` that writes ``made`` into the partial entry, counting its calls."""
    def compute(partial: PartialEntry):
        if calls is not None:
            calls.append(1)
        partial.extend([made])
    return compute


def get(cache, identity, compute, n=20, dtype="float32", verify=False):
    return cache.get_or_compute(identity, compute, n, dtype, shard_rows=8, verify=verify)


def test_store_then_load_round_trips_through_plain_npy_files(tmp_path):
    cache = FeatureCache(tmp_path)
    x, y = features()
    entry = cache.store("k", (x, y), {"identity": {}}, shard_rows=8)
    loaded = entry.load()
    assert torch.equal(loaded[0], x) and torch.equal(loaded[1], y)
    # what a streaming reader sees: an ordinary n x d .npy file, meta.json describing it
    assert np.array_equal(np.load(entry.features), x.numpy()) and np.array_equal(np.load(entry.labels), y.numpy())
    meta = json.loads((tmp_path / "k" / "meta.json").read_text())
    assert (meta["shape"], meta["dtype"], [s["rows"] for s in meta["shards"]]) == ([20, 4], "float32", [8, 8, 4])
    assert not (tmp_path / "k.partial").exists()


def test_float16_entries_hold_the_rounded_rows_and_load_as_float32(tmp_path):
    x, y = features(dtype=torch.float16)
    entry = FeatureCache(tmp_path).store("k", (x, y), {})
    assert np.load(entry.features).dtype == np.float16 and entry.features.stat().st_size < 20 * 4 * 2 + 200
    loaded = entry.load()[0]
    assert loaded.dtype == torch.float32 and torch.equal(loaded, x.float())


def test_values_beyond_float16_are_refused_naming_the_setting(tmp_path):
    partial = PartialEntry(tmp_path / "p", 2, 8, "float16")
    with pytest.raises(ValueError, match="extract.cache_dtype=float32"):
        partial.extend([(torch.tensor([[1.0, 7e4], [0.0, 1.0]]), torch.tensor([0, 1]))])


def test_key_changes_with_every_identity_field():
    base = {"backbone": {"name": "a", "weights": "w1"}, "dataset": {"root": "/d"}, "split": "train"}
    keys = {cache_key(base)}
    for changed in ({**base, "split": "test"}, {**base, "backbone": {"name": "a", "weights": "w2"}},
                    {**base, "dataset": {"root": "/e"}}):
        keys.add(cache_key(changed))
    assert len(keys) == 4
    assert cache_key(dict(reversed(list(base.items())))) == cache_key(base)  # order-free


def test_second_request_is_a_hit_and_does_not_compute(tmp_path):
    cache, calls, made = FeatureCache(tmp_path), [], features()
    entry1, hit1 = get(cache, {"id": 1}, filler(made, calls))
    entry2, hit2 = get(cache, {"id": 1}, filler(made, calls))
    assert (hit1, hit2, len(calls)) == (False, True, 1)
    assert torch.equal(entry1.load()[0], made[0]) and torch.equal(entry2.load()[0], made[0])


def damage(entry, how):
    data = entry / "features.npy"
    if how == "truncate":
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    elif how == "flip_byte":
        raw = bytearray(data.read_bytes())
        raw[-10] ^= 0xFF
        data.write_bytes(bytes(raw))
    elif how == "flip_label":
        raw = bytearray((entry / "labels.npy").read_bytes())
        raw[-1] ^= 0xFF
        (entry / "labels.npy").write_bytes(bytes(raw))
    elif how == "delete_data":
        data.unlink()
    else:
        (entry / "meta.json").write_text("{not json")


@pytest.mark.parametrize("how", ["truncate", "flip_byte", "flip_label", "delete_data", "garbage_meta"])
def test_damaged_entry_is_detected_and_recomputed_with_one_warning(tmp_path, how, caplog):
    cache, identity = FeatureCache(tmp_path), {"id": how}
    get(cache, identity, filler(features()))
    damage(tmp_path / cache_key(identity), how)
    with pytest.raises(DamagedEntry):
        CacheEntry.open(tmp_path / cache_key(identity)).load()
    # A flipped byte in the rows passes the cheap checks of a hit; reading the rows finds it, and
    # the reader then asks again with verify=True (see store.py). Any other damage is found on open.
    fresh, calls = features(), []
    with caplog.at_level(logging.WARNING):
        entry, hit = get(cache, identity, filler(fresh, calls), verify=how == "flip_byte")
    assert not hit and calls == [1] and torch.equal(entry.load()[0], fresh[0])
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and warnings[0].startswith(f"feature cache entry {tmp_path / cache_key(identity)} is "
                                                         "damaged") and warnings[0].endswith("extracting again")
    assert cache.entry(cache_key(identity), verify=True) is not None  # repaired on disk


def test_parallel_requests_compute_once(tmp_path):
    calls, results = [], []
    start = threading.Barrier(4)

    def job():
        start.wait()
        results.append(get(FeatureCache(tmp_path), {"id": "shared"}, filler(features(), calls))[1])

    threads = [threading.Thread(target=job) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and sorted(results) == [False, True, True, True]


def test_failed_compute_leaves_no_entry_but_keeps_finished_shards(tmp_path):
    cache = FeatureCache(tmp_path)
    x, y = features()

    def batches():
        yield x[:10], y[:10]  # one shard of 8 finished, 2 rows pending
        raise RuntimeError("backbone crashed")

    def broken(partial):
        partial.extend(batches())

    with pytest.raises(RuntimeError, match="backbone crashed"):
        get(cache, {"id": "x"}, broken)
    assert cache.entry(cache_key({"id": "x"})) is None
    assert not list(tmp_path.rglob("*.tmp"))
    partial = PartialEntry(tmp_path / f"{cache_key({'id': 'x'})}.partial", 20, 8, "float32")
    assert partial.finished() == 1


HOLDER = """
import sys, time
from pathlib import Path
from sealab.features.locks import key_lock
with key_lock(Path(sys.argv[1]), sys.argv[2], timeout=60):
    print("locked", flush=True)
    sys.stdin.read()  # hold the lock until the test closes our stdin
"""


class WaitClock:
    """The lock wait's clock, moved on by exactly the waits it asks the lock for (each attempt
    itself is immediate): how many reports a wait gives and when it gives up no longer depend on
    how busy the machine is. The lock stays the real one, held by another process."""

    def __init__(self):
        self.now, self.waits = 0.0, []

    def __call__(self) -> float:
        return self.now

    def lock(self, path):
        real, clock = FileLock(path), self

        class Attempt:
            def acquire(self, timeout):
                assert len(clock.waits) < 100, "a wait that never gives up"
                clock.waits.append(timeout)
                clock.now += timeout
                real.acquire(timeout=0)

            def release(self):
                real.release()
        return Attempt()


def test_a_wait_for_a_lock_names_key_and_holder_and_ends_at_lock_timeout(tmp_path, caplog, monkeypatch):
    key = cache_key({"id": "busy"})
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), key], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    clock = WaitClock()
    monkeypatch.setattr(locks, "clock", clock)
    monkeypatch.setattr(locks, "FileLock", clock.lock)
    try:
        assert holder.stdout.readline().strip() == "locked"
        cache = FeatureCache(tmp_path, lock_timeout=3, report_every=1)
        with caplog.at_level(logging.WARNING), pytest.raises(TimeoutError) as failed:
            get(cache, {"id": "busy"}, filler(features()))
        # a report at once, then one every report_every, and no wait past lock_timeout
        assert clock.waits == [0, 1, 1, 1]
        clock.waits.clear()
        with pytest.raises(TimeoutError, match="extract.lock_timeout"):  # 0: gives up at once
            get(FeatureCache(tmp_path, lock_timeout=0), {"id": "busy"}, filler(features()))
        assert clock.waits == [0]
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    who = f"pid {holder.pid} on host {socket.gethostname()}"
    waits = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting for feature cache entry")]
    assert len(waits) == 3 and all(key in m and who in m for m in waits)
    assert [m.split("; ")[-1] for m in waits] == [f"waited {s} s of extract.lock_timeout=3 s" for s in (0, 1, 2)]
    assert key in str(failed.value) and who in str(failed.value) and "extract.lock_timeout" in str(failed.value)
    entry, hit = get(cache, {"id": "busy"}, filler(features()))  # the holder is gone: the lock is free
    assert not hit and not (tmp_path / f"{key}.holder.json").exists()


@contextmanager
def unwritable(path):
    """``path`` read-only for this process: by its mode, and as root (who ignores modes) by
    acting as the unprivileged user nobody meanwhile."""
    path.chmod(0o555)
    as_root = os.geteuid() == 0
    if as_root:
        os.seteuid(65534)
    try:
        yield
    finally:
        if as_root:
            os.seteuid(0)
        path.chmod(0o755)


@pytest.fixture
def shared_dir():
    """A directory other users can reach (pytest's tmp_path sits under a 0700 directory)."""
    path = Path(tempfile.mkdtemp())
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_a_read_only_cache_serves_hits_and_extracts_misses_uncached_with_one_warning(shared_dir, caplog):
    root = shared_dir / "cache"
    made = features()
    get(FeatureCache(root), {"id": "old"}, filler(made))
    calls = []
    with unwritable(root), caplog.at_level(logging.WARNING):
        cache = FeatureCache(root)
        old, old_hit = get(cache, {"id": "old"}, filler(made, calls))
        new = [get(cache, {"id": i}, filler(made, calls)) for i in ("new", "newer")]
        loaded = [entry.load()[0] for entry, _ in new]
    assert old_hit and calls == [1, 1] and all(not hit for _, hit in new)
    assert all(torch.equal(x, made[0]) for x in loaded)
    assert len(caplog.records) == 1 and f"paths.cache_dir={root} cannot be written" in caplog.records[0].getMessage()
    assert not any((root / cache_key({"id": i})).exists() for i in ("new", "newer"))


def test_shards_of_another_plan_are_dropped_and_a_damaged_shard_is_extracted_again(tmp_path):
    x, y = features()
    old = PartialEntry(tmp_path / "p", 20, 8, "float32")
    for i in range(2):
        old.write(i, x[8 * i:8 * (i + 1)].numpy(), y[8 * i:8 * (i + 1)].numpy())
    assert old.finished() == 2
    assert PartialEntry(tmp_path / "p", 20, 4, "float32").finished() == 0  # other shard size: start over
    partial = PartialEntry(tmp_path / "p", 20, 8, "float32")
    partial.extend([(x, y)])
    shard = tmp_path / "p" / "shard-00001.npy"
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 0x01  # same size, so the record still counts it finished
    shard.write_bytes(bytes(raw))
    assert partial.finished() == 3
    with pytest.raises(RuntimeError, match="shard-00001.npy does not match its recorded sha256"):
        partial.assemble(tmp_path / "features.npy", tmp_path / "labels.npy")
    assert partial.finished() == 1  # the next run extracts shards 1-2 again
    partial.extend([(x[8:], y[8:])])
    partial.assemble(tmp_path / "features.npy", tmp_path / "labels.npy")
    assert np.array_equal(np.load(tmp_path / "features.npy"), x.numpy())
