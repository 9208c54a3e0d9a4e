"""wandb runs of a sweep (group, names, tags, summary, the sweep's table), the offline fallback
and local configs. Offline throughout: wandb's runs are read back from their .wandb files."""

from __future__ import annotations

import atexit
import json
import logging
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import QUIET, compose_train, metrics_files, read_metrics
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict, read_write

from sealab import loggers
from sealab.loggers import log_results, markdown_tables, run_logger, run_name
from sealab.sweep.callback import SweepSummary


def wandb_records(path: Path) -> list:
    """The protobuf records of an offline run's .wandb file (a LevelDB-style log: 32 KiB blocks
    of chunks, each ``crc32 | length | type`` then data; type 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, payload, pos = [], b"", 7  # after the 7-byte file header
    while pos + 7 <= len(data):
        room = 32768 - pos % 32768
        if room < 7:  # a block's tail too short for a chunk header is padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        payload += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(payload)
            records.append(record)
            payload = b""
    return records


def read_run(run_dir: Path) -> dict:
    """Name, group, job type, tags and final summary of one offline wandb run."""
    (path,) = run_dir.glob("*.wandb")
    run, summary = None, {}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
        elif kind == "summary":
            summary.update({item.key: json.loads(item.value_json) for item in record.summary.update if item.key})
    return {"name": run.display_name, "group": run.run_group, "job_type": run.job_type,
            "tags": list(run.tags), "project": run.project, "summary": summary, "dir": run_dir}


def test_a_multirun_logs_one_wandb_run_per_job_grouped_by_its_sweep(tmp_path):
    wandb_dir = tmp_path / "wandb_dir"
    wandb_dir.mkdir()
    # The third job fails (an unknown norm): the table is then logged at exit, with its failure.
    env = {**os.environ, "SEALAB_ROOT": str(tmp_path), "WANDB_MODE": "offline", "WANDB_DIR": str(wandb_dir)}
    proc = subprocess.run([sys.executable, "-m", "sealab.train", "-m", "logger=wandb", "method=linear",
                           "method.epochs=2", "norm=l2,none,bogus", *QUIET], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "norm='bogus'" in proc.stdout + proc.stderr, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "multirun").glob("*/*")
    runs = [read_run(d) for d in sorted((wandb_dir / "wandb").glob("offline-run-*"))]
    assert not list(sweep.rglob("offline-run-*"))  # in WANDB_DIR, not in the run dirs
    jobs = {r["name"]: r for r in runs if r["job_type"] == "train"}
    # The swept norm names each run; the fixed method.epochs does not.
    assert sorted(jobs) == ["digits/random_features/linear norm=l2", "digits/random_features/linear norm=none"]
    assert {r["group"] for r in runs} == {sweep.name}
    assert all(r["tags"] == ["digits", "random_features", "linear"] and r["project"] == "sealab"
               for r in jobs.values())
    records = {r["norm"]: r for r in map(read_metrics, metrics_files(sweep))}
    for norm, record in records.items():
        summary = jobs[f"digits/random_features/linear norm={norm}"]["summary"]
        assert summary["fit_seconds"] == pytest.approx(record["fit_seconds"])
        assert summary["extract_seconds"] == pytest.approx(record["extract_seconds"])
        assert summary["cache_hit"] == record["cache_hit"]
        assert summary["primary_metric"] == "test/top1"
        assert summary["primary"] == pytest.approx(record["metrics"]["test/top1"])
    # The sweep's tables, in a run of the same group: results in %, then the failed job.
    (summary_run,) = [r for r in runs if r["job_type"] == "summary"]
    tables = {path.name.rsplit("_", 2)[0]: json.loads(path.read_text())  # summary[_2]_<step>_<hash>.table.json
              for path in (summary_run["dir"] / "files" / "media" / "table").glob("*.table.json")}
    results, failures = tables["summary"], tables["summary_2"]
    assert results["columns"] == ["method", "digits/random_features"]
    cells = {label: cell for label, cell in results["data"]}
    assert len(cells) == 2
    for norm, record in records.items():
        (label,) = [label for label in cells if f"norm={norm}" in label]
        assert cells[label] == f"{100 * record['metrics']['test/top1']:.2f}"
    assert len(failures["data"]) == 1 and "norm=bogus" in " ".join(failures["data"][0])


def _job_of_a_sweep(tmp_path: Path, overrides: list[str], swept: list[str] | None, params: dict | None = None):
    """The config of one job of a multirun whose command line was ``swept`` (None: no
    multirun.yaml, as with sweepers other than Hydra's basic one)."""
    cfg = compose_train(overrides, output_dir=tmp_path / "job")
    with read_write(cfg.hydra), open_dict(cfg):
        cfg.hydra.mode = "MULTIRUN"
        cfg.hydra.sweep.dir = str(tmp_path / "sweep")
        cfg.hydra.sweeper.params = params
    if swept is not None:
        (tmp_path / "sweep").mkdir()
        OmegaConf.save({"hydra": {"overrides": {"task": swept}}}, tmp_path / "sweep" / "multirun.yaml")
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_a_run_name_holds_what_varies_in_its_sweep(tmp_path):
    cfg = _job_of_a_sweep(tmp_path, ["method=linear", "norm=none", "method.epochs=2", "seed=1", "logger=csv"],
                          ["method=linear,sea", "norm=l2,none", "method.epochs=2", "seed=0,1", "logger=csv"])
    # method is in the name already; the fixed method.epochs and the logger are not.
    assert run_name(cfg) == "digits/random_features/linear norm=none seed=1"


def test_a_run_name_holds_only_varying_settings_that_change_numbers(tmp_path):
    # Roles from sealab.settings: threads, extraction batch size and lock timeout vary here but
    # change no number; the cache dtype (result) and the seed do.
    cfg = _job_of_a_sweep(tmp_path, ["num_threads=2", "extract.batch_size=64", "extract.lock_timeout=5",
                                     "extract.cache_dtype=float32", "seed=1", "+my_key=3"],
                          ["num_threads=1,2", "extract.batch_size=64,128", "extract.lock_timeout=5,6",
                           "extract.cache_dtype=float16,float32", "seed=0,1", "+my_key=3,4"])
    assert run_name(cfg) == "digits/random_features/sea extract.cache_dtype=float32 seed=1 +my_key=3"


def test_sweeper_params_vary_too(tmp_path):
    # hparams_search configs sweep in hydra.sweeper.params; Optuna keeps no multirun.yaml.
    cfg = _job_of_a_sweep(tmp_path, ["method.optimizer.lr=0.01", "seed=2", "method.epochs=3"], None,
                          {"seed": "0,1,2", "method.optimizer.lr": "interval(0.001, 0.1)", "method.epochs": "3"})
    assert run_name(cfg) == "digits/random_features/sea method.optimizer.lr=0.01 seed=2"


def test_without_sweep_information_every_override_names_the_run(tmp_path):
    cfg = _job_of_a_sweep(tmp_path, ["norm=none", "seed=3", "logger=wandb"], None)
    assert run_name(cfg) == "digits/random_features/sea norm=none seed=3"


@pytest.mark.parametrize("failure", ["no_api_key", "unreachable"])
def test_wandb_falls_back_to_offline_with_one_warning(failure, tmp_path, monkeypatch, caplog):
    import wandb

    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.delenv("WANDB_MODE", raising=False)  # a user who chose no mode
    monkeypatch.setattr(loggers, "_offline_reason", None)
    monkeypatch.setattr(wandb, "login", lambda **kw: failure != "no_api_key")
    online_attempts = []
    real_init = wandb.init

    def init(**kwargs):  # the server never answers: wandb.init raises after its timeout
        if kwargs.get("mode") != "offline":  # once wandb runs, WANDB_MODE no longer counts
            online_attempts.append(kwargs["name"])
            raise wandb.errors.CommError("Run initialization has timed out")
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", init)
    cfg = compose_train(["logger=wandb", "logger.offline=false"], output_dir=tmp_path / "run")
    with caplog.at_level(logging.WARNING, logger="sealab.loggers"):
        for _ in range(2):  # two runs in one process, as the jobs of a sweep
            with run_logger(cfg) as logger:
                assert logger.experiment.settings._offline
    warnings = [r for r in caplog.records if r.name == "sealab.loggers"]
    assert len(warnings) == 1 and "offline" in warnings[0].getMessage()
    assert online_attempts == ([] if failure == "no_api_key" else ["digits/random_features/sea"])
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 2


def test_wandb_mode_disabled_is_honoured(tmp_path, monkeypatch):
    import wandb

    wandb.teardown()  # wandb reads its environment once per session: start another
    monkeypatch.setenv("WANDB_MODE", "disabled")
    try:
        with run_logger(compose_train(["logger=wandb"], output_dir=tmp_path)) as logger:
            assert logger.experiment.disabled
    finally:
        wandb.teardown()  # the next test's session reads its own environment
    assert not list(tmp_path.rglob("*.wandb"))


def test_results_on_a_rank_other_than_zero_log_nothing(monkeypatch):
    # Under DDP every rank of a fine-tuning run logs its results; only rank zero has a wandb run.
    from lightning.fabric.utilities.rank_zero import rank_zero_only
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    log_results(WandbLogger(offline=True), {"test/top1": 0.5}, {"primary_metric": "test/top1"})


def test_markdown_tables_reads_each_table():
    text = "| method | a/b |\n|---|---|\n| sea | 91.00 |\n| linear | 90.00 |\n\n1 job(s) without a result:\n\n" \
           "| run | error |\n|---|---|\n| 3_x | ValueError: bad |\n"
    assert markdown_tables(text) == [(["method", "a/b"], [["sea", "91.00"], ["linear", "90.00"]]),
                                     (["run", "error"], [["3_x", "ValueError: bad"]])]


def test_a_local_file_applies_at_the_root(tmp_path):
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "mine.yaml").write_text(
        "# @package _global_\npaths:\n  cache_dir: /fast/features\nwandb:\n  entity: my-team\n")
    overrides = [f"hydra.searchpath=[file://{tmp_path}]", "local=mine"]
    cfg = compose_train(overrides, output_dir=tmp_path)
    assert cfg.paths.cache_dir == "/fast/features" and "local" not in cfg
    instantiate(cfg.logger)  # the entity is only for wandb: the default csv logger still builds
    assert compose_train([*overrides, "logger=wandb"], output_dir=tmp_path).logger.entity == "my-team"


def test_the_shipped_example_local_file_applies_at_the_root(tmp_path):
    cfg = compose_train(["local=example"], output_dir=tmp_path)
    assert cfg.paths.data_dir == "/datasets" and "local" not in cfg


def test_the_summary_hook_moves_after_each_job_of_the_sweeps_own_process_only(tmp_path, monkeypatch):
    # In-process jobs import wandb, whose exit hook closes its service: the summary hook must be
    # registered after it to run first. A job in a worker process (joblib) must not register it:
    # that worker would write the summary again, and log the table again, when it exits.
    registered = []
    monkeypatch.setattr(atexit, "register", registered.append)
    monkeypatch.setattr(atexit, "unregister", lambda hook: None)
    callback = SweepSummary()
    callback.on_multirun_start(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}, "logger": None}))
    job = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(tmp_path / "0")}}})
    callback.on_job_end(job, JobReturn(status=JobStatus.COMPLETED))
    assert len(registered) == 2
    monkeypatch.setattr(os, "getpid", lambda: -1)  # a worker's copy of the callback
    callback.on_job_end(job, JobReturn(status=JobStatus.COMPLETED))
    assert len(registered) == 2
