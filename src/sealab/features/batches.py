"""In-memory feature tensors served in shuffled batches by index slicing."""

from __future__ import annotations

import lightning as L
import torch


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


class FeatureDataModule(L.LightningDataModule):
    """Train / val feature tensors, moved once to the training device in ``setup``."""

    def __init__(self, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor] | None,
                 batch_size: int = 256, eval_batch_size: int = 4096, drop_last: bool = False, seed: int = 0):
        super().__init__()
        self.train_data, self.val_data = train, val
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.drop_last, self.seed = drop_last, seed
        self._train_batches: TensorBatches | None = None

    def setup(self, stage: str | None = None) -> None:
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        self.train_data = tuple(t.to(device) for t in self.train_data)
        if self.val_data is not None:
            self.val_data = tuple(t.to(device) for t in self.val_data)

    def train_dataloader(self) -> TensorBatches:
        if self._train_batches is None:  # one object, so its epoch counter advances
            self._train_batches = TensorBatches(*self.train_data, self.batch_size, shuffle=True,
                                                drop_last=self.drop_last, seed=self.seed)
        return self._train_batches

    def val_dataloader(self) -> TensorBatches | list:
        if self.val_data is None:
            return []
        return TensorBatches(*self.val_data, self.eval_batch_size, shuffle=False)
