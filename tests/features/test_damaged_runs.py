"""A run on a cache entry whose rows were overwritten in place (size, header and labels intact, so
only the rows' sha256 tells): loaded or streamed, the damage is found before training, the entry
is extracted again, the run gives exactly the numbers of a run on a clean cache, and metrics.json
says the split was repaired."""

import logging

import numpy as np
import pytest
from test_experiment import run_in_process

from sealab.features.cache import CacheEntry

QUICK = ["experiment=quickstart", "method.epochs=2"]


def train_entry(cache_dir):
    entries = [CacheEntry.open(p) for p in cache_dir.iterdir() if (p / "meta.json").is_file()]
    return next(e for e in entries if e.meta["identity"]["split"] == "train")


def overwrite_rows(entry, count=300):
    """What a stray writer does: other values in ``count`` rows, in place."""
    rows = np.load(entry.features, mmap_mode="r+")
    rows[100:100 + count] = rows[-count:]
    rows.flush()
    del rows


@pytest.mark.parametrize("in_memory", ["true", "false"])
def test_a_repaired_entry_gives_the_clean_numbers_and_the_record_says_repaired(tmp_path, in_memory, caplog):
    overrides = [*QUICK, f"features.in_memory={in_memory}"]
    run_in_process(tmp_path, *overrides, name="miss")
    clean = run_in_process(tmp_path, *overrides, name="clean")
    assert (clean["cache_hit"], clean["extracted"], clean["repaired"]) == (True, [], [])
    entry = train_entry(tmp_path / "cache")
    overwrite_rows(entry)
    with caplog.at_level(logging.WARNING):
        repaired = run_in_process(tmp_path, *overrides, name="repaired")
    damaged = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(damaged) == 1 and str(entry.dir) in damaged[0] and "extracting again" in damaged[0]
    assert repaired["metrics"] == clean["metrics"]  # exactly: same features, same shuffle
    assert (repaired["cache_hit"], repaired["extracted"], repaired["repaired"]) == (False, ["train"], ["train"])
    train_entry(tmp_path / "cache").verify()  # repaired on disk: the next run is a plain hit
    again = run_in_process(tmp_path, *overrides, name="again")
    assert (again["cache_hit"], again["repaired"], again["metrics"]) == (True, [], clean["metrics"])
