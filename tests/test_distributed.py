"""Several devices: shard bounds, gathering in dataset order, one writer of the feature cache
(a 2-process gloo group), and a whole run on 2 CPU processes (subprocess)."""

# Kept light: the spawned ranks import this module (helpers, imported where used, pulls in Lightning).
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from omegaconf import OmegaConf

from sealab.checks import rule_violations
from sealab.device import check_devices, rank_device, trainer_placement
from sealab.distributed import gather_rows, launch
from sealab.features.cache import FeatureCache, cache_key
from sealab.features.sharded import get_or_compute_across_ranks, round_rows
from sealab.features.shards import PartialEntry


def test_round_rows_hand_worked():
    # 7 rows in shards of 2 (shards 0-3) over 2 ranks: rank 0 takes shards 0 and 2, rank 1 shards 1 and 3
    assert [round_rows(base, 2, 2, 7) for base in (0, 2)] == [[(0, 2), (2, 4)], [(4, 6), (6, 7)]]
    # resumed after shard 0: the last round has no shard for rank 1
    assert [round_rows(base, 2, 2, 7) for base in (1, 3)] == [[(2, 4), (4, 6)], [(6, 7), (7, 7)]]


@pytest.mark.parametrize("n,shard_rows", [(1, 4), (7, 2), (10, 5), (1001, 64)])
@pytest.mark.parametrize("ranks", [1, 2, 3, 8])
@pytest.mark.parametrize("first", [0, 1])
def test_rounds_cover_the_missing_rows_once_in_order(n, shard_rows, ranks, first):
    num_shards = -(-n // shard_rows)
    rows = [i for base in range(first, num_shards, ranks)
            for start, stop in round_rows(base, ranks, shard_rows, n) for i in range(start, stop)]
    assert rows == list(range(min(first * shard_rows, n), n))  # in order, no duplicate, none left out


def test_devices_setting():
    cpu = torch.device("cpu")
    assert check_devices(2, cpu) == 2
    for bad in (0, -1, 1.5, "2", True):
        assert rule_violations(OmegaConf.create({"devices": bad})) == [
            f"devices={bad!r}: must be an integer >= 1"]
    with pytest.raises(ValueError, match="devices=1"):
        check_devices(2, torch.device("mps"))
    assert rank_device(torch.device("cuda", 0), 2, 1) == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="device=cuda"):
        rank_device(torch.device("cuda", 1), 2, 0)
    assert trainer_placement(cpu, 2) == {"accelerator": "cpu", "devices": 2, "strategy": "ddp"}
    assert trainer_placement(cpu) == {"accelerator": "cpu", "devices": 1}


def test_several_devices_inside_a_multirun_are_refused(tmp_path):
    from helpers import compose_train
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import read_write

    cfg = compose_train(["devices=2"], output_dir=tmp_path)
    with read_write(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    try:
        with pytest.raises(ValueError, match=r"devices=2 .* multirun \(-m\)"):
            launch(2, torch.device("cpu"))
    finally:  # later tests of this process see a single run again
        with read_write(cfg.hydra):
            cfg.hydra.mode = RunMode.RUN
        HydraConfig.instance().set_config(cfg)
    assert not dist.is_initialized()


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


def test_two_cpu_processes_run_equals_one_process_run(tmp_path):
    """devices=2 on the CPU (gloo) on digits, whose splits (819 / 205 / 773 images) do not divide
    by 2, with shards of 128 images (train: 7 shards, so rank 1 has none in the last round):
    the cached features are byte-identical to a one-process extraction, the probe (trained on
    rank zero) gives the same classifier and metrics, and the outputs are written once."""
    from helpers import compose_train, metrics_files, read_metrics, run_train
    from omegaconf import open_dict

    from sealab.experiment import run

    settings = ["method=linear", "method.epochs=2", "extract.shard_size=128", "num_threads=1", "device=cpu",
                "trainer.enable_progress_bar=false"]
    two = run_train(tmp_path, "devices=2", *settings)
    cfg = compose_train(settings, output_dir=tmp_path / "one")  # the same run in this one process
    with open_dict(cfg):
        cfg.paths.cache_dir = str(tmp_path / "one_cache")
    one = run(cfg)
    (metrics,) = metrics_files(tmp_path / "outputs")
    record = read_metrics(metrics)
    assert record["devices"] == 2 and not record["cache_hit"]
    assert record["metrics"] == one["metrics"]
    two_head, one_head = (torch.load(d / "classifier.pt") for d in (metrics.parent, tmp_path / "one"))
    assert two_head.keys() == one_head.keys()
    assert all(torch.equal(two_head[k], one_head[k]) for k in two_head)
    # Byte-identical cache entries under the same keys: same rows, same order, nothing padded.
    entries = sorted((tmp_path / "cache/features").glob("*/features.npy"))
    assert len(entries) == 3
    for features in entries:
        for name in ("features.npy", "labels.npy"):
            assert (features.parent / name).read_bytes() == \
                (tmp_path / "one_cache" / features.parent.name / name).read_bytes()
    # Rank 1 ran in the same run dir (its Hydra log is there); rank zero alone wrote the outputs.
    assert (metrics.parent / "train_ddp_process_1.log").is_file()
    assert len(list((tmp_path / "outputs").rglob("metrics.csv"))) == 1
    assert two.stdout.count("test/top1 *") == 1  # the console table, printed once


@pytest.mark.slow
def test_finetune_on_two_cpu_processes_joins_the_launched_group(tmp_path):
    """method=finetune with devices=2: the Trainer made through ctx.make_trainer runs DDP inside
    the two launched processes (one process group, set up once) and rank zero records once."""
    from helpers import metrics_files, read_metrics, run_train

    proc = run_train(tmp_path, "devices=2", "device=cpu", "method=finetune", "method.steps=3",
                     "method.batch_size=16", "backbone=resnet10t_random_init")
    # Lightning announces each process group it sets up; the Trainer's found one in place.
    assert proc.stdout.count("All distributed processes registered") == 1
    (metrics,) = metrics_files(tmp_path / "outputs")
    assert read_metrics(metrics)["devices"] == 2
    assert len(list((tmp_path / "outputs").rglob("last.ckpt"))) == 1
    assert proc.stdout.count("test/top1 *") == 1
