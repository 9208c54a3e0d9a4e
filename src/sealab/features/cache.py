"""Keyed on-disk feature cache: atomic writes, verified entries, one writer per key.

An entry ``<root>/<key>/`` holds ``features.npy`` (NumPy .npy, n x d, float16 or float32),
``labels.npy`` and ``meta.json``, written last (shape, dtype, key, identity, format version and
the sha256 of every shard's rows). Streaming consumers read ``features.npy`` directly
(``CacheEntry.features``); ``CacheEntry.load`` gives float32 tensors in RAM.

Integrity, and why it costs nothing on a hit: files are renamed into place and meta.json comes
last, so an interrupted write never looks finished. Opening an entry checks meta.json, the .npy
header (shape, dtype) and the file size against it, and the labels' digest: O(1) in the number of
feature rows, so a hit on a 10 GB entry opens in milliseconds and any truncation is caught.
Bytes changed in place (bit rot, a stray write) are caught when the rows are read into RAM, which
hashes each shard as it reads it (sha256 at >1 GB/s, next to the read itself). A split streamed
from ``features.npy`` is checked by ``verify()`` before training, not shard by shard as epochs
first touch them: blocks gather chunks from all over the file, so a shard's digest would need
an extra read of the whole shard anyway, and damage found mid-training could no longer be
repaired without changing the run. One extra read of the file per run, a shard in memory at a
time: 0.08 s for 20k x 2048 float16 rows (78 MiB) against 6.1 s for one streamed clean-SeA
epoch over them (about 1%; 0.28 s against 28.7 s on a loaded machine). ``verify()`` returns the
file's signature, which the streaming reader then compares at every read. A damaged entry is
extracted again (reported once).

One job writes a key at a time (``locks.key_lock``; waits name the key, the holder and its
progress, and end after ``lock_timeout``). When ``root`` cannot be written, a miss is extracted
into a temporary directory removed at exit, with one warning.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import numpy as np
import torch

from sealab.features.locks import key_lock
from sealab.features.ondisk import FileSignature, file_signature
from sealab.features.shards import PartialEntry, progress, rows_sha256
from sealab.fileio import atomic_write_json

log = logging.getLogger(__name__)

# Bump when the stored format or the extraction changes meaning: old entries are then ignored.
FEATURE_FORMAT_VERSION = 2

Features = tuple[torch.Tensor, torch.Tensor]


def cache_key(identity: dict[str, Any]) -> str:
    payload = json.dumps({"format": FEATURE_FORMAT_VERSION, **identity}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


class DamagedEntry(ValueError):
    """A cache entry whose files do not match its meta.json."""


@dataclass(frozen=True)
class CacheEntry:
    """A finished entry. ``features`` / ``labels``: paths of its .npy files; ``meta``: meta.json."""

    dir: Path
    meta: dict[str, Any]

    @property
    def features(self) -> Path:
        return self.dir / "features.npy"

    @property
    def labels(self) -> Path:
        return self.dir / "labels.npy"

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.meta["shape"])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.meta["dtype"])

    @classmethod
    def open(cls, entry: Path) -> "CacheEntry":
        """The entry after the cheap checks (module docstring); raises ``DamagedEntry``."""
        try:
            meta = json.loads((entry / "meta.json").read_text())
            found = cls(entry, meta)
            if meta.get("format") != FEATURE_FORMAT_VERSION:
                raise DamagedEntry(f"format {meta.get('format')}, expected {FEATURE_FORMAT_VERSION}")
            with found.features.open("rb") as f:
                if np.lib.format.read_magic(f) != (1, 0):
                    raise DamagedEntry("features.npy has an unexpected header version")
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                offset = f.tell()
            if list(shape) != meta["shape"] or dtype != found.dtype:
                raise DamagedEntry(f"features.npy holds {dtype} {list(shape)}, meta.json says "
                                   f"{meta['dtype']} {meta['shape']}")
            size = found.features.stat().st_size
            if size != offset + int(np.prod(shape)) * dtype.itemsize:
                raise DamagedEntry(f"features.npy has {size} bytes, its shape needs "
                                   f"{offset + int(np.prod(shape)) * dtype.itemsize}")
            found.read_labels()
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise err if isinstance(err, DamagedEntry) else DamagedEntry(f"{type(err).__name__}: {err}") from err
        return found

    def read_labels(self) -> np.ndarray:
        """The targets, checked against their sha256 in meta.json; raises ``DamagedEntry``."""
        labels = np.load(self.labels, allow_pickle=False)
        if rows_sha256(labels) != self.meta["labels_sha256"] or len(labels) != self.shape[0]:
            raise DamagedEntry(f"{self.labels} does not match the sha256 in meta.json")
        return labels

    def _rows(self, f: BinaryIO) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, rows)`` of each shard, read from the open features.npy ``f`` into one
        buffer (a shard's rows are overwritten by the next's) and checked against its digest."""
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        buffer = np.empty((max(s["rows"] for s in self.meta["shards"]), self.shape[1]), self.dtype)
        start = 0
        for i, shard in enumerate(self.meta["shards"]):
            rows = buffer[:shard["rows"]]
            if f.readinto(memoryview(rows).cast("B")) != rows.nbytes or rows_sha256(rows) != shard["sha256"]:
                raise DamagedEntry(f"rows {start}-{start + len(rows) - 1} (shard {i}) of {self.features} do "
                                   "not match their sha256 in meta.json")
            yield start, rows
            start += len(rows)

    def verify(self) -> FileSignature:
        """Check every row against its shard digest (one read of the whole file, one shard in
        memory); raises ``DamagedEntry``. Returns the signature of the file as verified, for a
        reader to notice if it changes afterwards (``NpyRows``)."""
        with self.features.open("rb") as f:
            verified = file_signature(f.fileno())
            for _ in self._rows(f):
                pass
            if file_signature(f.fileno()) != verified:
                raise DamagedEntry(f"{self.features} changed while its rows were checked")
        return verified

    def load(self) -> Features:
        """``(features float32 n x d, targets)`` in RAM, verified while read; peak memory is the
        float32 matrix plus one shard."""
        x = torch.empty(self.shape, dtype=torch.float32)
        with self.features.open("rb") as f:
            for start, rows in self._rows(f):
                x[start:start + len(rows)] = torch.from_numpy(rows)
        return x, torch.from_numpy(self.read_labels())


class FeatureCache:
    def __init__(self, root: str | Path, lock_timeout: float = 3600.0, report_every: float = 30.0):
        self.root = Path(root).expanduser()
        self.lock_timeout, self.report_every = lock_timeout, report_every
        self._scratch: FeatureCache | None = None

    def entry(self, key: str, verify: bool = False, quiet: bool = False) -> CacheEntry | None:
        """The finished entry of ``key``; None when absent or damaged (logged unless ``quiet``).
        ``verify``: check every row too (after a read found damage)."""
        if not (self.root / key / "meta.json").is_file():
            return None
        try:
            entry = CacheEntry.open(self.root / key)
            if verify:
                entry.verify()
            return entry
        except DamagedEntry as err:
            if not quiet:
                log.warning("feature cache entry %s is damaged (%s); extracting again", self.root / key, err)
            return None

    def store(self, key: str, features: Features, meta: dict[str, Any], shard_rows: int = 8192) -> CacheEntry:
        """Write in-memory features as entry ``key`` (dtype of ``features[0]``)."""
        x, y = features
        partial = PartialEntry(self.root / f"{key}.partial", len(x), shard_rows, str(x.dtype).removeprefix("torch."))
        partial.extend([(x, y)])
        return self._finish(key, partial, meta)

    def _finish(self, key: str, partial: PartialEntry, meta: dict[str, Any]) -> CacheEntry:
        entry = self.root / key
        entry.mkdir(parents=True, exist_ok=True)
        (entry / "meta.json").unlink(missing_ok=True)  # a damaged predecessor must not look finished
        files = partial.assemble(entry / "features.npy", entry / "labels.npy")
        atomic_write_json(entry / "meta.json", {**meta, "key": key, "format": FEATURE_FORMAT_VERSION, **files})
        partial.remove()
        return CacheEntry.open(entry)

    def get_or_compute(self, identity: dict[str, Any], compute: Callable[[PartialEntry], None], n: int,
                       dtype: str, shard_rows: int, verify: bool = False) -> tuple[CacheEntry, bool]:
        """``(entry, cache_hit)``. On a miss ``compute`` fills the shards of a ``PartialEntry`` that
        the shards of a killed run already fill in part. Parallel jobs asking for one key compute it
        once. ``verify``: a read of the entry found damage; check every row before trusting it."""
        key = cache_key(identity)
        entry = None if verify else self.entry(key, quiet=True)  # damage is reported under the lock
        if entry is not None:
            return entry, True
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=self.root).close()  # can this job write here at all?
        except OSError as err:
            return self._scratch_cache(err).get_or_compute(identity, compute, n, dtype, shard_rows)
        partial_dir = self.root / f"{key}.partial"
        with key_lock(self.root, key, self.lock_timeout, self.report_every, lambda: f", {progress(partial_dir)}"):
            entry = self.entry(key, verify=verify)  # another job may have finished while we waited
            if entry is not None:
                return entry, True
            partial = PartialEntry(partial_dir, n, shard_rows, dtype)
            compute(partial)
            return self._finish(key, partial, {"identity": identity}), False

    def _scratch_cache(self, err: OSError) -> FeatureCache:
        if self._scratch is None:
            log.warning("paths.cache_dir=%s cannot be written (%s): extracting without caching, into a "
                        "temporary directory removed at exit. Set paths.cache_dir to a writable directory "
                        "to keep the features for the next run.", self.root, err)
            scratch = tempfile.mkdtemp(prefix="sealab-features-")
            atexit.register(shutil.rmtree, scratch, ignore_errors=True)
            self._scratch = FeatureCache(scratch, self.lock_timeout, self.report_every)
        return self._scratch
