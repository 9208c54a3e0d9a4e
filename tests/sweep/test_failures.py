"""A job that does not finish says why in sealab's words: the outermost sealab error of its chain
(not the library error it wraps, nor Hydra's wrapper), the whole traceback in its log, an
interruption (SIGTERM, SIGINT) as such with how to finish it, and a sweep lists the jobs it never
started and, when some jobs cannot be composed, which keys which jobs lack."""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
from pathlib import Path

import pandas as pd
import pytest
from helpers import compose_train
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import OmegaConf

from sealab.data.errors import DatasetChecksumError
from sealab.interrupt import JobInterrupted, how_to_finish, stop_on_signals
from sealab.sweep.composition import composition_report
from sealab.objective import check_metric_of_task
from sealab.sweep.outcome import FAILED, error_line, record_failure, reported_error
from sealab.sweep.plan import planned_jobs
from sealab.sweep.summary import failures, summarize
from sealab.task import make_task
from sealab.train import CONFIG_MODULE


def raised_in(module: str, err: BaseException, cause: BaseException | None = None) -> BaseException:
    """``err`` raised by code of ``module`` (its frame's __name__), from ``cause``."""
    code = compile("raise err from cause" if cause is not None else "raise err", f"<{module}>", "exec")
    try:
        exec(code, {"__name__": module, "err": err, "cause": cause})
    except BaseException as raised:  # noqa: BLE001 - the test builds the chain
        return raised
    raise AssertionError("not raised")


def instantiate_wrapper(cause: BaseException) -> InstantiationException:
    """What hydra.utils.instantiate raises for a constructor's error."""
    return raised_in("hydra._internal.instantiate._instantiate2", InstantiationException(
        f"Error in call to target 'sealab.data.x.X':\n{cause!r}\nfull_key: dataset"), cause)


def test_the_outermost_sealab_error_is_reported_not_the_library_error_it_wraps():
    torchvision = raised_in("torchvision.datasets.cifar", RuntimeError(
        "Dataset not found or corrupted. You can use download=True to download it"))
    checksum = raised_in("sealab.data.torchvision_sets", DatasetChecksumError(
        "cifar10", Path("/data/cifar10"), [("data_batch_1", "c99cafc152244af753f735de768cd75f")], "download it"),
        torchvision)
    wrapped = instantiate_wrapper(checksum)
    assert reported_error(wrapped) is checksum
    line = error_line(wrapped)
    assert line.startswith("DatasetChecksumError: dataset 'cifar10' at /data/cifar10: the files are present")
    assert "data_batch_1 (expected md5 c99c" in line and "dataset.download=true" in line  # the file and the fix
    assert "\n" not in line and "download=True" not in line and "full_key" not in line


def test_an_error_raised_by_sealab_code_is_reported_even_of_a_builtin_class():
    inner = raised_in("sealab.data.feature_files", FileNotFoundError("features file not found: /x.pt"))
    outer = raised_in("sealab.data.feature_files", ValueError(
        "dataset.train_features=/x.pt: no such file\npoint it at an existing file"), inner)
    assert reported_error(instantiate_wrapper(outer)) is outer  # the outermost of sealab's, naming the key
    assert error_line(instantiate_wrapper(outer)) == ("ValueError: dataset.train_features=/x.pt: no such file "
                                                      "point it at an existing file")
    assert reported_error(instantiate_wrapper(inner)) is inner


def test_without_a_sealab_error_only_hydras_wrapper_is_unwrapped():
    torch_error = raised_in("torch.nn.modules.linear", RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert error_line(instantiate_wrapper(torch_error)) == "RuntimeError: mat1 and mat2 shapes cannot be multiplied"
    # Another library's own wrapper is what that library says: kept.
    outer = raised_in("lightning.pytorch.trainer", ValueError("bad trainer setting"), torch_error)
    assert reported_error(outer) is outer
    assert error_line(raised_in("torch", RuntimeError())) == "RuntimeError"


def job_config(tmp_path, *overrides):
    return compose_train(["dataset=features", "dataset.backbone=dinov2", "method=linear", *overrides],
                         output_dir=tmp_path)


def test_a_failure_is_recorded_with_its_identity_and_the_traceback_goes_to_the_job_log(tmp_path):
    cfg = job_config(tmp_path, "seed=3")
    err = instantiate_wrapper(raised_in("sealab.x", ValueError("method.epochs=0: must be an integer >= 1")))
    handler = logging.FileHandler(tmp_path / "train.log")
    logging.getLogger().addHandler(handler)
    try:
        record_failure(tmp_path, err, cfg)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    record = json.loads((tmp_path / FAILED).read_text())
    assert record == {"dataset": "features", "backbone": "dinov2", "method": "linear", "seed": 3,
                      "overrides": ["dataset=features", "dataset.backbone=dinov2", "method=linear", "seed=3"],
                      "status": "failed",
                      "error": "ValueError: method.epochs=0: must be an integer >= 1"}
    log = (tmp_path / "train.log").read_text()
    # The whole chain: the wrapper, the cause and the frames that raised them.
    assert "Traceback (most recent call last)" in log and 'File "<sealab.x>"' in log
    assert "InstantiationException: Error in call to target" in log and log.count("ValueError: method.epochs=0") == 2


def test_without_a_log_file_handler_the_traceback_goes_to_the_jobs_log_file(tmp_path, monkeypatch):
    root = logging.getLogger()  # (pytest's own file handler, to /dev/null, left out)
    monkeypatch.setattr(root, "handlers", [h for h in root.handlers if not isinstance(h, logging.FileHandler)])
    cfg = job_config(tmp_path)
    record_failure(tmp_path, raised_in("sealab.x", ValueError("boom")), cfg)
    assert "ValueError: boom" in (tmp_path / f"{cfg.hydra.job.name}.log").read_text()  # Hydra's file name


def test_a_failure_that_cannot_be_written_is_logged_not_raised_over_the_error(tmp_path, caplog):
    missing = tmp_path / "gone"
    with caplog.at_level(logging.ERROR):
        record_failure(missing, raised_in("sealab.x", ValueError("boom")), job_config(tmp_path))
    assert f"could not record the failure in {missing}" in caplog.text


@pytest.mark.parametrize("signum, name, status", [(signal.SIGTERM, "SIGTERM", 143), (signal.SIGINT, "SIGINT", 130)])
def test_sigterm_and_sigint_stop_the_job_with_a_message_and_a_non_zero_status(signum, name, status):
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with pytest.raises(JobInterrupted) as stopped:
        with stop_on_signals(lambda: "To finish it, start it again."):
            os.kill(os.getpid(), signum)  # Python runs the handler before the next line
            raise AssertionError("the signal did not stop the block")
    assert stopped.value.code == status  # what a shell reports for a job killed by that signal
    assert str(stopped.value).startswith(f"interrupted by {name} (")
    assert str(stopped.value).endswith("To finish it, start it again.")
    assert {s: signal.getsignal(s) for s in before} == before  # put back


def test_the_handlers_are_put_back_after_a_job_that_was_not_interrupted():
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals(lambda: ""):
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


def test_how_to_finish_names_the_run_dir_the_sweep_and_a_checkpoint(tmp_path):
    run_dir, sweep = tmp_path / "sweep" / "0_digits_resnet_finetune", tmp_path / "sweep"
    assert how_to_finish(run_dir, None) == (f"To finish it, start the same command again with "
                                            f"hydra.run.dir={run_dir}: it runs again from the start.")
    assert how_to_finish(run_dir, sweep) == (f"To finish it, start the same command again with "
                                             f"hydra.sweep.dir={sweep} resume=true: the finished jobs are skipped.")
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.touch()
    assert how_to_finish(run_dir, None).endswith(f": it continues from the last checkpoint there ({checkpoint}).")
    assert how_to_finish(run_dir, sweep).endswith(
        f"the finished jobs are skipped and this one continues from its last checkpoint ({checkpoint}).")


MULTIRUN = {
    "hydra": {"sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                          "max_batch_size": None, "params": None},
              "overrides": {"task": ["method=linear,sea", "seed=0,1", "method.epochs=2"]},
              "runtime": {"choices": {"dataset": "digits", "backbone": "random_features", "method": "sea"}}},
    "seed": 0,
}


def fake_job_dir(sweep, name, overrides):
    hydra_dir = sweep / name / ".hydra"
    hydra_dir.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), hydra_dir / "overrides.yaml")
    return hydra_dir.parent


def test_a_sweep_lists_the_jobs_it_never_started(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    OmegaConf.save(OmegaConf.create(MULTIRUN), sweep / "multirun.yaml")
    master = OmegaConf.load(sweep / "multirun.yaml")
    assert planned_jobs(master) == [["method=linear", "seed=0", "method.epochs=2"],
                                    ["method=linear", "seed=1", "method.epochs=2"],
                                    ["method=sea", "seed=0", "method.epochs=2"],
                                    ["method=sea", "seed=1", "method.epochs=2"]]
    # Job 0 finished, job 1 was interrupted; jobs 2 and 3 never started.
    done = fake_job_dir(sweep, "0_digits_random_features_linear", ["method=linear", "seed=0", "method.epochs=2"])
    (done / "metrics.json").write_text(json.dumps({
        "dataset": "digits", "backbone": "random_features", "method": "linear", "seed": 0, "fit_seconds": 1.0,
        "metrics": {"test/top1": 0.9, "val/top1": 0.8}, "primary_metric": "test/top1",
        "overrides": ["method=linear", "seed=0", "method.epochs=2"]}))
    stopped = fake_job_dir(sweep, "1_digits_random_features_linear", ["method=linear", "seed=1", "method.epochs=2"])
    (stopped / FAILED).write_text(json.dumps({
        "dataset": "digits", "backbone": "random_features", "method": "linear", "seed": 1, "status": "interrupted",
        "overrides": ["method=linear", "seed=1", "method.epochs=2"], "error": "JobInterrupted: interrupted by SIGTERM"}))
    rows = failures(sweep)
    assert list(rows["status"]) == ["interrupted", "not started", "not started"]
    not_started = rows[rows["status"] == "not started"]
    assert list(not_started["method"]) == ["sea", "sea"] and list(not_started["seed"]) == [0, 1]
    assert list(not_started["dataset"]) == ["digits"] * 2
    assert [Path(d).name for d in not_started["run_dir"]] == ["job 2", "job 3"]
    _, markdown = summarize(sweep)
    assert "3 job(s) without a result" in markdown
    assert "| job 3 | method=sea seed=1 method.epochs=2 | not started: the sweep stopped before this job |" in markdown
    assert sorted(pd.read_csv(sweep / "runs.csv")["status"]) == ["interrupted", "not started", "not started", "ok"]


def test_a_sweeper_that_picks_its_jobs_as_it_goes_has_no_plan(tmp_path):
    optuna = OmegaConf.create(MULTIRUN)
    optuna.hydra.sweeper._target_ = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert planned_jobs(optuna) is None
    OmegaConf.save(optuna, tmp_path / "multirun.yaml")
    assert failures(tmp_path).empty


@pytest.fixture
def config_loader():
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        yield GlobalHydra.instance().config_loader()


def master_config(loader, overrides):
    """The sweep's own config, as Hydra composes it before expanding its jobs."""
    return loader.load_configuration(config_name="train", overrides=overrides, run_mode=RunMode.MULTIRUN)


def suggested_sweeps(report: str) -> list[list[str]]:
    return [shlex.split(line.strip())[2:] for line in report.splitlines() if line.strip().startswith("sealab-train -m")]


def test_a_sweep_that_cannot_compose_says_which_methods_lack_which_key_and_how_to_run_them(config_loader):
    master = master_config(config_loader, ["method=linear,sea,logreg", "method.epochs=5", "method.augmenter.eta=0.3"])
    report = composition_report(master, config_loader)
    lines = report.splitlines()
    assert lines[0] == ("This sweep ran no job: Hydra's basic sweeper composes every job before it starts any, "
                        "and 2 of its 3 jobs cannot be composed.")
    assert "  method.epochs is not a key of method=logreg (it is of method=linear, method=sea)." in lines
    assert "  method.augmenter.eta is not a key of method=linear, method=logreg (it is of method=sea)." in lines
    sweeps = suggested_sweeps(report)
    assert sweeps == [["method=linear", "method.epochs=5"], ["method=sea", "method.epochs=5", "method.augmenter.eta=0.3"],
                      ["method=logreg"]]
    for args in sweeps:  # each suggested sweep composes, every job of it
        sub_master = master_config(config_loader, args)
        assert composition_report(sub_master, config_loader) is None
        for job in planned_jobs(sub_master, config_loader):
            config_loader.load_sweep_config(master_config=sub_master, sweep_overrides=job)
    assert "sealab-summary" in lines[-1]


def test_a_job_that_fails_to_compose_for_another_reason_is_named_with_hydras_error(config_loader):
    master = master_config(config_loader, ["method=linear,nope"])
    report = composition_report(master, config_loader)
    assert "1 of its 2 jobs cannot be composed" in report
    assert "  job 1 (method=nope): MissingConfigException: In 'train': Could not find 'method/nope'" in report
    assert "sealab-train -m" not in report  # no key to leave out: nothing to propose
    assert composition_report(master_config(config_loader, ["method=linear,sea", "seed=0,1"]), config_loader) is None


def test_the_optimised_metric_must_be_a_validation_metric_of_the_task():
    multiclass, multilabel = make_task(10), make_task(5, multilabel=True)
    check_metric_of_task(None, multiclass, validated=False)
    check_metric_of_task("val/mean_per_class", multiclass, validated=True)
    check_metric_of_task("val/map11", multilabel, validated=True)
    with pytest.raises(ValueError, match=r"optimized_metric='val/bogus' is not a metric of this run \(MultiClass "
                                         r"task\): choose one of val/top1, val/mean_per_class$"):
        check_metric_of_task("val/bogus", multiclass, validated=True)
    with pytest.raises(ValueError, match=r"optimized_metric='val/top1' is not a metric .*choose one of val/map11$"):
        check_metric_of_task("val/top1", multilabel, validated=True)
    with pytest.raises(ValueError, match="with fit_on=trainval the validation split is trained on"):
        check_metric_of_task("val/top1", multiclass, validated=False)
