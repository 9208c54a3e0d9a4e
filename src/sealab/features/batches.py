"""Training batches of features: in-memory tensors by index slicing, or a feature file
streamed by shuffled blocks."""

from __future__ import annotations

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


def block_shuffled_order(n: int, block_rows: int, gen: torch.Generator) -> torch.Tensor:
    """An epoch's row order: every row once, shuffled within its block of ``block_rows``
    consecutive rows, the blocks in random order. The within-block permutations are drawn
    first, in file order, so with a single block (``block_rows >= n``) the order is
    ``randperm(n)``, the one ``TensorBatches`` draws from the same generator."""
    within = [start + torch.randperm(min(block_rows, n - start), generator=gen)
              for start in range(0, n, block_rows)]
    visit = torch.randperm(len(within), generator=gen).tolist()
    return torch.cat([within[b] for b in visit]) if within else torch.empty(0, dtype=torch.long)


class BlockShuffledBatches:
    """Batches of a ``StreamedFeatures`` split in ``block_shuffled_order``, read one block at
    a time: each block is read whole into a buffer, converted to float32 and normalised in
    place on the CPU, moved to ``device`` and then cut into batches by index (copies), exactly
    as ``TensorBatches`` cuts the whole matrix. A batch may span two blocks, so every batch but
    the last is full.

    Resident memory beyond the model stays about ``block_rows x d x (4 + itemsize)`` bytes (the
    two block buffers, reused all epoch), plus a few batches and the epoch's order and targets
    (16 bytes per row), whatever the size of the file. Epochs are seeded with ``seed + epoch``:
    reproducible, and every epoch differs.
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

    def epoch_order(self) -> torch.Tensor:
        """The next epoch's row order (advances the epoch)."""
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        return block_shuffled_order(len(self.data), self.data.block_rows, gen)

    def __iter__(self):
        order, size, n = self.epoch_order(), self.data.block_rows, len(self.data)
        # One pair of block buffers for the epoch, refilled block after block.
        raw = np.empty((min(size, n), self.data.shape[1]), dtype=self.data.rows.dtype)
        out = torch.empty(raw.shape, dtype=torch.float32)
        carry: list[tuple[torch.Tensor, torch.Tensor]] = []  # the start of a batch the last block began
        pos = 0
        while pos < n:
            start = int(order[pos]) // size * size  # the block's first row; the last block is short
            rows = order[pos:pos + min(size, n - start)]  # its rows, shuffled
            pos += len(rows)
            block = self.data.read(start, start + len(rows), raw, out).to(self.device)
            local, targets = (rows - start).to(self.device), self.targets[rows.to(self.device)]
            i = 0
            if carry:  # finish the batch the previous block began
                i = self.batch_size - sum(len(y) for _, y in carry)
                carry.append((block.index_select(0, local[:i]), targets[:i]))
                if sum(len(y) for _, y in carry) < self.batch_size:  # a block smaller than a batch
                    continue
                yield torch.cat([x for x, _ in carry]), torch.cat([y for _, y in carry])
                carry = []
            for i in range(i, len(rows), self.batch_size):
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
