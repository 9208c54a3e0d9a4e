"""resume=true where mutation testing (make mutants) found the suite blind: the hash's exact
recipe (results of earlier sealab versions must still be found), a result of the same config
beside a job, the resolver's registration, and the messages a user acts on."""

import hashlib
import json
import logging

import pytest
from helpers import compose_train
from omegaconf import OmegaConf

from sealab.sweep.numbers import numbers_config
from sealab.sweep.resume import (
    JOB_DIR_RESOLVER,
    config_hash,
    keep_other_results,
    nothing_to_resume,
    register_job_dir_resolver,
)


def sweep_job(tmp_path, *overrides, resume=True):
    return compose_train(["method=linear", f"resume={str(resume).lower()}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                          *overrides], output_dir=tmp_path / "sweep" / "unused")


def write_result(tmp_path, run_name, *overrides):
    cfg = sweep_job(tmp_path, *overrides, resume=False)
    run_dir = tmp_path / "sweep" / run_name
    run_dir.mkdir(parents=True)
    config = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    record = {"metrics": {"test/top1": 0.5}, "config": config, "config_hash": config_hash(cfg)}
    (run_dir / "metrics.json").write_text(json.dumps(record))
    return run_dir


def reversed_keys(value):
    if isinstance(value, dict):
        return {key: reversed_keys(value[key]) for key in reversed(list(value))}
    return value


def test_the_hash_is_sha256_of_the_sorted_json_of_the_numbers_first_16_digits(tmp_path):
    """metrics.json keeps this digest: another recipe would no longer find earlier results."""
    cfg = sweep_job(tmp_path, "method.epochs=3")
    text = json.dumps(numbers_config(cfg), sort_keys=True)
    assert config_hash(cfg) == hashlib.sha256(text.encode()).hexdigest()[:16]


def test_the_hash_does_not_depend_on_the_order_of_keys(tmp_path):
    cfg = sweep_job(tmp_path, "method.epochs=3")
    container = OmegaConf.to_container(cfg, resolve=False)
    shuffled = OmegaConf.create(reversed_keys(container))
    assert list(shuffled.keys()) != list(cfg.keys())
    assert config_hash(shuffled) == config_hash(cfg)


def test_a_job_beside_a_result_of_its_own_config_says_nothing(tmp_path, caplog):
    write_result(tmp_path, "0_job", "method.epochs=3")
    cfg = sweep_job(tmp_path, "method.epochs=3")
    digest = config_hash(cfg)
    with caplog.at_level(logging.WARNING, logger="sealab.sweep.resume"):
        keep_other_results(cfg, digest, tmp_path / "sweep" / f"0_job_{digest}")
    assert caplog.records == []


def test_a_job_beside_another_configs_result_is_told_what_differs_and_where_it_goes(tmp_path, caplog):
    usual = write_result(tmp_path, "0_job", "method.epochs=3", "seed=2")
    cfg = sweep_job(tmp_path, "method.epochs=4", "seed=5")
    digest = config_hash(cfg)
    with caplog.at_level(logging.WARNING, logger="sealab.sweep.resume"):
        keep_other_results(cfg, digest, tmp_path / "sweep" / f"0_job_{digest}")
    (message,) = [r.getMessage() for r in caplog.records]
    assert message == (f"resume=true: {usual} holds the result of another config (method.epochs: 3 -> 4, "
                       f"seed: 2 -> 5); it is kept, and this job writes beside it, into 0_job_{digest}")


def test_a_job_in_another_configs_dir_refuses_and_says_how_to_go_on(tmp_path):
    own = write_result(tmp_path, "run", "method.epochs=3")
    cfg = sweep_job(tmp_path, "method.epochs=4")
    with pytest.raises(SystemExit) as refused:
        keep_other_results(cfg, config_hash(cfg), own)
    assert str(refused.value) == (
        f"resume=true: {own} holds the result of another config (method.epochs: 3 -> 4); it is kept and "
        "nothing was run. Give this run its own folder: another hydra.sweep.dir (or hydra.run.dir), or "
        "resume=false to replace that result")


def test_a_result_hashed_from_the_same_settings_says_another_version_hashed_it(tmp_path):
    own = write_result(tmp_path, "run", "method.epochs=3")
    record = json.loads((own / "metrics.json").read_text())
    (own / "metrics.json").write_text(json.dumps({**record, "config_hash": "0" * 16}))
    cfg = sweep_job(tmp_path, "method.epochs=3")
    with pytest.raises(SystemExit, match=r"another config \(no setting \(it was hashed by another sealab "
                                         r"version\)\); it is kept"):
        keep_other_results(cfg, config_hash(cfg), own)


def test_without_the_sweep_folder_nothing_is_resumed_and_the_message_says_why():
    assert nothing_to_resume(["hydra.sweep.dir=multirun/a"]) is None
    assert nothing_to_resume(["method=linear"]) == (
        "resume=true, but without hydra.sweep.dir=<the folder of the sweep to resume> this job writes into a "
        "new folder and nothing is resumed")


def test_the_job_dir_resolver_is_registered_once():
    OmegaConf.clear_resolver(JOB_DIR_RESOLVER)
    register_job_dir_resolver()
    register_job_dir_resolver()  # a second call (another job of the same process) is no error
    assert OmegaConf.has_resolver(JOB_DIR_RESOLVER)
    node = OmegaConf.create({"resume": False, "subdir": "${" + JOB_DIR_RESOLVER + ":3_job}"})
    assert node.subdir == "3_job"
