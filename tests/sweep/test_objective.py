"""What sealab-train hands an optimising sweeper: a validation metric, never a test one."""

import pytest

from sealab.objective import check_search_metric, objective

RECORD = {"primary_metric": "test/mean_per_class",
          "metrics": {"val/top1": 0.7, "val/mean_per_class": 0.6, "test/top1": 0.9, "test/mean_per_class": 0.8}}


def test_default_is_the_validation_twin_of_the_primary_metric():
    assert objective(RECORD, None) == 0.6
    assert objective(RECORD, "val/top1") == 0.7
    # no validation split (fit_on=trainval) and nothing named: nothing to optimise
    assert objective({"primary_metric": "test/top1", "metrics": {"test/top1": 0.9}}, None) is None


def test_an_unknown_metric_fails_with_the_ones_available():
    with pytest.raises(ValueError, match=r"'val/top5' is not a metric of this run: choose one of "
                                         r"val/mean_per_class, val/top1$"):
        objective(RECORD, "val/top5")


@pytest.mark.parametrize("name", ["test/top1", "top1"])
def test_a_search_may_not_read_test_metrics(name):
    with pytest.raises(ValueError, match="only read validation metrics"):
        check_search_metric(name)
    check_search_metric("val/top1")
    check_search_metric(None)
