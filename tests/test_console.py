"""What a job prints: one line per event, and an error written for the user as its message alone."""

import io
import logging
import warnings
from pathlib import Path

import pytest
from hydra.errors import InstantiationException

from sealab.console import (UserError, as_user_error, command_line_problem, filter_known_warnings, job_console,
                            quiet_lightning,
                            written_for_the_user)
from sealab.rules import integer, validate
from sealab.sweep.outcome import error_line


def raised(fn):
    try:
        fn()
    except Exception as err:  # noqa: BLE001 - the error under test
        return err
    raise AssertionError("nothing raised")


def rule_error():
    return raised(lambda: validate("Probe", {"epochs": integer(1)}, prefix="method.", epochs=0))


def test_only_a_raise_statement_of_sealab_is_written_for_the_user():
    assert written_for_the_user(rule_error())
    assert not written_for_the_user(raised(lambda: int("abc")))  # Python's, not sealab's
    # a bug in sealab code: an attribute error where sealab's line is no raise statement
    assert not written_for_the_user(raised(lambda: validate("Probe", None, epochs=0)))


def test_a_user_error_carries_the_message_and_where_the_traceback_is():
    err = rule_error()
    wrapped = InstantiationException("Error in call to target 'Probe':\n" + str(err))
    wrapped.__cause__ = err  # as Hydra's instantiate raises it
    clean = as_user_error(wrapped, Path("run/train.log"))
    assert isinstance(clean, UserError)
    assert str(clean) == "Probe: method.epochs=0: must be an integer >= 1\n(the traceback is in run/train.log)"
    clean.__cause__ = wrapped
    # failed.json still reports sealab's error itself, not the console's wrapper
    assert error_line(clean) == "ValueError: Probe: method.epochs=0: must be an integer >= 1"
    assert as_user_error(raised(lambda: int("abc")), Path("x.log")) is None


@pytest.fixture
def console():
    """A console handler on the root logger, as Hydra's, reading what it printed."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    yield lambda: stream.getvalue().splitlines()
    root.removeHandler(handler)
    root.setLevel(level)


def test_a_repeated_warning_shows_once_then_its_count(console):
    log = logging.getLogger("sealab.metrics")
    with job_console():
        for n in range(50):
            log.warning("11-point mAP: %d of %d classes have no positive example", 2, 20 + n % 2)
        log.warning("another warning")
        log.info("an info line")
        log.info("an info line")  # info lines are not events to count
    assert console() == ["11-point mAP: 2 of 20 classes have no positive example", "another warning",
                         "an info line", "an info line",
                         "11-point mAP: 2 of 20 classes have no positive example [repeated 49 more time(s) in "
                         "this job; each is in the job's log file]"]
    with job_console():  # a new job counts afresh
        log.warning("another warning")
    assert console()[-1] == "another warning"


def test_lightning_lines_appear_once_without_its_tips(console, capfd):
    quiet_lightning()
    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    rank_zero_info("GPU available: False, used: False")
    rank_zero_info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
    assert console() == ["GPU available: False, used: False"]
    assert capfd.readouterr().err == ""  # Lightning's own handler printed it a second time


def issue(message: str, module: str) -> list[str]:
    """Warnings shown when ``message`` is issued from a module named ``module``."""
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        filter_known_warnings()
        exec("import warnings; warnings.warn(message, FutureWarning)", {"__name__": module, "message": message})
    return [str(w.message) for w in shown]


def test_known_deprecation_warnings_are_filtered_by_message_and_module():
    leaf = "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)` instead."
    assert issue(leaf, "lightning.pytorch.utilities._pytree") == []
    assert issue(leaf, "sealab.features.batches") == [leaf]  # the same call elsewhere still shows
    assert issue("something else is deprecated", "lightning.pytorch.utilities._pytree") == [
        "something else is deprecated"]


@pytest.mark.parametrize("argv, fix", [
    (["trainer=cpu"], "use device=cpu"),
    (["-m", "seed=0,1", "trainer=gpu"], "use device=cuda"),
    (["+trainer=default,cpu"], "use device=cpu"),
])
def test_an_old_choice_names_its_replacement(argv, fix):
    assert fix in command_line_problem(argv)


def test_a_choice_whose_plugin_is_missing_names_the_install(monkeypatch):
    import importlib.util

    missing = {"hydra_plugins.hydra_optuna_sweeper"}
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a))
    for argv in (["hparams_search=sea_optuna", "dataset=dtd"], ["-m", "hydra/sweeper=optuna"]):
        assert command_line_problem(argv).endswith("(hydra_plugins.hydra_optuna_sweeper): pip install 'sealab[launchers]'")
    assert command_line_problem(["-m", "hydra/launcher=joblib", "method=linear,sea", "device=cpu"]) is None  # installed
    assert command_line_problem(["method=sea", "trainer=default", "--cfg", "job"]) is None


def test_wandb_is_not_handed_the_setting_it_warns_has_no_effect(tmp_path, monkeypatch, capfd):
    from helpers import compose_train

    from sealab.loggers import run_logger

    monkeypatch.setenv("WANDB_SILENT", "false")  # its warnings reach stderr, as a user sees them
    cfg = compose_train(["logger=wandb", f"logger.save_dir={tmp_path}"], output_dir=tmp_path)
    with run_logger(cfg) as logger:
        assert "anonymous" not in logger._wandb_init
    assert "anonymous setting has no effect" not in capfd.readouterr().err
