"""One run end to end, in process: reproducible numbers, one device setting, experiments that
compose with every method, overrides that would be ignored refused, loggers always closed."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch
from helpers import CONF_DIR, compose_train, read_metrics, run_train
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

import sealab.experiment
import sealab.loggers
from sealab.checks import check_run_config
from sealab.device import resolve_device, trainer_placement
from sealab.experiment import run
from sealab.fileio import WriteError
from sealab.methods.base import ImageMethod, Method
from sealab.sweep.callback import SweepSummary

EXPERIMENTS = sorted(p.stem for p in CONF_DIR.glob("experiment/*.yaml"))
METHODS = sorted(p.stem for p in CONF_DIR.glob("method/*.yaml"))
FAST = ["num_threads=1", "~logger", "trainer.enable_progress_bar=false"]


def run_in_process(root: Path, *overrides: str, name: str = "run") -> dict:
    cfg = compose_train([*FAST, *overrides], output_dir=root / name)
    with open_dict(cfg):
        cfg.paths.cache_dir = str(root / "cache")
    return run(cfg)


@pytest.mark.parametrize("method", ["linear", "sea"])
def test_a_cache_hit_gives_the_same_numbers_as_the_extraction_in_one_process_or_two(method, tmp_path):
    overrides = [f"method={method}", "method.epochs=3", *FAST]
    miss = run_in_process(tmp_path / "a", *overrides, name="miss")
    hit = run_in_process(tmp_path / "a", *overrides, name="hit")
    assert (miss["cache_hit"], hit["cache_hit"]) == (False, True)
    (tmp_path / "b").mkdir()
    run_train(tmp_path / "b", *overrides)  # a second process: miss, then a third: hit
    run_train(tmp_path / "b", *overrides)
    records = sorted((read_metrics(p) for p in (tmp_path / "b").rglob("metrics.json")),
                     key=lambda r: r["cache_hit"])
    assert [r["cache_hit"] for r in records] == [False, True]
    for record in (hit, *records):
        assert record["metrics"] == miss["metrics"]  # exactly, not approximately


def test_device_cpu_reaches_extraction_training_and_closed_form_methods(tmp_path, monkeypatch):
    # With CUDA reported present but absent, any place that picked its own device would fail.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    moved = []
    real_to = torch.Tensor.to

    def spy(tensor, *args, **kwargs):
        moved.append(str(args[0] if args else kwargs.get("device")))
        return real_to(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", spy)
    for method in ("linear", "logreg"):
        record = run_in_process(tmp_path, f"method={method}", "device=cpu", "method.grid_size=3"
                                if method == "logreg" else "method.epochs=3", name=method)
        assert record["device"] == "cpu" and record["config"]["device"] == "cpu"
    assert not [d for d in moved if "cuda" in d]


def test_auto_picks_cuda_when_present_and_the_trainer_follows(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert trainer_placement(torch.device("cpu")) == {"accelerator": "cpu", "devices": 1}
    assert trainer_placement(torch.device("cuda", 1)) == {"accelerator": "gpu", "devices": [1]}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="device=cpu"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        resolve_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda", 0)


def test_no_other_device_setting_remains_in_conf():
    for path in CONF_DIR.rglob("*.yaml"):
        for line in path.read_text().splitlines():
            key = line.split("#", 1)[0].split(":", 1)[0].strip()
            if path.name != "train.yaml":
                assert key not in ("device", "accelerator", "devices"), f"{path}: {line}"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("method", METHODS)
def test_every_experiment_composes_with_every_method(experiment, method, tmp_path):
    cfg = compose_train([f"experiment={experiment}", f"method={method}"], output_dir=tmp_path)
    check_run_config(cfg, method)
    built = instantiate(cfg.method)
    assert isinstance(built, (Method, ImageMethod)) and built.name == method


def test_quickstart_tunes_sea_and_leaves_other_methods_as_configured(tmp_path):
    tuned = compose_train(["experiment=quickstart"], output_dir=tmp_path)
    plain = compose_train(["experiment=quickstart", "method=sea_noproj"], output_dir=tmp_path)
    assert tuned.method.augmenter.eta == 0.3
    assert plain.method.augmenter.eta == compose_train(["experiment=none", "method=sea_noproj"],
                                                       tmp_path).method.augmenter.eta


def test_the_bare_run_is_the_quickstart_and_the_published_sea_is_one_override_away(tmp_path):
    def settings(cfg):
        return {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "hydra"}

    assert settings(compose_train([], tmp_path)) == settings(compose_train(["experiment=quickstart"], tmp_path))
    published = compose_train(["experiment=none"], output_dir=tmp_path)
    assert published.method.name == "sea" and published.method.augmenter.eta == 0.8
    # quickstart's step was chosen on digits through random_features only: elsewhere, the published one
    for other in (["dataset=cifar10"], ["backbone=resnet10t_random_init"], ["experiment=digits_study"]):
        assert compose_train(other, output_dir=tmp_path).method.augmenter.eta == 0.8, other


@pytest.mark.parametrize("override, key", [
    ("+trainer.max_epochs=2", "method.epochs"),
    ("+trainer.accelerator=gpu", "device"),
    ("+trainer.devices=2", "device"),
    ("+trainer.logger=false", "logger="),
])
def test_trainer_settings_the_run_owns_are_refused_before_any_data_is_read(override, key, tmp_path):
    missing = tmp_path / "missing.pt"  # were the data read first, this would fail differently
    with pytest.raises(ValueError, match=key):
        run_in_process(tmp_path, override, "dataset=features", f"dataset.train_features={missing}",
                       f"dataset.test_features={missing}")


def test_settings_for_a_slot_the_method_does_not_have_name_the_conflict(tmp_path):
    with pytest.raises(ValueError, match=r"method.augmenter holds settings \(eta\).*method=linear"):
        run_in_process(tmp_path, "method=linear", "+method.augmenter.eta=0.3", "method.epochs=3")


class RecordingLogger:
    """Stands in for a Lightning logger: remembers how the run closed it."""

    instances: list["RecordingLogger"] = []

    def __init__(self):
        self.status, self.exit_code, self.metrics = None, None, {}
        self.experiment = self
        RecordingLogger.instances.append(self)

    def log_hyperparams(self, params):
        pass

    def log_metrics(self, metrics, step=None):
        self.metrics.update(metrics)

    def finalize(self, status):
        self.status = status

    def finish(self, exit_code):
        self.exit_code = exit_code


@pytest.mark.parametrize("fails", [False, True])
def test_the_logger_is_closed_whatever_happens(fails, tmp_path, monkeypatch):
    RecordingLogger.instances.clear()
    monkeypatch.setattr(sealab.loggers, "instantiate", lambda node, **kw: RecordingLogger()
                        if node.get("_target_") == "RecordingLogger" else instantiate(node, **kw))
    cfg = compose_train(["method=logreg", "method.grid_size=3", "backbone.feature_dim=64", "logger=csv",
                         *(["fit_on=trainval"] if fails else [])], output_dir=tmp_path)
    with open_dict(cfg):
        cfg.logger = {"_target_": "RecordingLogger"}
        cfg.paths.cache_dir = str(tmp_path / "cache")
    if fails:  # logreg without validation needs a fixed weight decay: raised inside the fit
        with pytest.raises(ValueError, match="method.weight_decay"):
            run(cfg)
    else:
        run(cfg)
    (logger,) = RecordingLogger.instances
    assert (logger.status, logger.exit_code) == (("failed", 1) if fails else ("success", 0))
    assert bool(logger.metrics) != fails
    assert json.loads((tmp_path / "dataset.json").read_text())["name"] == "digits"


def test_a_sweep_job_gives_the_numbers_of_the_same_single_run(tmp_path):
    overrides = ["method=linear", "method.epochs=3", *FAST]
    run_train(tmp_path, *overrides)
    run_train(tmp_path, *overrides[:1], "seed=0,1", *overrides[1:], multirun=True)
    single = read_metrics(next((tmp_path / "outputs").rglob("metrics.json")))
    jobs = {r["seed"]: r for r in map(read_metrics, (tmp_path / "multirun").rglob("metrics.json"))}
    assert jobs[0]["metrics"] == single["metrics"] != jobs[1]["metrics"]


def test_debug_fast_runs_one_batch_each_way_without_a_logger(tmp_path):
    cfg = compose_train(["debug=fast", "method=linear"], output_dir=tmp_path / "run")
    assert cfg.logger is None and cfg.trainer.fast_dev_run == 1
    record = run_in_process(tmp_path, "debug=fast", "method=linear")
    assert {"val/top1", "test/top1"} <= record["metrics"].keys()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["classifier.pt", "dataset.json", "metrics.json"]


def test_a_grid_run_selects_on_validation_and_records_every_head(tmp_path):
    record = run_in_process(tmp_path, "experiment=quickstart", "method.epochs=20",
                            "method.grid={augmenter.eta:[0.8,0.3]}")
    grid = record["grid"]
    assert [head["values"] for head in grid] == [{"augmenter.eta": 0.8}, {"augmenter.eta": 0.3}]
    assert all({"val/top1", "test/top1"} <= head["metrics"].keys() for head in grid)
    assert grid[1]["metrics"]["val/top1"] > grid[0]["metrics"]["val/top1"]  # the published step collapses
    assert record["selected"] == {"augmenter.eta": 0.3} and record["metrics"] == grid[1]["metrics"]
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["grid"] == grid


def test_selection_reads_validation_only_and_ties_go_to_the_first():
    heads = [{"val/top1": 0.5, "test/top1": 0.9}, {"val/top1": 0.7, "test/top1": 0.1},
             {"val/top1": 0.7, "test/top1": 0.2}]
    assert sealab.experiment.best_on_validation(heads, "val/top1") == 1


def test_fit_on_trainval_retrains_the_selected_head(tmp_path):
    record = run_in_process(tmp_path, "experiment=quickstart", "method.epochs=20", "fit_on=trainval",
                            "method.grid={augmenter.eta:[0.8,0.3]}")
    assert record["selected"] == {"augmenter.eta": 0.3}
    chosen = record["grid"][1]["metrics"]
    assert record["metrics"]["val/top1"] == chosen["val/top1"]  # measured before val became training data
    assert record["metrics"]["test/top1"] > 0.9


def test_an_optimised_metric_the_run_will_not_report_is_refused_before_any_data_is_extracted(tmp_path):
    # Was refused only after training, leaving both metrics.json and failed.json.
    with pytest.raises(ValueError, match=r"optimized_metric='val/bogus' is not a metric of this run \(MultiClass "
                                         r"task\): choose one of val/top1, val/mean_per_class"):
        run_in_process(tmp_path, "method=linear", "optimized_metric=val/bogus")
    with pytest.raises(ValueError, match=r"optimized_metric='val/top1': with fit_on=trainval .* use fit_on=train"):
        run_in_process(tmp_path, "method=linear", "optimized_metric=val/top1", "fit_on=trainval")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run" / "metrics.json").exists()


def test_a_full_disk_while_saving_the_classifier_names_the_file_and_the_fix_and_leaves_failed_json(
        tmp_path, monkeypatch):
    real_save = torch.save

    def disk_full(obj, f, *args, **kwargs):
        if hasattr(f, "write"):  # the classifier, written through a file object
            f.write(b"PK\x03\x04")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_full)
    cfg = compose_train([*FAST, "method=ncm"], output_dir=tmp_path / "run")
    with open_dict(cfg):
        cfg.paths.cache_dir = str(tmp_path / "cache")
    with pytest.raises(WriteError) as raised:
        run(cfg)
    message = str(raised.value)
    assert message.startswith(f"cannot write {tmp_path / 'run' / 'classifier.pt'}: No space left on device; ")
    assert "free space there" in message and "paths.root_dir" in message
    assert raised.value.errno == errno.ENOSPC  # still an OSError for code that handles one
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["dataset.json"]  # no metrics, no temp file
    # What Hydra hands the sweep callback for a job that raised it.
    SweepSummary().on_job_end(cfg, JobReturn(status=JobStatus.FAILED, _return_value=raised.value))
    failed = json.loads((tmp_path / "run" / "failed.json").read_text())
    assert failed["error"] == f"WriteError: {message}" and failed["status"] == "failed"
