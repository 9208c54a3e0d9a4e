"""A cache entry under construction: feature rows are written in shards as extraction goes, so
a killed extraction resumes after its last finished shard; the shards are then streamed into one
``.npy`` file (never all rows in RAM at once).

Layout of ``<cache_dir>/<key>.partial/``::

    plan.json                 n, rows per shard, dtype (a partial with another plan starts over)
    shard-00012.npy           rows [12 S, 13 S) of the features, in the cache dtype
    shard-00012.labels.npy    their targets
    shard-00012.json          written last: the shard's rows, file sizes and sha256 digests

Every file is written atomically, the record last: a shard without its record is unfinished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from sealab.fileio import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)


def rows_sha256(rows: np.ndarray) -> str:
    """Digest of an array's data bytes (C order): a shard's digest equals the digest of its rows'
    region in the assembled file, so entries are verified shard by shard."""
    return hashlib.sha256(np.ascontiguousarray(rows).data).hexdigest()


def save_npy(path: Path, array: np.ndarray) -> None:
    # Through a file object: np.save given a name appends ".npy" to the temp file's name.
    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            np.save(f, array, allow_pickle=False)

    atomic_write_bytes(path, write)


def as_cache_rows(x: torch.Tensor | np.ndarray, dtype: np.dtype) -> np.ndarray:
    rows = np.asarray(x)
    with np.errstate(over="ignore"):  # reported below, naming the setting
        stored = rows.astype(dtype, copy=False)
    if not np.isfinite(stored).all() and np.isfinite(rows).all():
        raise ValueError(f"feature values up to {np.abs(rows).max():.4g} exceed the range of {dtype} "
                         f"(max {np.finfo(dtype).max:.4g}): set extract.cache_dtype=float32")
    return stored


class PartialEntry:
    """The shards of one cache entry of ``n`` rows, ``shard_rows`` rows each (the last one fewer)."""

    def __init__(self, path: Path, n: int, shard_rows: int, dtype: str | np.dtype):
        if n < 1:
            raise ValueError(f"nothing to extract into {path.name}: the split holds no samples")
        self.path, self.n, self.shard_rows, self.dtype = path, n, shard_rows, np.dtype(dtype)
        self.num_shards = -(-n // shard_rows)
        plan = {"n": n, "shard_rows": shard_rows, "dtype": self.dtype.name}
        plan_path = path / "plan.json"
        if plan_path.is_file() and _read_json(plan_path) != plan:
            log.info("%s was started with other settings (%s); starting over", path, _read_json(plan_path))
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        if not plan_path.is_file():
            atomic_write_json(plan_path, plan)

    def _file(self, index: int, suffix: str) -> Path:
        return self.path / f"shard-{index:05d}{suffix}"

    def _rows(self, index: int) -> int:
        return min(self.shard_rows, self.n - index * self.shard_rows)

    def record(self, index: int) -> dict[str, Any] | None:
        """The record of a finished shard (its files present at their recorded sizes), else None."""
        record = _read_json(self._file(index, ".json"))
        if record is None:
            return None
        for suffix, size in (("", record["bytes"]), (".labels", record["labels_bytes"])):
            path = self._file(index, f"{suffix}.npy")
            if not path.is_file() or path.stat().st_size != size:
                return None
        return record

    def finished(self) -> int:
        """How many leading shards are finished: extraction resumes after them."""
        return next((i for i in range(self.num_shards) if self.record(i) is None), self.num_shards)

    def write(self, index: int, x: np.ndarray, y: np.ndarray) -> None:
        if len(x) != self._rows(index) or len(y) != len(x):
            raise RuntimeError(f"shard {index} of {self.path} got {len(x)} rows and {len(y)} targets; "
                               f"expected {self._rows(index)}")
        save_npy(self._file(index, ".npy"), x)
        save_npy(self._file(index, ".labels.npy"), y)
        atomic_write_json(self._file(index, ".json"), {
            "index": index, "rows": len(x), "dim": x.shape[1], "sha256": rows_sha256(x),
            "labels_sha256": rows_sha256(y), "bytes": self._file(index, ".npy").stat().st_size,
            "labels_bytes": self._file(index, ".labels.npy").stat().st_size})

    def extend(self, batches: Iterable[tuple[torch.Tensor | np.ndarray, torch.Tensor | np.ndarray]]) -> None:
        """Take the rows after the finished shards, in order, in batches of any size; write each
        shard as soon as it is full. Only one shard's rows are held in RAM."""
        index = self.finished()
        xs, ys, have = [], [], 0
        for x, y in batches:
            x, y = as_cache_rows(x, self.dtype), np.asarray(y)
            while len(x):  # a batch may end a shard, or (an in-memory matrix) span many
                if index == self.num_shards:
                    raise RuntimeError(f"{self.path}: extraction gave more than {self.n} rows")
                take = self._rows(index) - have
                xs.append(x[:take])
                ys.append(y[:take])
                x, y, have = x[take:], y[take:], have + len(xs[-1])
                if have == self._rows(index):
                    self.write(index, np.concatenate(xs), np.concatenate(ys))
                    xs, ys, have, index = [], [], 0, index + 1
        if index < self.num_shards:
            raise RuntimeError(f"{self.path}: extraction gave {index * self.shard_rows + have} rows of {self.n}")

    def assemble(self, features_path: Path, labels_path: Path) -> dict[str, Any]:
        """Stream the finished shards into ``features_path`` (.npy, n x d) and ``labels_path``;
        return what meta.json records to verify them. A shard whose bytes no longer match its
        digest is removed and reported: the next run extracts it again."""
        records = [self.record(i) for i in range(self.num_shards)]
        if None in records:
            raise RuntimeError(f"{self.path}: shard {records.index(None)} is not finished")
        dim = records[0]["dim"]

        def verified(index: int, suffix: str, digest: str) -> np.ndarray:
            rows = np.load(self._file(index, suffix), allow_pickle=False)
            if rows_sha256(rows) != digest:
                self._file(index, ".json").unlink()
                raise RuntimeError(f"{self._file(index, suffix)} does not match its recorded sha256 (damaged "
                                   "on disk); it was removed: run again to extract that shard again")
            return rows

        def write_features(tmp: Path) -> None:
            with tmp.open("wb") as f:
                np.lib.format.write_array_header_1_0(f, {
                    "descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                    "shape": (self.n, dim)})
                for i, record in enumerate(records):
                    f.write(verified(i, ".npy", record["sha256"]).data)

        atomic_write_bytes(features_path, write_features)
        labels = np.concatenate([verified(i, ".labels.npy", r["labels_sha256"]) for i, r in enumerate(records)])
        save_npy(labels_path, labels)
        return {"shape": [self.n, dim], "dtype": self.dtype.name, "labels_sha256": rows_sha256(labels),
                "labels_shape": list(labels.shape),
                "shards": [{"rows": r["rows"], "sha256": r["sha256"]} for r in records]}

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def progress(path: Path) -> str:
    """``"k of m shards done"`` for a partial entry another process is writing (for wait messages)."""
    plan = _read_json(path / "plan.json")
    if plan is None:
        return "no shard done yet"
    return f"{len(list(path.glob('shard-*.json')))} of {-(-plan['n'] // plan['shard_rows'])} shards done"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
