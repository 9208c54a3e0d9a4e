"""One writer per cache key, and waits that say what they wait for.

``<key>.lock`` is a filelock (an OS lock: freed when its holder dies, so a stale lock file never
blocks); its holder records pid, host and start time in ``<key>.holder.json``. A job waiting for
the lock logs the key, the holder and its progress at once and then every ``report_every``
seconds, and gives up after ``timeout`` seconds with the same facts and the setting to raise.

Lock files stay after an extraction, on purpose: the end of an extraction is exactly when other
jobs wait for the lock, having opened the file. Deleted then, a waiter locks the deleted file
while the next job creates a new one and locks that: two writers of one entry. filelock 4.3
(installed here) notices a deleted file once it has locked it and opens the path again, but
older releases do not, and on NFS (where shared caches live) the link count it reads may be
cached. So only ``sealab-cache clean`` / ``remove`` delete lock files, holding them
(``remove_held_lock_file``), a command run between sweeps.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock, Timeout

from sealab.fileio import atomic_write_json

log = logging.getLogger(__name__)

# What waits are measured with. A test replaces it (and the lock) to check the reports and the
# give-up without depending on how fast a busy machine runs the loop.
clock: Callable[[], float] = time.monotonic


def holder(root: Path, key: str) -> str:
    """Who holds the lock of ``key``, as its holder recorded it."""
    try:
        held = json.loads((root / f"{key}.holder.json").read_text())
        return f"pid {held['pid']} on host {held['host']} (since {held['since']})"
    except (OSError, ValueError, KeyError):
        return "a process that has not recorded itself yet"


@contextmanager
def key_lock(root: Path, key: str, timeout: float, report_every: float = 30.0,
             progress: Callable[[], str] = lambda: "") -> Iterator[None]:
    """Hold the lock of ``key`` under ``root``; ``progress()`` says how far the holder got."""
    lock = FileLock(root / f"{key}.lock")
    start, wait = clock(), 0.0
    while True:
        try:
            lock.acquire(timeout=wait)
            break
        except Timeout:
            waited = clock() - start
            who = f"{holder(root, key)}{progress()}"
            if waited >= timeout:
                raise TimeoutError(
                    f"gave up after {waited:.0f} s waiting for feature cache entry {key} in {root}: its lock "
                    f"is held by {who}. If that process is still extracting, raise extract.lock_timeout (now "
                    f"{timeout:g} s); if it hangs, stop it.") from None
            log.warning("waiting for feature cache entry %s in %s, locked by %s; waited %.0f s of "
                        "extract.lock_timeout=%g s", key, root, who, waited, timeout)
            wait = min(report_every, timeout - waited)
    record = root / f"{key}.holder.json"
    try:
        atomic_write_json(record, {"pid": os.getpid(), "host": socket.gethostname(),
                                   "since": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")})
        yield
    finally:
        record.unlink(missing_ok=True)
        lock.release()


@contextmanager
def lock_if_free(root: Path, key: str, wait: float = 0.0) -> Iterator[bool]:
    """``True`` while this process holds the lock of ``key`` (taken within ``wait`` seconds),
    ``False`` when another process holds it: it is extracting that entry."""
    lock = FileLock(root / f"{key}.lock")
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def remove_held_lock_file(root: Path, key: str) -> None:
    """Delete the lock file of ``key`` while this process holds it (``lock_if_free``), never
    otherwise: the module docstring says why only sealab-cache does this."""
    (root / f"{key}.lock").unlink(missing_ok=True)
