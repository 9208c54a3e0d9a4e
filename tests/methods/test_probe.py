"""The probe's data path and training loop: reproducible, complete, on the right data."""

from functools import partial

import lightning as L
import torch
import torch.nn.functional as F
from helpers import fit_context

from sealab.features.batches import BlockShuffledBatches, InOrder, MemoryBlocks
from sealab.heads.linear import LinearHead
from sealab.methods.probe import LinearProbe
from sealab.task import MultiClass


def test_each_epoch_visits_every_example_once_in_a_new_order():
    x, y = torch.arange(10.0).unsqueeze(1), torch.arange(10)
    batches = BlockShuffledBatches(MemoryBlocks(x, y), batch_size=4, seed=3)
    epochs = [torch.cat([b[1] for b in batches]) for _ in range(2)]
    assert len(batches) == 3
    for order in epochs:
        assert sorted(order.tolist()) == list(range(10))
    assert not torch.equal(epochs[0], epochs[1])
    again = BlockShuffledBatches(MemoryBlocks(x, y), batch_size=4, seed=3)
    assert torch.equal(torch.cat([b[1] for b in again]), epochs[0])
    for xb, yb in again:  # features stay paired with their labels
        assert torch.equal(xb.squeeze(1).long(), yb)


def test_drop_last_and_in_order_batches():
    x, y = torch.zeros(10, 2), torch.arange(10)
    assert [len(b[1]) for b in BlockShuffledBatches(MemoryBlocks(x, y), 4, drop_last=True)] == [4, 4]
    assert [len(b[1]) for b in BlockShuffledBatches(MemoryBlocks(x, y), 4)] == [4, 4, 2]
    assert torch.cat([b[1] for b in InOrder(x, y, 4)]).tolist() == list(range(10))


def blobs(n=120, d=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = F.normalize(torch.randn(3, d, generator=gen)[y] * 3 + torch.randn(n, d, generator=gen), dim=1)
    return x, y


def probe(epochs=5, lr=0.5):
    return LinearProbe("linear", head=partial(LinearHead), epochs=epochs, batch_size=32,
                       optimizer=partial(torch.optim.SGD, lr=lr, momentum=0.9))


def test_probe_matches_a_plain_sgd_loop():
    """Same init, same batches, same updates as a hand-written loop."""
    x, y = blobs()
    L.seed_everything(0)
    head = probe().fit((x, y), None, fit_context()).scorer
    L.seed_everything(0)
    ref = LinearHead(8, MultiClass(3))
    opt = torch.optim.SGD(ref.parameters(), lr=0.5, momentum=0.9)
    for epoch in range(5):
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch))  # seed 0 + epoch
        for xb, yb in zip(x[order].split(32), y[order].split(32)):
            opt.zero_grad()
            ref.loss(ref(xb), yb).backward()
            opt.step()
    torch.testing.assert_close(head.weight, ref.weight)


def test_probe_is_deterministic_and_learns():
    x, y = blobs()
    weights = []
    for _ in range(2):
        L.seed_everything(0)
        weights.append(probe().fit((x, y), (x, y), fit_context()).scorer.weight)
    assert torch.equal(weights[0], weights[1])
    assert ((x @ weights[0].T).argmax(1) == y).float().mean() > 0.9
