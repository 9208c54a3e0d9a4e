"""Training batches of features, one path for all: a split is a stream of blocks (a feature
file read block by block, or in-memory features as a stream of one block), cut into batches
by index in a shuffled order."""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from typing import Callable

import lightning as L
import numpy as np
import torch

from sealab.features.ondisk import StreamedFeatures

Features = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Block:
    """One block of an epoch: ``chunks``, its row ranges ``(start, stop)`` in file order (read one
    after the other into the block buffer), and ``perm``, the order its rows are visited in, as
    positions in that buffer."""

    chunks: list[tuple[int, int]]
    perm: torch.Tensor

    def rows(self) -> torch.Tensor:
        """The file rows in visit order."""
        return torch.cat([torch.arange(start, stop) for start, stop in self.chunks])[self.perm]


def _libc_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


MALLOC_TRIM = _libc_malloc_trim()


def release_free_memory() -> None:
    """Hand memory the allocator holds but no tensor uses back to the kernel (glibc). Training
    steps free tensors of a few MiB; glibc serves them from its heap once its adaptive mmap
    threshold has risen, and keeps the freed space: without this, a streamed epoch's peak
    resident memory grows with n (measured: +225, +455, +860 MiB at n = 20k, 80k, 320k of d=2048)
    although no buffer does."""
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)


def epoch_blocks(n: int, block_rows: int, chunk_rows: int, gen: torch.Generator) -> list[Block]:
    """An epoch as blocks, in visit order. The file is cut into chunks of ``chunk_rows``
    consecutive rows; each block gathers ``block_rows / chunk_rows`` chunks drawn at random from
    the whole file (so a file sorted by class still gives blocks of many classes; ``chunk_rows =
    block_rows`` gives contiguous blocks), its rows are visited in random order and the blocks in
    random order: every row exactly once. The within-block permutations are drawn first, so with
    a single block (``block_rows >= n``) the order is ``randperm(n)`` drawn from
    the same generator."""
    if n == 0:
        return []
    per_block = block_rows // chunk_rows
    starts = list(range(0, n, chunk_rows))
    count = -(-len(starts) // per_block)
    # The last chunk (the only one that may be short) goes to the last block, the one that may
    # hold fewer chunks; which blocks hold which other chunks is random, as is the visit order.
    perms = [torch.randperm(size, generator=gen)
             for size in [block_rows] * (count - 1) + [n - (count - 1) * block_rows]]
    dealt = [starts[i] for i in torch.randperm(len(starts) - 1, generator=gen).tolist()] + starts[-1:]
    blocks = [Block(sorted((s, min(s + chunk_rows, n)) for s in dealt[j * per_block:(j + 1) * per_block]),
                    perms[j]) for j in range(count)]
    return [blocks[j] for j in torch.randperm(count, generator=gen).tolist()]


class FileBlocks:
    """A ``StreamedFeatures`` split as blocks: each block is read into a buffer, converted to
    float32 and normalised in place on the CPU, then moved to ``device``. One pair of block
    buffers serves the whole epoch, so resident memory stays about ``block_rows x d x (4 +
    itemsize)`` bytes whatever the size of the file."""

    def __init__(self, data: StreamedFeatures, device: torch.device | str = "cpu"):
        self.data, self.device = data, torch.device(device)
        self.targets = data.targets.to(self.device)
        self.block_rows, self.chunk_rows = data.block_rows, data.chunk_rows

    def __len__(self) -> int:
        return len(self.data)

    @property
    def shape(self) -> tuple[int, int]:
        return self.data.shape

    def to(self, device: torch.device | str) -> FileBlocks:
        return FileBlocks(self.data, device)

    def read(self, blocks: list[Block]):
        """The blocks' rows, block after block, each in file order (overwritten by the next)."""
        raw = np.empty((min(self.block_rows, len(self)), self.shape[1]), dtype=self.data.rows.dtype)
        out = torch.empty(raw.shape, dtype=torch.float32)
        for block in blocks:
            release_free_memory()
            yield self.data.read(block.chunks, raw, out).to(self.device)


class MemoryBlocks:
    """In-memory features as a stream of one block: the matrix itself, no copy."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        if len(x) != len(y):
            raise ValueError(f"{len(x)} feature rows but {len(y)} targets")
        self.x, self.targets = x, y
        self.block_rows = self.chunk_rows = max(len(x), 1)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.x.shape)

    def to(self, device: torch.device | str) -> MemoryBlocks:
        return MemoryBlocks(self.x.to(device), self.targets.to(device))

    def read(self, blocks: list[Block]):
        for _ in blocks:
            yield self.x


def feature_blocks(data: Features | StreamedFeatures) -> FileBlocks | MemoryBlocks:
    """The one place in-memory and streamed training data differ: how their blocks are read."""
    return FileBlocks(data) if isinstance(data, StreamedFeatures) else MemoryBlocks(*data)


class BlockShuffledBatches:
    """Batches of a split in ``epoch_blocks`` order, read one block at a time and cut into
    batches by index (copies). A batch may span two blocks, so every batch but the last is
    full. With one block (in-memory features) the order is ``randperm(n)``.

    Beyond the blocks themselves, memory holds a few batches and the epoch's order and targets
    (16 bytes per row). Epochs are seeded with ``seed + epoch``: reproducible, and every epoch
    differs.
    """

    def __init__(self, data: FileBlocks | MemoryBlocks, batch_size: int, drop_last: bool = False, seed: int = 0):
        self.data = data
        self.batch_size, self.drop_last, self.seed = batch_size, drop_last, seed
        self.epoch = 0

    def __len__(self) -> int:
        n, b = len(self.data), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    @property
    def examples(self) -> int:
        """Rows an epoch trains on."""
        return len(self) * self.batch_size if self.drop_last else len(self.data)

    def next_epoch(self) -> list[Block]:
        """The next epoch's blocks (advances the epoch)."""
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        return epoch_blocks(len(self.data), self.data.block_rows, self.data.chunk_rows, gen)

    def __iter__(self):
        blocks = self.next_epoch()
        if not blocks:
            return
        device = self.data.targets.device
        # The epoch's targets in visit order, made once: per-block allocations that live while
        # training steps allocate and free around them fragment the heap, which then keeps growing.
        epoch_targets = self.data.targets[torch.cat([b.rows() for b in blocks]).to(device)]
        carry: list[tuple[torch.Tensor, torch.Tensor]] = []  # the start of a batch the last block began
        at = 0
        for block_spec, block in zip(blocks, self.data.read(blocks)):
            local = block_spec.perm.to(device)
            targets, at = epoch_targets[at:at + len(local)], at + len(local)
            i = 0
            if carry:  # finish the batch the previous block began
                i = self.batch_size - sum(len(y) for _, y in carry)
                carry.append((block.index_select(0, local[:i]), targets[:i]))
                if sum(len(y) for _, y in carry) < self.batch_size:  # a block smaller than a batch
                    continue
                yield torch.cat([x for x, _ in carry]), torch.cat([y for _, y in carry])
                carry = []
            for i in range(i, len(local), self.batch_size):
                idx = local[i:i + self.batch_size]
                batch = block.index_select(0, idx), targets[i:i + self.batch_size]
                if len(idx) < self.batch_size:
                    carry.append(batch)
                else:
                    yield batch
        if carry and not self.drop_last:
            yield torch.cat([x for x, _ in carry]), torch.cat([y for _, y in carry])


class WholeEpochs:
    """What Lightning iterates for training: one item per epoch, the epoch's batches, so that
    one Lightning step runs a whole epoch of optimiser steps (the probe's hot loop)."""

    def __init__(self, batches: BlockShuffledBatches):
        self.batches = batches

    def __len__(self) -> int:
        return 1

    def __iter__(self):
        yield self.batches


class InOrder:
    """Evaluation batches: consecutive rows."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int):
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __iter__(self):
        return zip(self.x.split(self.batch_size), self.y.split(self.batch_size))


class FeatureDataModule(L.LightningDataModule):
    """The training split (``feature_blocks``) as ``WholeEpochs`` of ``BlockShuffledBatches``,
    in memory or streamed from disk alike, moved to the training device in ``setup``; val in memory, in order."""

    def __init__(self, train: FileBlocks | MemoryBlocks, val: Features | None,
                 batch_size: int = 256, eval_batch_size: int = 4096, drop_last: bool = False, seed: int = 0):
        super().__init__()
        self.train_data, self.val_data = train, val
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.drop_last, self.seed = drop_last, seed
        self._train_batches: WholeEpochs | None = None

    def setup(self, stage: str | None = None) -> None:
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        self.train_data = self.train_data.to(device)
        if self.val_data is not None:
            self.val_data = tuple(t.to(device) for t in self.val_data)

    def train_dataloader(self) -> WholeEpochs:
        if self._train_batches is None:  # one object, so its epoch counter advances
            self._train_batches = WholeEpochs(BlockShuffledBatches(self.train_data, self.batch_size,
                                                                   self.drop_last, self.seed))
        return self._train_batches

    def val_dataloader(self) -> InOrder | list:
        return [] if self.val_data is None else InOrder(*self.val_data, self.eval_batch_size)
