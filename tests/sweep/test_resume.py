"""resume=true: the config hash sees what changes results only (the roles of sealab.settings);
finished jobs are found, failed ones are not; a result of another config is never written over."""

import json
import logging
import os
import re
import subprocess
import sys

import pytest
from helpers import compose_train, run_train
from hydra import initialize_config_module
from hydra_plugins.sealab_sweeper.sealab_sweeper import job_numbers, launches
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import OmegaConf

from sealab.settings import changes_numbers, flatten
from sealab.sweep.job_configs import JobConfigs
from sealab.sweep.numbers import differences, numbers_config, recorded_numbers
from sealab.sweep.outcome import FAILED, RESUMED
from sealab.sweep.plan import not_started
from sealab.sweep.resume import (FinishedJobs, config_hash, finished_record, keep_other_results,
                                 nothing_to_resume)
from sealab.train import CONFIG_MODULE


def digest(tmp_path, *overrides, out="run"):
    return config_hash(compose_train(["method=sea", *overrides], output_dir=tmp_path / out))


def test_hash_ignores_where_and_how_a_run_is_logged_threaded_or_resumed(tmp_path):
    base = digest(tmp_path)
    assert base == digest(tmp_path, out="elsewhere")  # trainer.default_root_dir follows the run dir
    assert base == digest(tmp_path, "paths.cache_dir=/else", "paths.root_dir=/x", "logger=wandb", "num_threads=1",
                          "resume=true", "optimized_metric=val/top1", "trainer.enable_progress_bar=false")
    changed = {digest(tmp_path, o) for o in ("seed=1", "method.augmenter.eta=0.5", "norm=center_l2", "method=linear")}
    assert base not in changed and len(changed) == 4


def write_record(run_dir, config_hash, failed=False):
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"config_hash": config_hash, "metrics": {"val/top1": 0.5}}))
    if failed:
        (run_dir / FAILED).write_text("{}")


def test_finished_record_found_anywhere_in_the_sweep_failed_ones_rerun(tmp_path):
    write_record(tmp_path / "0_a", "aaa")
    write_record(tmp_path / "1_b", "bbb", failed=True)
    own = tmp_path / "0_a"
    assert finished_record("aaa", tmp_path, own)["config_hash"] == "aaa"
    assert not (own / RESUMED).exists()  # its own result: nothing to point to
    moved = tmp_path / "5_a"  # the same job numbered differently in a grown sweep
    moved.mkdir()
    assert finished_record("aaa", tmp_path, moved)["config_hash"] == "aaa"
    assert json.loads((moved / RESUMED).read_text())["metrics"] == str(own / "metrics.json")
    assert finished_record("bbb", tmp_path, tmp_path / "1_b") is None  # its last attempt failed
    assert finished_record("ccc", tmp_path, tmp_path / "2_c") is None


def test_a_finished_job_is_skipped_before_torch_is_imported(tmp_path):
    overrides = ["method=linear", "seed=3"]
    sweep = tmp_path / "sweep"
    run_dir = sweep / "0_digits_random_features_linear"
    write_record(run_dir, config_hash(compose_train(overrides, output_dir=tmp_path)))
    record = json.loads((run_dir / "metrics.json").read_text())
    record.update(dataset="digits", backbone="random_features", method="linear", seed=3, fit_seconds=1.0,
                  primary_metric="test/top1", metrics={"val/top1": 0.5, "test/top1": 0.25})
    (run_dir / "metrics.json").write_text(json.dumps(record))
    probe = ("import atexit, sys; atexit.register(lambda: print('torch imported:', 'torch' in sys.modules)); "
             f"sys.argv = ['sealab-train', '-m', *{overrides!r}, 'resume=true', 'hydra.sweep.dir={sweep}']; "
             "from sealab.train import main; main()")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "SEALAB_ROOT": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not run again" in proc.stdout + proc.stderr
    assert "| linear | 25.00 |" in (sweep / "summary.md").read_text()
    assert proc.stdout.strip().endswith("torch imported: False")


def test_resume_without_the_sweep_folder_says_how_to_name_it():
    assert "hydra.sweep.dir=" in nothing_to_resume(["hydra.launcher.n_jobs=2"])
    assert nothing_to_resume(["hydra.sweep.dir=multirun/2026-11-26/10-00-00-000000"]) is None


def test_the_hash_reads_exactly_the_keys_whose_declared_role_changes_numbers(tmp_path):
    cfg = compose_train(["method=sea"], output_dir=tmp_path)
    hashed = numbers_config(cfg)
    flat = flatten(OmegaConf.to_container(cfg, resolve=False))
    assert set(hashed) == {key for key in flat if changes_numbers(key)}
    assert {"seed", "norm", "extract.cache_dtype", "method.augmenter.eta", "trainer.deterministic"} <= set(hashed)
    assert not [key for key in hashed if key.startswith(("paths.", "hydra.", "logger."))]
    assert hashed["dataset.val_fraction"] == cfg.dataset.val_fraction
    base = config_hash(cfg)
    assert base == digest(tmp_path, "extract.lock_timeout=5", "extract.batch_size=7", "extract.num_workers=0",
                          "device=cpu", "save_classifier=false", "+wandb.entity=someone")
    changed = {digest(tmp_path, o) for o in ("extract.cache_dtype=float32", "extract.precision=bf16", "debug=fast",
                                              "+my_own_key=1", "features.block_rows=8")}
    assert base not in changed and len(changed) == 5


def test_a_local_files_wandb_key_is_not_hashed(tmp_path):
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "mine.yaml").write_text("# @package _global_\nwandb:\n  entity: my-team\n  project: p\n")
    with_local = compose_train(["method=sea", f"hydra.searchpath=[file://{tmp_path}]", "local=mine"],
                               output_dir=tmp_path / "run")
    assert with_local.wandb.entity == "my-team"
    assert config_hash(with_local) == digest(tmp_path)


def test_the_hash_sees_the_data_below_a_path_not_where_the_path_points(tmp_path):
    assert digest(tmp_path, "dataset=cifar10", "paths.data_dir=/a") == digest(tmp_path, "dataset=cifar10",
                                                                                "paths.data_dir=/b")
    assert digest(tmp_path, "dataset=cifar10") != digest(tmp_path, "dataset=cifar10", "dataset.root=/elsewhere")


def sweep_job(tmp_path, *overrides, resume=True):
    """The config of a sweep job in ``tmp_path / "sweep"``, as Hydra composes it."""
    return compose_train(["method=linear", f"resume={str(resume).lower()}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                          *overrides], output_dir=tmp_path / "sweep" / "unused")


def write_result(tmp_path, run_name, *overrides, test_top1=0.5):
    """A finished job of an earlier sweep: its metrics.json with the config hash and config."""
    cfg = sweep_job(tmp_path, *overrides, resume=False)
    run_dir = tmp_path / "sweep" / run_name
    run_dir.mkdir(parents=True)
    config = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    record = {"dataset": "digits", "backbone": "random_features", "method": "linear", "seed": cfg.seed,
              "metrics": {"val/top1": test_top1, "test/top1": test_top1}, "primary_metric": "test/top1",
              "fit_seconds": 1.0, "overrides": list(overrides), "config": config, "config_hash": config_hash(cfg)}
    (run_dir / "metrics.json").write_text(json.dumps(record))
    return run_dir


def test_a_resumed_job_goes_beside_a_result_of_another_config(tmp_path):
    write_result(tmp_path, "0_digits_random_features_linear", "method.epochs=3")
    subdir = "hydra.sweep.subdir"
    assert OmegaConf.select(sweep_job(tmp_path, "method.epochs=3"), subdir) == "0_digits_random_features_linear"
    moved = sweep_job(tmp_path, "method.epochs=4")
    assert OmegaConf.select(moved, subdir) == f"0_digits_random_features_linear_{config_hash(moved)}"
    # without resume=true the job runs where Hydra puts it, as always
    assert OmegaConf.select(sweep_job(tmp_path, "method.epochs=4", resume=False), subdir) == \
        "0_digits_random_features_linear"
    # a result whose last attempt failed is no longer a result: the job takes its place
    (tmp_path / "sweep" / "0_digits_random_features_linear" / FAILED).write_text("{}")
    assert OmegaConf.select(sweep_job(tmp_path, "method.epochs=4"), subdir) == "0_digits_random_features_linear"


def test_a_job_beside_another_result_names_what_differs(tmp_path, caplog):
    write_result(tmp_path, "0_digits_random_features_linear", "method.epochs=3", "norm=none")
    cfg = sweep_job(tmp_path, "method.epochs=4", "norm=none", "num_threads=1")
    digest_ = config_hash(cfg)
    beside = tmp_path / "sweep" / f"0_digits_random_features_linear_{digest_}"
    with caplog.at_level(logging.WARNING, logger="sealab.sweep.resume"):
        keep_other_results(cfg, digest_, beside)
    (message,) = [r.getMessage() for r in caplog.records]
    assert "method.epochs: 3 -> 4" in message and "norm" not in message and "num_threads" not in message
    assert beside.name in message and "kept" in message


def test_resume_refuses_to_write_over_a_result_of_another_config_in_its_own_dir(tmp_path):
    own = write_result(tmp_path, "run", "method.epochs=3", "seed=1")
    before = (own / "metrics.json").read_bytes()
    cfg = sweep_job(tmp_path, "method.epochs=4", "seed=1", "+my_key=2")
    with pytest.raises(SystemExit) as refused:
        keep_other_results(cfg, config_hash(cfg), own)
    message = str(refused.value)
    assert "method.epochs: 3 -> 4" in message and "my_key: null -> 2" in message and "seed" not in message
    assert "hydra.sweep.dir" in message
    assert (own / "metrics.json").read_bytes() == before and not (own / FAILED).exists()
    keep_other_results(cfg, config_hash(cfg), tmp_path / "sweep" / "new")  # an empty dir: nothing to keep
    same = sweep_job(tmp_path, "method.epochs=3", "seed=1")
    keep_other_results(same, config_hash(same), own)  # its own result (finished_record skips the job)


def test_a_resumed_sweep_into_another_sweeps_folder_keeps_that_sweeps_results(tmp_path):
    # An earlier sweep (method.epochs=3) left jobs 0 and 1; a new one (method.epochs=4) is resumed
    # into its folder. Its jobs 0 and 1 go beside, the earlier files stay as they were, and the
    # summary keeps the two apart.
    earlier = [write_result(tmp_path, f"{seed}_digits_random_features_linear", "method.epochs=3", f"seed={seed}",
                            test_top1=0.25) for seed in (0, 1)]
    before = {path: path.read_bytes() for run_dir in earlier for path in run_dir.rglob("*") if path.is_file()}
    run_train(tmp_path, "seed=0,1", "method=linear", "method.epochs=4", "resume=true",
              f"hydra.sweep.dir={tmp_path / 'sweep'}", multirun=True)
    assert {path: path.read_bytes() for path in before} == before
    assert [p for run_dir in earlier for p in run_dir.rglob("*") if p.is_file()] == list(before)
    new = sorted(path.parent.name for path in (tmp_path / "sweep").glob("*_*_*_linear_*/metrics.json"))
    assert [name.rsplit("_", 1)[0] for name in new] == [run_dir.name for run_dir in earlier]
    summary = (tmp_path / "sweep" / "summary.md").read_text()
    assert "| linear (method.epochs=3) | 25.00 ± 0.00 |" in summary
    assert "| linear (method.epochs=4) |" in summary


def test_a_records_paths_read_as_placeholders_whole_components_only():
    config = {"paths": {"root_dir": "/r", "data_dir": "/r/data/"}, "seed": 1, "logger": {"save_dir": "/r/x"},
              "dataset": {"root": "/r/data/dtd", "file": "/r/datafile", "other": "/rx", "same": "/r/data"}}
    assert recorded_numbers(config) == {"seed": 1, "dataset.root": "<paths.data_dir>/dtd",
                                        "dataset.file": "<paths.root_dir>/datafile", "dataset.other": "/rx",
                                        "dataset.same": "<paths.data_dir>"}
    assert differences({"a": 1, "b": [1, 2], "c": "x"}, {"a": 1, "b": [1, 3], "d": True}) == [
        "b: [1, 2] -> [1, 3]", "c: x -> null", "d: null -> true"]


@pytest.fixture
def config_loader():
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        yield GlobalHydra.instance().config_loader()


def sweep_master(loader, sweep_dir, *overrides):
    """A sweep's own config, as Hydra composes it before expanding its jobs."""
    return loader.load_configuration(config_name="train", overrides=[f"hydra.sweep.dir={sweep_dir}", *overrides],
                                     run_mode=RunMode.MULTIRUN)


JOBS = [["seed=3", "resume=true"],
        ["method=linear", "method.epochs=2", "+my_key=1", "~save_classifier", "seed=1"],
        ["method=linear", "method.epochs=5", "++seed=2"],  # the files of method=linear, merged once
        ["experiment=none", "norm=center_l2", "method.augmenter.eta=0.4", "method.grid={augmenter.alpha:[0.1]}"],
        ["dataset=cifar10", "paths.data_dir=/elsewhere", "method=linear", "seed=0"]]


def test_a_jobs_config_is_hydras_with_its_files_merged_once_per_set_of_group_choices(tmp_path, config_loader,
                                                                                      monkeypatch):
    master = sweep_master(config_loader, tmp_path, "seed=0,1")
    merged = []
    compose = config_loader.load_configuration
    monkeypatch.setattr(config_loader, "load_configuration", lambda **kw: merged.append(kw["overrides"]) or compose(**kw))
    configs = JobConfigs(master, config_loader)
    ours = [configs(job) for job in JOBS]
    assert merged == [[f"hydra.sweep.dir={tmp_path}", *groups]
                      for groups in ([], ["method=linear"], ["experiment=none"], ["dataset=cifar10", "method=linear"])]
    for job, config in zip(JOBS, ours):
        hydras = config_loader.load_sweep_config(master, job)
        assert OmegaConf.to_container(config) == {k: v for k, v in OmegaConf.to_container(hydras).items() if k != "hydra"}
        assert config_hash(config) == config_hash(hydras)


def test_the_sweep_finds_its_finished_jobs_as_they_would_find_themselves(tmp_path):
    earlier = write_result(tmp_path, "0_digits_random_features_linear", "method.epochs=3", "seed=1")
    write_result(tmp_path, "1_digits_random_features_linear", "method.epochs=3", "seed=2")
    (tmp_path / "sweep" / "1_digits_random_features_linear" / FAILED).write_text("{}")
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        finished = FinishedJobs(sweep_master(loader, tmp_path / "sweep", "method=linear", "resume=true", "seed=1,2"),
                                loader)
        job = ["method=linear", "method.epochs=3", "resume=true"]
        assert finished.finished([*job, "seed=1"]) == earlier / "metrics.json"
        assert finished.finished([*job, "seed=1", "num_threads=1", "logger=wandb"]) == earlier / "metrics.json"
        assert finished.finished([*job, "seed=1", "method.epochs=4"]) is None  # another config runs
        assert finished.finished([*job, "seed=2"]) is None  # its last attempt failed
        assert finished.finished(["method=linear", "method.epochs=3", "seed=1", "resume=false"]) is None
        assert finished.finished([*job, "seed=1", "method.no_such_key=1"]) is None  # left to Hydra, which says why


def test_jobs_left_to_run_keep_their_numbers_and_a_parallel_launcher_gets_them_at_once():
    batch = [(n, [f"seed={n}"]) for n in range(10, 16)]
    todo = [batch[1], batch[2], batch[4]]  # jobs 11, 12 and 14 run; 10, 13 and 15 had finished
    assert launches(batch, todo, one_by_one=True) == [(11, [["seed=11"], ["seed=12"]]), (14, [["seed=14"]])]
    # one launch (a SLURM array, joblib's workers): job 13 goes along and skips itself
    assert launches(batch, todo, one_by_one=False) == [(11, [["seed=11"], ["seed=12"], ["seed=13"], ["seed=14"]])]
    assert launches(batch, [], one_by_one=False) == []
    assert job_numbers([0, 1, 2, 3, 5, 7, 8]) == "#0-3, #5, #7-8"


def launched(proc) -> list[int]:
    """The numbers of the jobs Hydra's launcher started."""
    return [int(n) for n in re.findall(r"#(\d+) : ", proc.stdout + proc.stderr)]


@pytest.mark.slow
def test_a_resumed_sweep_runs_only_its_unfinished_jobs_and_the_summary_counts_them_all(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["method=linear", "method.epochs=1", "seed=0,1,2", f"hydra.sweep.dir={sweep}"]
    assert launched(run_train(tmp_path, *args, multirun=True)) == [0, 1, 2]
    results = sorted(sweep.glob("*/metrics.json"))
    before = {path: path.read_bytes() for path in results}
    (results[1].parent / FAILED).write_text("{}")  # job 1 failed: it runs again, as job 1
    assert launched(run_train(tmp_path, *args, "resume=true", multirun=True)) == [1]
    assert not (results[1].parent / FAILED).exists()
    proc = run_train(tmp_path, *args, "resume=true", multirun=True)
    assert launched(proc) == []
    assert "3 of 3 jobs have their result" in proc.stdout + proc.stderr
    assert {path: path.read_bytes() for path in (results[0], results[2])} == {p: before[p] for p in (results[0], results[2])}
    assert not_started(sweep) == [] and "without a result" not in (sweep / "summary.md").read_text()
    assert "| linear | " in (sweep / "summary.md").read_text()
    # another config of the same jobs: every one runs, beside the results kept
    assert launched(run_train(tmp_path, *args, "method.epochs=2", "resume=true", multirun=True)) == [0, 1, 2]
    assert len(list(sweep.glob("*/metrics.json"))) == 6
