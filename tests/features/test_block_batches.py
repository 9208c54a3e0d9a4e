"""Block-shuffled streaming: every row once per epoch, shuffled within blocks and across
them, seeded, in full batches across block boundaries; one block is TensorBatches' order."""

import numpy as np
import pytest
import torch

from sealab.features.batches import (
    BlockShuffledBatches,
    TensorBatches,
    block_shuffled_order,
)
from sealab.features.ondisk import NpyRows, StreamedFeatures


def blocks_of(order: list[int], block_rows: int) -> list[list[int]]:
    chunks: list[list[int]] = []
    for row in order:
        if not chunks or row // block_rows != chunks[-1][0] // block_rows:
            chunks.append([])
        chunks[-1].append(row)
    return chunks


def test_order_hand_worked():
    """n=10 in blocks of 4: blocks {0..3}, {4..7}, {8, 9}, each visited whole."""
    order = block_shuffled_order(10, 4, torch.Generator().manual_seed(0)).tolist()
    assert sorted(order) == list(range(10))
    assert sorted(sorted(c) for c in blocks_of(order, 4)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_order_is_random_within_and_across_blocks_and_seeded():
    n, block = 1000, 100
    orders = [block_shuffled_order(n, block, torch.Generator().manual_seed(s)).tolist() for s in range(5)]
    for order in orders:
        assert sorted(order) == list(range(n))  # every row exactly once
        chunks = blocks_of(order, block)
        assert len(chunks) == n // block  # each block visited in one piece
    # Within blocks: no block is read in file order; across: the block order varies with the seed.
    assert all(chunk != sorted(chunk) for order in orders for chunk in blocks_of(order, block))
    visits = {tuple(c[0] // block for c in blocks_of(order, block)) for order in orders}
    assert len(visits) == 5 and tuple(range(10)) not in visits
    again = block_shuffled_order(n, block, torch.Generator().manual_seed(3)).tolist()
    assert again == orders[3]


def streamed(tmp_path, n, d=3, block_rows=4, dtype=np.float32):
    """Rows whose every feature is the row's index, targets = index, so batches show the order."""
    x = np.repeat(np.arange(n, dtype=dtype)[:, None], d, axis=1)
    np.save(tmp_path / "f.npy", x)
    return StreamedFeatures(NpyRows(tmp_path / "f.npy"), torch.arange(n), block_rows)


@pytest.mark.parametrize("block_rows, batch_size", [(4, 3), (3, 8), (10, 4), (7, 7)])
def test_batches_follow_the_epoch_order_in_full_batches(tmp_path, block_rows, batch_size):
    n = 23
    batches = BlockShuffledBatches(streamed(tmp_path, n, block_rows=block_rows), batch_size, seed=5)
    epochs = []
    for epoch in range(2):
        got = list(batches)
        expected = block_shuffled_order(n, block_rows, torch.Generator().manual_seed(5 + epoch))
        assert len(got) == len(batches) == -(-n // batch_size)
        assert [len(y) for _, y in got[:-1]] == [batch_size] * (len(got) - 1)
        for xb, yb in got:  # features stay paired with their targets
            assert torch.equal(xb, yb.float().unsqueeze(1).expand(-1, 3))
        epochs.append(torch.cat([y for _, y in got]))
        assert torch.equal(epochs[-1], expected)
    assert not torch.equal(epochs[0], epochs[1])


def test_drop_last(tmp_path):
    batches = BlockShuffledBatches(streamed(tmp_path, 23, block_rows=5), 4, drop_last=True)
    got = list(batches)
    assert len(got) == len(batches) == 5 and all(len(y) == 4 for _, y in got)


def test_one_block_gives_tensor_batches_exactly(tmp_path):
    data = streamed(tmp_path, 50, block_rows=50)
    memory = TensorBatches(torch.from_numpy(np.load(tmp_path / "f.npy")), torch.arange(50), 8, shuffle=True, seed=2)
    stream = BlockShuffledBatches(data, 8, seed=2)
    for _ in range(2):
        for (xs, ys), (xm, ym) in zip(stream, memory, strict=True):
            assert torch.equal(xs, xm) and torch.equal(ys, ym)
