"""What a job prints: an error written for the user reaches the console as its message alone."""

from pathlib import Path

from hydra.errors import InstantiationException

from sealab.console import UserError, as_user_error, written_for_the_user
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
