"""Overrides read with Hydra's parser: which of them make a (failed) run a variant, by the role
each key declares in sealab.settings."""

import pytest

from sealab.sweep.overrides import is_variant, variant


def test_only_what_changes_results_is_a_variant():
    overrides = ["dataset=x", "seed=3", "method=sea", "+method.augmenter.eta=0.3", "norm=center_l2",
                 "optimized_metric=val/top1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                 "num_threads=1", "resume=true", "logger=wandb", "logger.group=g", "paths.cache_dir=/c",
                 "trainer.enable_progress_bar=false", "method.grid={augmenter.eta:[0.3,0.8]}",
                 "extract.batch_size=64", "extract.cache_dtype=float32", "wandb.entity=me", "local=mine"]
    assert variant(overrides) == "+method.augmenter.eta=0.3, norm=center_l2, extract.cache_dtype=float32"


@pytest.mark.parametrize("key, expected", [
    ("extract.cache_dtype", True), ("extract.precision", True), ("trainer.fast_dev_run", True),
    ("dataset.val_fraction", True), ("debug", True), ("my_own_key", True),  # undeclared: changes numbers
    ("seed", False), ("dataset", False), ("method", False), ("method.grid", False),
    ("method.grid.augmenter.eta", False), ("extract.lock_timeout", False), ("wandb.project", False),
    ("trainer.enable_progress_bar", False), ("paths.data_dir", False), ("hydra/launcher", False),
])
def test_a_variant_key_is_one_whose_declared_role_changes_numbers(key, expected):
    assert is_variant(key) is expected


def test_values_are_read_as_written_and_keys_matched_whole():
    # String splitting would take the '=' inside a value for the key's end, or match prefixes.
    assert variant(["msg='a=b, c'"]) == "msg='a=b, c'"
    assert variant(["seed_offset=1", "seed=2"]) == "seed_offset=1"  # another key than seed
    assert variant(["~norm", "+fit_on=trainval"]) == "~norm, +fit_on=trainval"
