"""Overrides read with Hydra's parser: what makes a run a variant, and the value of one key."""

from sealab.sweep.overrides import override_value, variant


def test_only_what_changes_results_is_a_variant():
    overrides = ["dataset=x", "seed=3", "method=sea", "+method.augmenter.eta=0.3", "norm=center_l2",
                 "optimized_metric=val/top1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                 "num_threads=1", "resume=true", "logger=wandb", "logger.group=g", "paths.cache_dir=/c",
                 "trainer.enable_progress_bar=false", "method.grid={augmenter.eta:[0.3,0.8]}"]
    assert variant(overrides) == "+method.augmenter.eta=0.3, norm=center_l2"
    assert variant(overrides, exclude=("norm",)) == "+method.augmenter.eta=0.3"


def test_values_are_read_as_written_and_keys_matched_whole():
    # String splitting would take the '=' inside the dict for the key's end, or match prefixes.
    overrides = ["method.grid={augmenter.eta:[0.3,0.8]}", "norm_extra=a", "~norm", "+fit_on=trainval",
                 "msg='a=b, c'"]
    assert override_value(overrides, "method.grid") == "{augmenter.eta:[0.3,0.8]}"
    assert override_value(overrides, "norm") is None  # only deleted; norm_extra is another key
    assert override_value(overrides, "fit_on") == "trainval"
    assert override_value(overrides, "msg") == "'a=b, c'"
    assert variant(["msg='a=b, c'"]) == "msg='a=b, c'"
