"""Several devices: shard bounds, gathering in dataset order, one writer of the feature cache
(a 2-process gloo group), and a whole run on 2 CPU processes (subprocess)."""

# Kept light: the spawned ranks import this module (helpers, imported where used, pulls in Lightning).
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from omegaconf import OmegaConf

from sealab.checks import RULES, rule_violations
from sealab.device import check_devices, rank_device, trainer_placement
from sealab.distributed import gather_rows, shard_bounds
from sealab.features.cache import FeatureCache, cache_key
from sealab.features.sharded import get_or_compute_across_ranks
from sealab.features.shards import PartialEntry


def test_shard_bounds_hand_worked():
    assert shard_bounds(7, 2) == [(0, 3), (3, 7)]
    assert shard_bounds(5, 3) == [(0, 1), (1, 3), (3, 5)]
    assert shard_bounds(1, 2) == [(0, 0), (0, 1)]


@pytest.mark.parametrize("n", [0, 1, 2, 9, 10, 1001])
@pytest.mark.parametrize("ranks", [1, 2, 3, 8])
def test_shards_cover_every_row_once(n, ranks):
    bounds = shard_bounds(n, ranks)
    rows = [i for start, stop in bounds for i in range(start, stop)]
    assert rows == list(range(n))  # in order, no duplicate, none left out
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_devices_setting():
    cpu = torch.device("cpu")
    assert check_devices(2, cpu) == 2
    for bad in (0, -1, 1.5, "2", True):
        assert rule_violations(OmegaConf.create({"devices": bad}), RULES) == [
            f"devices={bad!r}: must be an integer >= 1"]
    with pytest.raises(ValueError, match="devices=1"):
        check_devices(2, torch.device("mps"))
    assert rank_device(torch.device("cuda", 0), 2, 1) == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="device=cuda"):
        rank_device(torch.device("cuda", 1), 2, 0)
    assert trainer_placement(cpu, 2) == {"accelerator": "cpu", "devices": 2, "strategy": "ddp"}
    assert trainer_placement(cpu) == {"accelerator": "cpu", "devices": 1}


N, DIM, SHARD = 7, 3, 2  # 4 shards of an odd split: shards 0, 2 to rank 0, shards 1, 3 to rank 1


def _reference() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.arange(N * DIM, dtype=torch.float32).view(N, DIM) / 10
    return x, torch.arange(N) % 3


def _two_ranks(rank: int, store: str, cache_dir: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        x, y = _reference()
        sizes = [3, 4]
        mine = x[:3] if rank == 0 else x[3:]
        gathered = gather_rows(mine, sizes, chunk_rows=2)  # 2 chunks, rank 0's second one padded
        computed = []

        def rows(start, stop):
            computed.append((start, stop))
            return [(x[start:stop], y[start:stop])]  # one batch, as iter_features gives them

        cache = FeatureCache(cache_dir)
        results = {}
        for name in ("fresh", "resumed", "fresh"):
            results.setdefault(name, []).append(get_or_compute_across_ranks(
                lambda compute: cache.get_or_compute({"k": name}, compute, N, "float32", SHARD),
                _single_process_compute, rows))
            computed.append(None)
        loaded = {name: [(entry.load(), hit) for entry, hit in found] for name, found in results.items()}
        torch.save({"gathered": gathered, "loaded": loaded, "computed": computed}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _single_process_compute(partial):
    raise AssertionError("with two ranks the extraction is shared")


def test_sharded_extraction_with_two_gloo_processes(tmp_path):
    """The ranks extract alternate shards; rank zero gathers them in dataset order and writes the
    one cache entry, which the other rank receives; a partial entry resumes after its finished
    shard; a second lookup is a hit on both ranks and computes nothing."""
    x, y = _reference()
    cache = FeatureCache(tmp_path / "cache")
    partial = PartialEntry(cache.root / f"{cache_key({'k': 'resumed'})}.partial", N, SHARD, "float32")
    partial.write(0, x[:2].numpy(), y[:2].numpy())  # a killed run finished shard 0
    mp.spawn(_two_ranks, args=(str(tmp_path / "store"), str(cache.root), str(tmp_path)), nprocs=2)
    zero, one = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert torch.equal(zero["gathered"], x) and one["gathered"] is None
    # fresh: rounds of shards (0, 1) and (2, 3); resumed: (1, 2) and (3, -); fresh again: a hit
    assert zero["computed"] == [(0, 2), (4, 6), None, (2, 4), (6, 7), None, None]
    assert one["computed"] == [(2, 4), (6, 7), None, (4, 6), None, None]
    for result in (zero, one):
        assert [hit for _, hit in result["loaded"]["fresh"]] == [False, True]
        assert [hit for _, hit in result["loaded"]["resumed"]] == [False]
        for (fx, fy), _ in result["loaded"]["fresh"] + result["loaded"]["resumed"]:
            assert torch.equal(fx, x) and torch.equal(fy, y)  # exact, in dataset order
    assert sorted(p.name for p in cache.root.iterdir() if p.is_dir()) == sorted(
        cache_key({"k": k}) for k in ("fresh", "resumed"))  # finished entries, no partial left
