"""Files that are never half-written: atomic writes and content hashes."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable

FULL = (errno.ENOSPC, errno.EDQUOT)
FORBIDDEN = (errno.EACCES, errno.EPERM, errno.EROFS)


class WriteError(OSError):
    """A file sealab writes could not be written: the file, the system's reason and the fix. An
    OSError with the original errno, so that code handling an unwritable folder still does."""

    def __init__(self, path: Path, err: OSError):
        super().__init__(err.errno, err.strerror or str(err))
        self.filename = str(path)
        if err.errno in FULL:
            fix = ("the disk (or your quota) is full: free space there, or move sealab's files to a disk "
                   "with room (paths.root_dir; the feature cache alone: paths.cache_dir)")
        elif err.errno in FORBIDDEN:
            fix = ("this process may not write there: make the folder writable, or move sealab's files to "
                   "one it can write (paths.root_dir; the feature cache alone: paths.cache_dir)")
        else:
            fix = "check that its folder exists and can be written (paths.root_dir, paths.cache_dir)"
        self.message = f"cannot write {path}: {err.strerror or err}; {fix}"

    def __str__(self) -> str:
        return self.message


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            sha.update(block)
    return sha.hexdigest()


def atomic_write_bytes(path: Path, write: Callable[[Path], None]) -> None:
    """Let ``write`` fill a temp file beside ``path``, then rename it into place.

    The temp file is created like any new file (mode 0666 minus the process umask), not with
    mkstemp's 0600, so a cache or sweep folder shared by a group stays readable by it.
    A failure to write (a full disk, a read-only folder) raises ``WriteError`` naming ``path``.
    """
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        write(tmp)
        os.replace(tmp, path)
    except WriteError:
        raise
    except OSError as err:
        raise WriteError(path, err) from err
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=str) + "\n"))


def atomic_torch_save(path: Path, obj: Any) -> None:
    """``torch.save`` through a file object: given a file name, torch reports a full disk as a
    RuntimeError ("unexpected pos ..."), through Python's file as the OSError it is."""
    import torch  # fileio is imported by modules that must stay light

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            torch.save(obj, f)

    atomic_write_bytes(path, write)
