"""Training features left on disk: a 2-d ``.npy`` file read by row ranges with plain file
reads (``NpyRows``), a split streamed from it (``StreamedFeatures``), and when to stream.

Not ``np.load(mmap_mode="r")``: the pages of a memory map that training touches count in
the process's resident memory (RssFile) until the kernel evicts them, so a memmap of
ImageNet-size features looks, and may be treated by an OOM killer, as if it were loaded.
``readinto`` copies into a buffer we own; the page cache it goes through is the kernel's.

A file must not change while it is streamed: its identity (device, inode, size, modification
time) is taken when it is opened, or given by whoever checked its rows (``CacheEntry.verify``),
and every read compares it, so a file rewritten or replaced mid-training stops the run instead of
feeding it other rows.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from numpy.lib import format as npy_format

from sealab import settings
from sealab.rules import validate

log = logging.getLogger(__name__)

STREAMABLE_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))

FileSignature = tuple[int, int, int, int]


def file_signature(fd: int) -> FileSignature:
    """What changes when an open file is written to or its path replaced: device, inode, size and
    modification time (ns)."""
    st = os.fstat(fd)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class FileChangedError(RuntimeError):
    """A file being streamed was written to or replaced since its rows were checked."""


class NpyRows:
    """Rows of an n x d float16/float32 C-order ``.npy`` file: ``read(start, stop)`` returns
    rows ``start:stop`` as a NumPy array, nothing else stays in memory. ``signature``: the
    file's as its rows were verified (``CacheEntry.verify``); by default, as it is opened here.
    Any read of a file whose signature differs raises ``FileChangedError``."""

    def __init__(self, path: str | Path, signature: FileSignature | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"feature file not found: {self.path}")
        with self.path.open("rb") as f:
            self.signature = signature or file_signature(f.fileno())
            self._check_unchanged(f.fileno())
            try:
                version = npy_format.read_magic(f)
                read_header = (npy_format.read_array_header_1_0 if version == (1, 0)
                               else npy_format.read_array_header_2_0)
                shape, fortran_order, dtype = read_header(f)
            except ValueError as err:
                raise ValueError(f"{self.path} is not a .npy file ({err})") from err
            self.offset = f.tell()
        if len(shape) != 2 or fortran_order or dtype not in STREAMABLE_DTYPES:
            raise ValueError(
                f"{self.path}: streaming needs a C-order 2-d (n x d) float16 or float32 array, got "
                f"shape {shape}, dtype {dtype}{', Fortran order' if fortran_order else ''}; rewrite it "
                "with np.save(path, np.ascontiguousarray(x, dtype=np.float16))")
        self.shape, self.dtype = (int(shape[0]), int(shape[1])), dtype
        expected = self.offset + self.shape[0] * self.row_bytes
        if self.path.stat().st_size < expected:
            raise ValueError(f"{self.path} is truncated: {self.path.stat().st_size} bytes, "
                             f"its header promises {expected}")

    def _check_unchanged(self, fd: int) -> None:
        if file_signature(fd) != self.signature:
            raise FileChangedError(
                f"{self.path} changed on disk after its rows were checked (rewritten, replaced or resized): "
                "the rows read from now on would not be the features training began with, so it stopped. "
                "Run again: a feature cache entry (this file's folder) is then checked row by row against "
                "its meta.json and extracted again if damaged; make sure nothing else writes to it meanwhile.")

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def dim(self) -> int:
        return self.shape[1]

    @property
    def row_bytes(self) -> int:
        return self.shape[1] * self.dtype.itemsize

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``start:stop`` (clipped to the file) in the file's dtype; into the first rows of
        ``out`` when given (a reused buffer: a fresh block-sized allocation costs page faults
        that take longer than the read)."""
        start, stop = max(0, start), min(stop, len(self))
        count = max(0, stop - start)
        if out is None:
            out = np.empty((count, self.dim), dtype=self.dtype)
        elif out.dtype != self.dtype or out.shape[1:] != (self.dim,) or len(out) < count or not out.flags.c_contiguous:
            raise ValueError(f"a buffer of {count} x {self.dim} {self.dtype} rows is needed, got "
                             f"{out.shape} {out.dtype}")
        out = out[:count]
        view, got = memoryview(out).cast("B"), 0
        with self.path.open("rb", buffering=0) as f:
            self._check_unchanged(f.fileno())
            f.seek(self.offset + start * self.row_bytes)
            while got < out.nbytes:  # one read() returns at most ~2 GiB on Linux
                chunk = f.readinto(view[got:])
                if not chunk:
                    raise OSError(f"{self.path}: file ended after {got} of {out.nbytes} bytes at row {start}")
                got += chunk
        return out

    def blocks(self, block_rows: int):
        """``(start, rows)`` of consecutive blocks of ``block_rows`` rows, in file order, all
        read into one buffer: a block is overwritten by the next."""
        buffer = np.empty((min(block_rows, len(self)), self.dim), dtype=self.dtype)
        for start in range(0, len(self), block_rows):
            yield start, self.read(start, start + block_rows, buffer)

    def mean(self, block_rows: int) -> torch.Tensor:
        """The column mean, accumulated block by block in float64, as float32."""
        total = np.zeros(self.dim, dtype=np.float64)
        for _, rows in self.blocks(block_rows):
            total += rows.sum(axis=0, dtype=np.float64)
        return torch.from_numpy(total / max(len(self), 1)).float()


class StreamedFeatures:
    """A training split left on disk: the rows of a ``.npy`` file, their targets in memory, how
    it is read (blocks of ``block_rows`` rows gathered from chunks of ``chunk_rows`` consecutive
    rows; by default one chunk a block) and the normalisation applied to each block as it is
    read (``transform``: float32 rows -> float32 rows, allowed to work in place, e.g. a fitted
    ``FeatureNormalizer.normalize_``)."""

    def __init__(self, rows: NpyRows, targets: torch.Tensor, block_rows: int, chunk_rows: int | None = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if len(rows) != len(targets):
            raise ValueError(f"{rows.path}: {len(rows)} feature rows but {len(targets)} targets")
        chunk_rows = chunk_rows or block_rows
        if chunk_rows < 1 or block_rows % chunk_rows:
            raise ValueError(f"features.block_rows={block_rows} must be a positive multiple of "
                             f"features.chunk_rows={chunk_rows}")
        self.rows, self.targets, self.transform = rows, targets, transform
        self.block_rows, self.chunk_rows = block_rows, chunk_rows

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.shape

    def with_transform(self, transform: Callable[[torch.Tensor], torch.Tensor]) -> "StreamedFeatures":
        return StreamedFeatures(self.rows, self.targets, self.block_rows, self.chunk_rows, transform)

    def read(self, ranges: list[tuple[int, int]], raw: np.ndarray | None = None,
             out: torch.Tensor | None = None) -> torch.Tensor:
        """The rows of ``ranges`` (``(start, stop)`` pairs), one range after the other, as float32,
        transformed; through the buffers ``raw`` (the file's dtype) and ``out`` (float32) when
        given, whose first rows they then are."""
        ranges = [(start, min(stop, len(self))) for start, stop in ranges]
        count = sum(stop - start for start, stop in ranges)
        raw = np.empty((count, self.rows.dim), dtype=self.rows.dtype) if raw is None else raw
        at = 0
        for start, stop in ranges:
            self.rows.read(start, stop, raw[at:at + stop - start])
            at += stop - start
        rows = torch.from_numpy(raw[:count])
        x = rows.float() if out is None else out[:count].copy_(rows)
        return self.transform(x) if self.transform is not None else x


def streams_training_split(shape: tuple[int, int] | None, method_streams: bool, method: str,
                           in_memory: bool | str, memory_budget_gb: float) -> bool:
    """Whether to stream the training split (n x d, ``shape``) instead of loading it in RAM,
    following the ``features.*`` settings: ``in_memory`` true (load), false (stream) or auto
    (stream when the split as float32 exceeds ``memory_budget_gb``). ``shape`` is None when the
    features have no single file to stream (an ensemble, precomputed files). A method that needs
    every feature in RAM (``method_streams`` False) fails when asked to stream."""
    rules = {f"features.{key}": settings.rule(f"features.{key}") for key in ("in_memory", "memory_budget_gb")}
    validate("streaming", rules, features={"in_memory": in_memory, "memory_budget_gb": memory_budget_gb})
    if in_memory is True:
        return False
    if shape is None:
        if in_memory is False:
            raise ValueError("features.in_memory=false streams the training split from the feature cache's "
                             "features.npy, but these features have no such file (an ensemble of backbones or "
                             "precomputed feature files): use features.in_memory=true or auto")
        return False
    gib = shape[0] * shape[1] * 4 / 2**30
    if in_memory == "auto" and gib <= memory_budget_gb:
        return False
    if not method_streams:
        if in_memory is False:
            raise ValueError(f"method={method} needs every training feature in memory, but features.in_memory="
                             "false asks to stream them: use features.in_memory=true (or auto), or a method "
                             "trained by SGD on batches (linear, sea, ...)")
        log.warning("method=%s loads %.1f GiB of training features in memory (over features.memory_budget_gb=%s): "
                    "it cannot stream them", method, gib, memory_budget_gb)
        return False
    return True
