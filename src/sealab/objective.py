"""``optimized_metric``: the value sealab-train hands a Hydra sweeper that optimises (Optuna). A
validation metric only, and one the run's task produces: both checked before any training."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # sealab.task imports torch: sealab-train imports this module before it may
    from sealab.task import Task


def check_search_metric(name: str | None) -> None:
    """Before the job starts: a search may read validation metrics only."""
    if name is not None and not name.startswith("val/"):
        raise ValueError(f"optimized_metric={name!r}: a search may only read validation metrics "
                         "(val/<metric>, e.g. val/top1); test metrics are for reporting")


def check_metric_of_task(name: str | None, task: Task, validated: bool) -> None:
    """Once the dataset (and so its task) is known, before training: ``name`` is a validation
    metric this run will report. ``validated``: the run scores a validation split (fit_on=train,
    or a grid, which is selected on val even with fit_on=trainval)."""
    if name is None:
        return
    if not validated:
        raise ValueError(f"optimized_metric={name!r}: with fit_on=trainval the validation split is trained "
                         "on, so this run has no validation metric to optimise: use fit_on=train")
    choices = [f"val/{metric}" for metric in task.metric_names]
    if name not in choices:
        raise ValueError(f"optimized_metric={name!r} is not a metric of this run ({type(task).__name__} task): "
                         f"choose one of {', '.join(choices)}")


def objective(record: dict[str, Any], name: str | None) -> float | None:
    """The value a Hydra sweeper optimises: ``name`` (optimized_metric), by default the
    validation twin of the primary metric, so that test data never drives a search. None when a
    run has no validation split and no metric was named."""
    metrics = record["metrics"]
    if name is None:
        name = record["primary_metric"].replace("test/", "val/", 1)
        if name not in metrics:
            return None
    if name not in metrics:
        choices = ", ".join(sorted(k for k in metrics if not k.startswith("test/")))
        raise ValueError(f"optimized_metric={name!r} is not a metric of this run: choose one of {choices}")
    return metrics[name]
