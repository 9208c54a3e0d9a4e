"""``python -m sealab.bench --quick`` end to end: every field of the JSON is filled (no timing checks)."""

import json
import math
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import CONF_DIR
from torch import nn

from sealab.augment.sea import SeA
from sealab.bench import plain_loops
from sealab.bench.cli import TARGETS, main
from sealab.bench.contention import PROC_STAT, OtherProcessesShare
from sealab.bench.gpu import NO_CUDA
from sealab.bench.measure import SEALAB_METHODS, VARIANTS, Setup, compile_figures, floor_macs
from sealab.bench.scaling import SCALING_QUICK, linearity, write_features
from sealab.bench.startup import FLOORS, import_seconds, spread
from sealab.bench.study import DATASETS, Costs, StudyDataset, project, shapes, split_epoch
from sealab.features.ondisk import NpyRows
from sealab.heads.linear import LinearHead
from sealab.task import MultiClass


def _positive(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


@pytest.mark.slow  # four sealab-train commands and every timing: ~30 s idle, 90 s on a busy machine
def test_quick_bench_writes_every_field(tmp_path, monkeypatch):
    out = tmp_path / "nested" / "results.json"
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where the scaling files go
    main(["--quick", "--out", str(out)])
    results = json.loads(out.read_text())

    setup = results["setup"]
    assert setup["quick"] is True
    assert all(setup[k] > 0 for k in ("n", "d", "num_classes", "batch_size", "epochs", "rounds",
                                      "torch_threads"))
    assert set(results["seconds_per_epoch"]) == set(VARIANTS)
    assert all(_positive(s) for s in results["seconds_per_epoch"].values())
    overhead = results["overhead"]
    assert (overhead["setup"]["d"], overhead["setup"]["num_classes"], overhead["setup"]["torch_threads"]) == (64, 10, 1)
    assert set(overhead["seconds_per_epoch"]) == set(overhead["ms_per_step"]) == set(VARIANTS)
    assert all(_positive(s) for s in overhead["ms_per_step"].values())
    assert results["setup"]["torch_threads"] == torch.get_num_threads()  # one thread only while measuring overhead
    assert set(results["epoch_seconds"]) == set(VARIANTS)
    for regime, per_epoch in (("matmul_bound", results["seconds_per_epoch"]), ("overhead_bound", overhead["seconds_per_epoch"])):
        with_control, alone = per_epoch["sealab_sea_clean_with_control"], per_epoch["sealab_sea_clean"]
        assert results["control_share_of_sea_epoch"][regime] == pytest.approx((with_control - alone) / with_control)
        compiled = results["compile"][regime]
        assert compiled["compiled_over_eager"] == pytest.approx(
            per_epoch["sealab_sea_clean_compiled"] / per_epoch["sealab_sea_clean_eager"])
        assert _positive(compiled["default_over_eager"]) and math.isfinite(compiled["compile_seconds"])
    for name, rounds in results["epoch_seconds"].items():
        assert len(rounds) == setup["rounds"], name
        for seconds in rounds:
            assert len(seconds) == 1 + setup["epochs"], name  # warm-up + measured epochs
            assert all(_positive(s) for s in seconds), name
    assert set(results["targets"]) == {t.name for t in TARGETS}
    for target in results["targets"].values():
        assert _positive(target["limit"]) and isinstance(target["pass"], bool)
        if target["denominator"] is None:  # an absolute limit, in seconds
            assert target["seconds"] == results["timings"][target["numerator"]]
            assert target["pass"] == (target["seconds"] <= target["limit"])
            continue
        assert _positive(target["ratio"])
        expected = results["timings"][target["numerator"]] / results["timings"][target["denominator"]]
        assert math.isclose(target["ratio"], expected)
    startup = results["startup"]
    assert startup["repeats"] == 1 and len(startup["cached_tiny_job"]["runs"]) == 1
    assert set(startup["floors"]) == set(FLOORS)
    assert all(_positive(s["median"]) for s in (startup["cached_tiny_job"], *startup["floors"].values()))
    assert results["timings"]["startup_cached_tiny_job"] == startup["cached_tiny_job"]["median"]
    assert "torch" in startup["job_imports"]["by_package"] and _positive(startup["job_imports"]["total"])
    assert set(results["command_seconds"]) == {"grid_command", "separate_commands"}
    assert all(_positive(s) for s in results["command_seconds"].values())
    assert results["floor"]["sea_clean_over_linear"] > 1
    assert set(results["extraction_seconds_per_1000_images"]) == {"plain_extraction", "sealab_extraction"}
    assert not list(out.parent.glob(".*.tmp"))  # the atomic write left no temp file
    share = results["machine"]["other_processes_cpu_share"]
    assert share is None or 0 <= share <= 1
    scaling = results["scaling"]
    assert [r["n"] for r in scaling["runs"]] == list(SCALING_QUICK.sizes)
    for run in scaling["runs"]:
        assert _positive(run["cpu_epoch_seconds"]) and _positive(run["cpu_over_floor"])
        assert run["peak_rss_mib"] is None or run["peak_rss_mib"] > 0
    # The fitted slope's sign is the machine's load at the quick sizes, not the bench's
    # correctness (test_linearity_hand_worked checks the fit itself): only its presence here.
    assert math.isfinite(scaling["cpu"]["seconds_per_10k_rows"]) and scaling["cpu"]["r2"] <= 1
    assert not list((tmp_path / "tmp").glob("sealab-scaling-*"))  # the feature files are gone


def test_floor_multiply_adds_hand_worked():
    """B=256, C=100, d=2048 (d >= B: Gram matrix and Q G) and d=64 (d < B: Q X)."""
    big = floor_macs(Setup(d=2048, num_classes=100, grid_size=8))
    linear = 2 * 256 * 100 * 2048
    gram = 3 * 256 * 256 * 2048 // 4  # three of its four blocks
    sea = linear + gram + 256**3 + 100 * 100 * 2048 + 256 * 100 * 100 + 3 * 256 * 256 * 100
    assert big == {"linear": linear, "sea_clean": sea, "published_sea": 5 * 256 * 100 * 2048 + 2 * 256 * 256 * 2048,
                   "sea_grid": 8 * sea - 7 * gram}
    small = floor_macs(Setup(d=64, num_classes=10, grid_size=8))
    one = 2 * 256 * 10 * 64 + 256 * 256 * 64 + 10 * 10 * 64 + 256 * 10 * 10 + 3 * 256 * 256 * 10
    assert small["sea_clean"] == one and small["sea_grid"] == 8 * one


def test_startup_spread_is_the_median_and_range():
    assert spread([3.0, 1.0, 2.0, 10.0, 2.5]) == {"median": 2.5, "min": 1.0, "max": 10.0,
                                                  "runs": [3.0, 1.0, 2.0, 10.0, 2.5]}
    assert spread([4.0, 2.0])["median"] == 3.0


def test_import_seconds_sums_each_packages_own_time():
    """Self times (first column) summed per top-level package; cumulative times and the header
    ignored, as are lines that are not importtime's."""
    log = """import time: self [us] | cumulative | imported package
import time:       100 |        100 |     torch._C
import time:      2000 |       2100 |   torch
import time:       300 |        300 |     torchvision.ops
import time:       700 |       3100 |   torchvision
import time:        50 |       3150 | lightning.fabric
[2026-12-07 01:00:00][INFO] - a log line of the job
import time:        25 |         25 | lightning
"""
    result = import_seconds(log, top=2)
    assert result["by_package"] == pytest.approx({"torch": 2100e-6, "torchvision": 1000e-6})
    assert math.isclose(result["total"], 3175e-6)


def test_compile_figures_hand_worked():
    """Per epoch: compiled 1 s, eager 2 s, the default 2.5 s; the compiled variant's warm-up
    epochs (which compile) 11, 13 and 12 s: compiling costs their median less a measured epoch."""
    per_epoch = {"sealab_sea_clean_eager": 2.0, "sealab_sea_clean_compiled": 1.0, "sealab_sea_clean": 2.5}
    epochs = {"sealab_sea_clean_compiled": [[11.0, 1.0], [13.0, 1.0], [12.0, 1.0]]}
    assert compile_figures(per_epoch, epochs) == {"compiled_over_eager": 0.5, "default_over_eager": 1.25,
                                                  "compile_seconds": 11.0}


def test_linearity_hand_worked():
    """t = 2 s + 0.5 s per 10k rows: slope 0.5, R^2 1; per-row time 2.5/20k over 3/40k = 5/3.
    A superlinear point lowers R^2."""
    fit = linearity([10_000, 20_000, 40_000], [2.5, 3.0, 4.0])
    assert math.isclose(fit["seconds_per_10k_rows"], 0.5) and math.isclose(fit["intercept_seconds"], 2.0)
    assert math.isclose(fit["r2"], 1.0) and math.isclose(fit["per_row_largest_over_smallest"], (4 / 40) / (2.5 / 10))
    assert linearity([1, 2, 3], [1.0, 2.0, 9.0])["r2"] < 0.9


def test_written_features_are_the_streamed_rows(tmp_path):
    path = write_features(tmp_path / "f.npy", n=1000, d=8, seed=3, chunk_rows=300)
    x = np.load(path)
    assert x.shape == (1000, 8) and x.dtype == np.float16
    assert abs(float(x.astype(np.float64).std()) - 1) < 0.05  # N(0, 1), every chunk filled
    np.testing.assert_array_equal(NpyRows(path).read(0, 1000), x)


def test_published_loop_direction_is_sea_faithful():
    """The baseline's autograd-based step lands where sealab's closed-form faithful SeA does."""
    gen = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(32, 16, generator=gen), dim=1)
    y = torch.randint(5, (32,), generator=gen)
    head = LinearHead(16, MultiClass(5), lamda=plain_loops.LAMDA)
    model = nn.Linear(16, 5, bias=False)
    model.weight.data.copy_(head.weight.data)

    published = F.normalize(x + plain_loops.ETA * plain_loops.published_direction(x.clone(), y, model), dim=1)
    with torch.no_grad():
        ours, _ = SeA(eta=plain_loops.ETA, alpha=plain_loops.ALPHA, mode="faithful").augment(x, y, head)
    torch.testing.assert_close(published, ours)


@pytest.mark.skipif(not PROC_STAT.exists(), reason="needs Linux /proc/stat")
def test_a_competing_process_is_seen():
    """A child that burns half a second of CPU while we wait for it: its CPU time is counted as
    other processes' time, however long a busy machine takes to give it that half second."""
    spin = "import time\nwhile time.process_time() < 0.5: pass"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with OtherProcessesShare() as others:
        subprocess.run([sys.executable, "-c", spin], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    assert child >= 0.5
    assert others.seconds >= 0.9 * child  # /proc/stat counts in clock ticks: a few may fall outside
    assert 0 < others.share <= 1


def test_the_sea_rows_train_no_control_head_but_the_one_named_with_control():
    sea = {name: overrides for name, overrides in SEALAB_METHODS.items() if name.startswith("sealab_sea")}
    assert {"sealab_sea_clean", "sealab_sea_clean_with_control"} <= set(sea)
    for name, overrides in sea.items():
        assert ("method.control=false" in overrides) != name.endswith("_with_control"), name


def test_study_projection_hand_worked():
    """a: 600 images, ceil(600/256) = 3 steps an epoch, 2 seeds x 3 epochs: 18 steps at 0.5 s,
    6 epochs at 0.25 s, 2 fits at 1 s = 12.5 s. b: 256 images, 1 step: 6 steps at 1 s, 6 epochs
    at 0 s, 2 fits at 2 s = 10 s. Total 22.5 s: over a 20 s goal, within 25 s."""
    datasets = [StudyDataset("a", 600, 2), StudyDataset("b", 256, 3)]
    costs = {(4, 2): Costs(step=0.5, epoch=0.25, fit=1.0), (4, 3): Costs(step=1.0, epoch=0.0, fit=2.0)}
    p = project(costs, datasets, dims=[4], seeds=2, epochs=3, batch_size=256, goal_seconds=20)
    assert [(r["dataset"], r["steps_per_epoch"], r["grid_steps"]) for r in p["rows"]] == [("a", 3, 18), ("b", 1, 6)]
    assert [r["seconds"] for r in p["rows"]] == pytest.approx([12.5, 10.0])
    assert (p["grid_steps"], p["fits"], p["epochs"]) == (24, 4, 12)
    assert p["seconds"] == pytest.approx(22.5) and p["pass"] is False
    assert project(costs, datasets, dims=[4], seeds=2, epochs=3, batch_size=256, goal_seconds=25)["pass"] is True


def test_the_study_is_the_papers_eleven_datasets_at_their_training_sizes():
    assert sorted(ds.name for ds in DATASETS) == sorted(
        ["aircraft", "caltech101", "cars", "cifar10", "cifar100", "dtd", "flowers", "food101", "pets", "sun397",
         "voc2007"])
    assert all((CONF_DIR / "dataset" / f"{ds.name}.yaml").is_file() for ds in DATASETS)
    assert sum(ds.train_size for ds in DATASETS) == 227_962  # the "about 227k"
    assert len(shapes()) == 2 * 9  # two widths x nine distinct class counts
    p = project({shape: Costs(1.0, 0.0, 0.0) for shape in shapes()})
    # 3 seeds x 100 epochs x 2 widths x the sum over datasets of ceil(n / 256) = 895 steps an epoch
    assert p["grid_steps"] == 3 * 100 * 2 * 895 and p["seconds"] == p["grid_steps"]


def test_an_epoch_split_into_its_steps_and_its_fixed_cost_hand_worked():
    """1 step in 12 ms and 32 in 105 ms: 3 ms a step, 9 ms fixed. A long epoch no slower than the
    short one is a busy machine's: its seconds over its steps, nothing fixed, flagged."""
    step, epoch, noisy = split_epoch(0.012, 1, 0.105, 32)
    assert (step, epoch, noisy) == (pytest.approx(0.003), pytest.approx(0.009), False)
    assert split_epoch(0.012, 1, 0.010, 32) == (pytest.approx(0.010 / 32), 0.0, True)
    assert split_epoch(0.001, 1, 0.320, 32)[2] is True  # a step dearer than the whole short epoch


def test_the_gpu_check_without_cuda_stops_at_once_with_what_to_do(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    start = time.perf_counter()
    with pytest.raises(SystemExit) as stopped:
        main(["--device", "cuda", "--out", "unused.json"])
    assert time.perf_counter() - start < 1  # nothing measured
    assert stopped.value.code == NO_CUDA  # Python prints it on stderr, no traceback, and exits with status 1
    assert "torch.cuda.is_available() is False" in NO_CUDA and "make gpu-check" in NO_CUDA
