"""What a feature cache folder holds, and its safe clean-up (``sealab-cache``).

Per cache key (``cache.cache_key``: 24 hex digits) a folder may hold the entry ``<key>/``, the
shards of an extraction in progress or killed (``<key>.partial/``), its lock file
``<key>.lock`` and the holder's record ``<key>.holder.json``, and temp files of atomic writes
(``.<name>.<hex>.tmp``). Nothing is removed while another process holds the key's lock (it is
extracting that entry); a key is cleaned or removed while this process holds its lock, and its
lock file is deleted last, still held (locks.remove_held_lock_file says when that is safe)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from sealab.features.cache import FEATURE_FORMAT_VERSION, CacheEntry, DamagedEntry
from sealab.features.locks import holder, lock_if_free, remove_held_lock_file

KEY = re.compile(r"^\.?([0-9a-f]{24})(?:$|\.)")
COMPLETE, DAMAGED, OLD_FORMAT, EXTRACTING, PARTIAL = "complete", "damaged", "old format", "extracting", "partial"


def _files(path: Path) -> Iterator[Path]:
    if path.is_dir():
        yield from (p for p in path.rglob("*") if p.is_file())
    elif path.is_file():
        yield path


def disk_bytes(paths: list[Path]) -> int:
    """Bytes the files under ``paths`` take on disk (allocated blocks)."""
    return sum(f.stat().st_blocks * 512 for p in paths for f in _files(p))


@contextmanager
def _unread(paths: list[Path]) -> Iterator[float]:
    """The latest access or change of the files under ``paths`` as the filesystem records it (with
    Linux's default relatime, a run's read updates the access time at most once a day); and
    what the block reads there does not count as a use: their access times are put back after
    it (where this user may; elsewhere a listing counts as a read)."""
    stats = {f: f.stat() for p in paths for f in _files(p)}
    yield max((max(s.st_atime, s.st_mtime) for s in stats.values()), default=0.0)
    for f, before in stats.items():
        try:
            if f.stat().st_atime_ns != before.st_atime_ns:
                os.utime(f, ns=(before.st_atime_ns, before.st_mtime_ns))
        except OSError:
            pass


@dataclass(frozen=True)
class Entry:
    """One cache key: what its meta.json says it holds (empty while it is partial), its status,
    its size on disk (entry, partial shards and temp files) and when it was last used."""

    key: str
    status: str
    identity: dict
    shape: tuple[int, ...] | None
    dtype: str | None
    bytes: int
    last_used: float
    detail: str = ""

    def describe(self) -> str:
        """``digits/random_features train``: dataset, backbone, split."""
        if not self.identity:
            return "-"  # no meta.json (yet), or not a readable one
        dataset = self.identity.get("dataset", {}).get("dataset", "?")
        backbone = self.identity.get("backbone", {}).get("backbone", "?")
        return f"{dataset}/{backbone} {self.identity.get('split', '?')}"


def keys(root: Path) -> list[str]:
    """Every cache key with something under ``root`` (other files there are not sealab's)."""
    return sorted({m.group(1) for p in root.iterdir() if (m := KEY.match(p.name))})


def key_paths(root: Path, key: str) -> list[Path]:
    """Everything of ``key`` under ``root``: entry, partial shards, lock and holder files, temp files."""
    return [p for p in root.iterdir() if (m := KEY.match(p.name)) and m.group(1) == key]


def _status(root: Path, key: str) -> tuple[str, dict, tuple[int, ...] | None, str | None, str]:
    meta_path = root / key / "meta.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as err:
            return DAMAGED, {}, None, None, f"meta.json: {err}"
        identity = meta.get("identity") or {}
        if meta.get("format") != FEATURE_FORMAT_VERSION:
            return OLD_FORMAT, identity, None, None, f"format {meta.get('format')}, sealab reads {FEATURE_FORMAT_VERSION}"
        try:
            entry = CacheEntry.open(root / key)
        except DamagedEntry as err:
            return DAMAGED, identity, None, None, str(err)
        return COMPLETE, identity, entry.shape, entry.dtype.name, ""
    if (root / f"{key}.lock").is_file():
        try:
            with lock_if_free(root, key) as free:
                if not free:
                    return EXTRACTING, {}, None, None, f"locked by {holder(root, key)}"
        except OSError as err:  # a cache this user may only read
            return PARTIAL, {}, None, None, f"its lock cannot be checked ({err}): extracting, or killed"
    return PARTIAL, {}, None, None, "a killed extraction: the same command resumes it; sealab-cache clean removes it"


def inventory(root: Path) -> list[Entry]:
    """Every key with more than a lock file under ``root``, complete entries first, then by
    dataset, backbone, split."""
    found = []
    for key in keys(root):
        paths = [p for p in key_paths(root, key) if not p.name.endswith(".lock")]
        if not paths:
            continue
        with _unread(paths) as last_used:
            status, identity, shape, dtype, detail = _status(root, key)
        found.append(Entry(key, status, identity, shape, dtype, disk_bytes(paths), last_used, detail))
    return sorted(found, key=lambda e: (e.status != COMPLETE, e.describe(), e.key))


def _leftovers(root: Path, key: str) -> list[Path]:
    """What a dead extraction of ``key`` left: its holder record, temp files, and an entry folder
    without meta.json (killed while its files were assembled)."""
    entry = root / key
    found = [p for p in key_paths(root, key) if p.name.startswith(".") or p.name.endswith(".holder.json")]
    found += [p for p in _files(entry) if p.name.startswith(".") and p.name.endswith(".tmp")]
    found += [p for p in _files(root / f"{key}.partial") if p.name.startswith(".") and p.name.endswith(".tmp")]
    if entry.is_dir() and not (entry / "meta.json").is_file():
        found.append(entry)
    return found


def _delete(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@dataclass
class Outcome:
    """What a clean-up did: the paths removed (or, dry, would remove) and the keys it left alone
    because another process holds their lock (with who)."""

    removed: list[Path]
    busy: dict[str, str]


def clean(root: Path, keep_partial: bool = False, dry_run: bool = False) -> Outcome:
    """Remove what no process uses: the lock files no process holds, and what dead extractions
    left (holder records, temp files, and their partial shards unless ``keep_partial``: the same
    command would resume from them). Complete entries stay, damaged ones too (``remove``)."""
    def doomed(key: str) -> list[Path]:
        partial = [] if keep_partial or not (root / f"{key}.partial").is_dir() else [root / f"{key}.partial"]
        return sorted(set(_leftovers(root, key) + partial))

    outcome = Outcome([], {})
    for key in keys(root):
        if not doomed(key) and not (root / f"{key}.lock").exists():
            continue  # a complete entry and nothing else: no lock to take
        _remove_while_locked(root, key, doomed, 0.0, dry_run, outcome)
    return outcome


def _remove_while_locked(root: Path, key: str, doomed: Callable[[str], list[Path]], wait: float, dry_run: bool,
                         outcome: Outcome) -> None:
    """Remove ``doomed(key)`` (listed once the lock is held) and the key's lock file, holding its
    lock; or note who holds it."""
    had_lock = (root / f"{key}.lock").exists()
    with lock_if_free(root, key, wait) as free:
        if not free:
            outcome.busy[key] = holder(root, key)
            return
        paths = doomed(key)
        outcome.removed += paths + ([root / f"{key}.lock"] if had_lock else [])
        if not dry_run:
            for path in paths:
                _delete(path)
        if not dry_run or not had_lock:  # (a lock file this check made goes too)
            remove_held_lock_file(root, key)


def remove(root: Path, chosen: list[str], wait: float = 0.0, dry_run: bool = False) -> Outcome:
    """Remove the keys ``chosen`` entirely (entry, partial shards, lock and temp files), each while
    holding its lock: a key another process holds within ``wait`` seconds is left alone."""
    outcome = Outcome([], {})
    for key in chosen:
        _remove_while_locked(root, key, lambda k: [p for p in key_paths(root, k) if not p.name.endswith(".lock")],
                             wait, dry_run, outcome)
    return outcome


def unused(entries: list[Entry]) -> list[str]:
    """Keys of entries no sealab run reads again: another format version, or damaged (a run
    would extract them again, in place)."""
    return [e.key for e in entries if e.status in (OLD_FORMAT, DAMAGED)]


def older_than(entries: list[Entry], days: float, now: float | None = None) -> list[str]:
    """Keys of entries last used more than ``days`` days ago (partial ones too)."""
    limit = (time.time() if now is None else now) - days * 86400
    return [e.key for e in entries if e.last_used < limit and e.status != EXTRACTING]
