"""features.in_memory end to end: a streamed run gives the in-memory run's numbers, auto streams
over the budget, and what cannot stream says which setting to change."""

import re

import pytest
from test_experiment import run_in_process

from sealab.features import store

ONE_BLOCK = "features.block_rows=102400"  # more than the digits train split: the in-memory order


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """One feature cache for the module's runs: the digits features are extracted once."""
    return tmp_path_factory.mktemp("streamed-runs")


@pytest.fixture
def loaded(monkeypatch):
    """The splits a run loaded in RAM."""
    seen = []
    original = store.LazySplits.__getitem__

    def spy(self, split):
        seen.append(split)
        return original(self, split)

    monkeypatch.setattr(store.LazySplits, "__getitem__", spy)
    return seen


def test_a_streamed_run_gives_the_in_memory_numbers_and_never_loads_train(root, loaded):
    common = ["method=sea", "method.epochs=3", ONE_BLOCK]
    in_memory = run_in_process(root, *common, "features.in_memory=true", name="memory")
    assert "train" in loaded
    loaded.clear()
    streamed = run_in_process(root, *common, "features.in_memory=false", name="streamed")
    assert "train" not in loaded and {"val", "test"} <= set(loaded)
    assert streamed["metrics"] == in_memory["metrics"]  # exactly: the same batches in the same order


def test_auto_streams_over_the_budget_only(root, loaded):
    run_in_process(root, "method=linear", "method.epochs=1", "features.memory_budget_gb=1e-4", name="over")
    assert "train" not in loaded
    run_in_process(root, "method=linear", "method.epochs=1", name="under")
    assert "train" in loaded


@pytest.mark.parametrize("overrides, message", [
    (["method=logreg"], "method=logreg needs every training feature in memory"),
    (["method=linear", "fit_on=trainval"], "fit_on=trainval"),
    (["method=linear", "features.in_memory=maybe"], "features.in_memory='maybe': must be true or false or 'auto'"),
])
def test_what_cannot_stream_names_the_setting(root, overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        run_in_process(root, "features.in_memory=false", *overrides, name="fails")
    assert "features.in_memory" in str(err.value)
