"""One cache entry extracted by all ranks of a several-device run.

Rank zero alone looks the key up (under the cache's lock, as a single process would). On a miss
the ranks extract the shards the entry still lacks in rounds of one shard per rank (rank r the
r-th of each round: contiguous rows, none twice, no padding); rank zero gathers each round in
dataset order and writes its shards, so a killed run resumes after the last round written. The
other ranks then receive rank zero's entry.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Iterator, TypeVar

import torch

from sealab.distributed import (
    broadcast_from_zero,
    gather_rows,
    is_rank_zero,
    rank,
    world_size,
)
from sealab.features.shards import PartialEntry

log = logging.getLogger(__name__)

Entry = TypeVar("Entry")
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
Compute = Callable[[PartialEntry], None]


def get_or_compute_across_ranks(get_or_compute: Callable[[Compute], tuple[Entry, bool]], compute: Compute,
                                rows: Callable[[int, int], Batches]) -> tuple[Entry, bool]:
    """``get_or_compute(compute)`` of one cache entry, ``(entry, cache_hit)``. With several ranks
    every rank must call it; ``rows(start, stop)`` gives the feature batches of those rows."""
    if world_size() == 1:
        return get_or_compute(compute)
    if not is_rank_zero():
        plan = broadcast_from_zero(None)
        if plan is not None:  # a miss: extract this rank's shards
            for _ in _rounds(*plan, rows):
                pass
        return broadcast_from_zero(None)

    def compute_together(partial: PartialEntry) -> None:
        first = partial.finished()
        if first:
            log.info("resuming extraction into %s after %d finished shards", partial.path, first)
        plan = broadcast_from_zero((first, partial.num_shards, partial.shard_rows, partial.n))
        partial.extend(_rounds(*plan, rows))

    entry, hit = get_or_compute(compute_together)
    if hit:
        broadcast_from_zero(None)  # nothing to extract
    return broadcast_from_zero((entry, hit))


def _rounds(first: int, num_shards: int, shard_rows: int, n: int,
            rows: Callable[[int, int], Batches]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shards ``first..num_shards-1``, one per rank per round; yields each round's rows, in
    dataset order, on rank zero (the other ranks yield nothing)."""
    ranks = world_size()
    for base in range(first, num_shards, ranks):
        bounds = round_rows(base, ranks, shard_rows, n)
        sizes = [stop - start for start, stop in bounds]
        start, stop = bounds[rank()]
        x, y = _cat(rows(start, stop)) if stop > start else (None, None)
        x, y = gather_rows(x, sizes), gather_rows(y, sizes)
        if x is not None:
            yield x, y


def round_rows(base: int, ranks: int, shard_rows: int, n: int) -> list[tuple[int, int]]:
    """The rows ``[start, stop)`` of each rank in the round of shards ``base .. base + ranks - 1``
    of an ``n``-row split (empty past the last shard)."""
    return [(min(s * shard_rows, n), min((s + 1) * shard_rows, n)) for s in range(base, base + ranks)]


def _cat(batches: Batches) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*batches)
    return torch.cat(xs), torch.cat(ys)
