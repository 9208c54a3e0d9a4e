"""Training batches of features: in-memory tensors by index slicing, or a feature file
streamed by shuffled blocks."""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from typing import Callable

import lightning as L
import numpy as np
import torch

from sealab.features.ondisk import StreamedFeatures


class TensorBatches:
    """Iterates ``(x[idx], y[idx])`` over a fresh permutation each epoch (or in order).

    No per-sample Python work: one gather per batch. The permutation is drawn from a
    generator seeded with ``seed + epoch``, so a run is reproducible and epochs differ.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool,
                 drop_last: bool = False, seed: int = 0):
        if len(x) != len(y):
            raise ValueError(f"{len(x)} feature rows but {len(y)} targets")
        self.x, self.y, self.batch_size = x, y, batch_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.epoch = 0

    def __len__(self) -> int:
        n, b = len(self.x), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self):
        n = len(self.x)
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=gen).to(self.x.device)
            self.epoch += 1
        else:
            order = None
        for i in range(len(self)):
            if order is None:
                yield self.x[i * self.batch_size:(i + 1) * self.batch_size], \
                    self.y[i * self.batch_size:(i + 1) * self.batch_size]
            else:
                # index_select: the same rows as x[idx], about twice as fast on CPU.
                idx = order[i * self.batch_size:(i + 1) * self.batch_size]
                yield self.x.index_select(0, idx), self.y.index_select(0, idx)


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
    a single block (``block_rows >= n``) the order is ``randperm(n)``, the one ``TensorBatches``
    draws from the same generator."""
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


class BlockShuffledBatches:
    """Batches of a ``StreamedFeatures`` split in ``epoch_blocks`` order, read one block at a
    time: each block is read into a buffer, converted to float32 and normalised in place on the
    CPU, moved to ``device`` and then cut into batches by index (copies), exactly as
    ``TensorBatches`` cuts the whole matrix. A batch may span two blocks, so every batch but the
    last is full.

    Resident memory beyond the model stays about ``block_rows x d x (4 + itemsize)`` bytes (the
    two block buffers, reused all epoch), plus a few batches and the epoch's order and targets
    (16 bytes per row), whatever the size of the file. Epochs are seeded with ``seed +
    epoch``: reproducible, and every epoch differs.
    """

    def __init__(self, data: StreamedFeatures, batch_size: int, drop_last: bool = False, seed: int = 0,
                 device: torch.device | str = "cpu"):
        self.data, self.batch_size, self.drop_last, self.seed = data, batch_size, drop_last, seed
        self.device = torch.device(device)
        self.targets = data.targets.to(self.device)
        self.epoch = 0

    def __len__(self) -> int:
        n, b = len(self.data), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def next_epoch(self) -> list[Block]:
        """The next epoch's blocks (advances the epoch)."""
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        return epoch_blocks(len(self.data), self.data.block_rows, self.data.chunk_rows, gen)

    def __iter__(self):
        blocks = self.next_epoch()
        # One pair of block buffers for the epoch, refilled block after block.
        raw = np.empty((min(self.data.block_rows, len(self.data)), self.data.shape[1]), dtype=self.data.rows.dtype)
        out = torch.empty(raw.shape, dtype=torch.float32)
        # The epoch's targets in visit order, made once: per-block allocations that live while
        # training steps allocate and free around them fragment the heap, which then keeps growing.
        epoch_targets = self.targets[torch.cat([b.rows() for b in blocks]).to(self.device)]
        carry: list[tuple[torch.Tensor, torch.Tensor]] = []  # the start of a batch the last block began
        at = 0
        for block_spec in blocks:
            release_free_memory()
            block = self.data.read(block_spec.chunks, raw, out).to(self.device)
            local = block_spec.perm.to(self.device)
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


class FeatureDataModule(L.LightningDataModule):
    """Train / val feature tensors, moved once to the training device in ``setup``; or the
    training split streamed from disk by ``BlockShuffledBatches`` (val stays in memory)."""

    def __init__(self, train: tuple[torch.Tensor, torch.Tensor] | StreamedFeatures,
                 val: tuple[torch.Tensor, torch.Tensor] | None,
                 batch_size: int = 256, eval_batch_size: int = 4096, drop_last: bool = False, seed: int = 0):
        super().__init__()
        self.train_data, self.val_data = train, val
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.drop_last, self.seed = drop_last, seed
        self._train_batches: TensorBatches | BlockShuffledBatches | None = None
        self.device = torch.device("cpu")

    def setup(self, stage: str | None = None) -> None:
        self.device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        if not isinstance(self.train_data, StreamedFeatures):
            self.train_data = tuple(t.to(self.device) for t in self.train_data)
        if self.val_data is not None:
            self.val_data = tuple(t.to(self.device) for t in self.val_data)

    def train_dataloader(self) -> TensorBatches | BlockShuffledBatches:
        if self._train_batches is None:  # one object, so its epoch counter advances
            if isinstance(self.train_data, StreamedFeatures):
                self._train_batches = BlockShuffledBatches(self.train_data, self.batch_size, self.drop_last,
                                                           self.seed, self.device)
            else:
                self._train_batches = TensorBatches(*self.train_data, self.batch_size, shuffle=True,
                                                    drop_last=self.drop_last, seed=self.seed)
        return self._train_batches

    def val_dataloader(self) -> TensorBatches | list:
        if self.val_data is None:
            return []
        return TensorBatches(*self.val_data, self.eval_batch_size, shuffle=False)
