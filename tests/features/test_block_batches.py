"""Block-shuffled streaming: every row once per epoch, shuffled within blocks and across
them, blocks gathered from chunks all over the file, seeded, in full batches across block
boundaries; a single block gives the in-memory order (randperm); a file changed between epochs stops
training."""

import os

import numpy as np
import pytest
import torch

from sealab.features.batches import (
    BlockShuffledBatches,
    FileBlocks,
    MemoryBlocks,
    epoch_blocks,
)
from sealab.features.ondisk import FileChangedError, NpyRows, StreamedFeatures


def order_of(blocks) -> list[int]:
    return torch.cat([b.rows() for b in blocks]).tolist()


def test_contiguous_blocks_hand_worked():
    """n=10 in blocks of 4 (one chunk each): blocks {0..3}, {4..7}, {8, 9}, each visited whole."""
    blocks = epoch_blocks(10, 4, 4, torch.Generator().manual_seed(0))
    assert sorted(b.chunks for b in blocks) == [[(0, 4)], [(4, 8)], [(8, 10)]]
    order = order_of(blocks)
    assert sorted(order) == list(range(10))
    assert [sorted(order[0:len(blocks[0].perm)])] == [list(range(*blocks[0].chunks[0]))]


def test_chunked_blocks_hand_worked():
    """n=10, chunks of 2 (five chunks, all full), blocks of 4 rows: two blocks of two chunks and a
    last block of one chunk, chunks listed in file order within a block."""
    blocks = epoch_blocks(10, 4, 2, torch.Generator().manual_seed(1))
    assert sorted(len(b.chunks) for b in blocks) == [1, 2, 2]
    chunks = sorted(c for b in blocks for c in b.chunks)
    assert chunks == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
    assert all(b.chunks == sorted(b.chunks) for b in blocks)
    for b in blocks:  # perm indexes the block as read, chunk after chunk
        assert sorted(b.perm.tolist()) == list(range(sum(e - s for s, e in b.chunks)))


def test_short_last_chunk_and_every_row_once():
    for n, block, chunk in [(23, 6, 3), (23, 6, 2), (5, 8, 4), (100, 10, 10), (1, 4, 2)]:
        blocks = epoch_blocks(n, block, chunk, torch.Generator().manual_seed(n))
        assert sorted(order_of(blocks)) == list(range(n)), (n, block, chunk)
        assert all(len(b.perm) <= block for b in blocks)


def block_runs(order: list[int], block_rows: int) -> list[list[int]]:
    runs: list[list[int]] = []
    for row in order:
        if not runs or row // block_rows != runs[-1][0] // block_rows:
            runs.append([])
        runs[-1].append(row)
    return runs


def test_order_is_random_within_and_across_blocks_and_seeded():
    n, block = 1000, 100
    orders = [order_of(epoch_blocks(n, block, block, torch.Generator().manual_seed(s))) for s in range(5)]
    for order in orders:
        assert sorted(order) == list(range(n))  # every row exactly once
        assert len(block_runs(order, block)) == n // block  # each block visited in one piece
    # Within blocks: no block is read in file order; across: the block order varies with the seed.
    assert all(run != sorted(run) for order in orders for run in block_runs(order, block))
    visits = {tuple(run[0] // block for run in block_runs(order, block)) for order in orders}
    assert len(visits) == 5 and tuple(range(10)) not in visits
    assert order_of(epoch_blocks(n, block, block, torch.Generator().manual_seed(3))) == orders[3]


def test_chunks_mix_a_class_sorted_file():
    """Rows sorted by class (100 rows a class): contiguous blocks of 100 rows hold one class each,
    blocks of 10 chunks of 10 rows hold several."""
    n, block = 1000, 100
    classes = lambda blocks: [len({r // 100 for r in b.rows().tolist()}) for b in blocks]  # noqa: E731
    assert classes(epoch_blocks(n, block, block, torch.Generator().manual_seed(0))) == [1] * 10
    mixed = classes(epoch_blocks(n, block, 10, torch.Generator().manual_seed(0)))
    assert min(mixed) >= 4


def streamed(tmp_path, n, d=3, block_rows=4, chunk_rows=None, dtype=np.float32):
    """Rows whose every feature is the row's index, targets = index, so batches show the order."""
    x = np.repeat(np.arange(n, dtype=dtype)[:, None], d, axis=1)
    np.save(tmp_path / "f.npy", x)
    return FileBlocks(StreamedFeatures(NpyRows(tmp_path / "f.npy"), torch.arange(n), block_rows, chunk_rows))


@pytest.mark.parametrize("block_rows, chunk_rows, batch_size", [(4, 4, 3), (3, 3, 8), (10, 5, 4), (7, 7, 7),
                                                                (6, 2, 4)])
def test_batches_follow_the_epoch_order_in_full_batches(tmp_path, block_rows, chunk_rows, batch_size):
    n = 23
    batches = BlockShuffledBatches(streamed(tmp_path, n, block_rows=block_rows, chunk_rows=chunk_rows),
                                   batch_size, seed=5)
    epochs = []
    for epoch in range(2):
        got = list(batches)
        expected = order_of(epoch_blocks(n, block_rows, chunk_rows, torch.Generator().manual_seed(5 + epoch)))
        assert len(got) == len(batches) == -(-n // batch_size)
        assert [len(y) for _, y in got[:-1]] == [batch_size] * (len(got) - 1)
        for xb, yb in got:  # features stay paired with their targets
            assert torch.equal(xb, yb.float().unsqueeze(1).expand(-1, 3))
        epochs.append(torch.cat([y for _, y in got]).tolist())
        assert epochs[-1] == expected
    assert epochs[0] != epochs[1]


def test_drop_last(tmp_path):
    batches = BlockShuffledBatches(streamed(tmp_path, 23, block_rows=5), 4, drop_last=True)
    got = list(batches)
    assert len(got) == len(batches) == 5 and all(len(y) == 4 for _, y in got)


def test_one_block_gives_in_memory_batches_exactly(tmp_path):
    data = streamed(tmp_path, 50, block_rows=64, chunk_rows=16)
    memory = BlockShuffledBatches(MemoryBlocks(torch.from_numpy(np.load(tmp_path / "f.npy")), torch.arange(50)), 8,
                                  seed=2)
    stream = BlockShuffledBatches(data, 8, seed=2)
    order = torch.randperm(50, generator=torch.Generator().manual_seed(2))  # the first epoch: randperm(n)
    assert torch.equal(torch.cat([y for _, y in BlockShuffledBatches(data, 8, seed=2)]), order)
    for _ in range(2):
        for (xs, ys), (xm, ym) in zip(stream, memory, strict=True):
            assert torch.equal(xs, xm) and torch.equal(ys, ym)


def test_an_epoch_after_the_file_changed_stops_instead_of_training_on_other_rows(tmp_path):
    data = streamed(tmp_path, 23, block_rows=5)
    path = data.data.rows.path
    past = path.stat().st_mtime_ns - 3600 * 10**9  # written long before training, as a cache entry is
    os.utime(path, ns=(past, past))
    batches = BlockShuffledBatches(FileBlocks(StreamedFeatures(NpyRows(path), torch.arange(23), 5)), 4)
    assert len(list(batches)) == 6
    rows = np.load(path, mmap_mode="r+")
    rows[:5] = -1  # a stray writer, between two epochs
    rows.flush()
    del rows
    with pytest.raises(FileChangedError, match=f"{path} changed on disk"):
        list(batches)
