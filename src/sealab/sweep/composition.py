"""Why a sweep ran no job: which of its jobs cannot be composed, and how to run the others.

Hydra's basic sweeper composes every job of a batch (by default the whole sweep) before it
launches any, and stops at the first that fails, so one job that cannot be composed (e.g.
``-m method=linear,sea,logreg method.epochs=5``: logreg has no epochs) stops them all. sealab's
sweeper (hydra_plugins/sealab_sweeper) keeps that behaviour: skipping such jobs would run a
sweep other than the one asked for, and Hydra has no override that applies to some config-group
choices only; so sealab explains, after the fact, and proposes one sweep per set of jobs that
share the keys they lack."""

from __future__ import annotations

import shlex
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from sealab.sweep.outcome import error_line
from sealab.sweep.plan import arguments, override_values, planned_jobs


def missing_key(err: BaseException | None) -> str | None:
    """The key a job's override names but its config lacks (``method.epochs``), if that is why
    it cannot be composed."""
    while err is not None:
        if isinstance(err, (ConfigKeyError, ConfigAttributeError)) and err.full_key:
            return str(err.full_key)
        err = err.__cause__
    return None


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def lacking_keys(config_loader: Any, master: DictConfig, job: list[str]) -> tuple[list[str], BaseException | None]:
    """The keys ``job`` overrides that its config lacks (Hydra names one at a time: each is left
    out in turn), and the error left once they are (None: the job then composes)."""
    keys: list[str] = []
    while True:
        try:
            config_loader.load_sweep_config(master_config=master, sweep_overrides=job)
            return keys, None
        except (HydraException, OmegaConfBaseException) as err:
            missing = missing_key(err)  # the key itself, or the node above it (method.augmenter)
            at_fault = [k for k in map(_key, job) if missing and (k == missing or k.startswith(f"{missing}."))]
            if not at_fault:
                return keys, err
            keys += at_fault
            job = [o for o in job if _key(o) not in at_fault]


def _described(jobs: list[list[str]], keys: list[str]) -> str:
    """The jobs by the values they give ``keys`` (``method=linear, method=sea``)."""
    seen = dict.fromkeys(" ".join(f"{k}={v[k]}" for k in keys if k in v) for v in map(override_values, jobs))
    return ", ".join(seen) or "no job of this sweep"


def _command(master: DictConfig, jobs: list[list[str]], dropped: frozenset[str], swept: set[str]) -> str:
    """A sweep of ``jobs`` alone: the command line with the swept keys narrowed to their values
    and the ``dropped`` keys left out."""
    values = [override_values(job) for job in jobs]
    args = []
    for override in master.hydra.overrides.task:
        key = _key(override)
        if key in dropped:
            continue
        if key in swept:
            override = f"{key}={','.join(dict.fromkeys(v[key] for v in values if key in v))}"
        args.append(shlex.quote(override))
    return " ".join(["sealab-train -m", *args])


def composition_report(master: DictConfig, config_loader: Any) -> str | None:
    """Which jobs of the sweep ``master`` cannot be composed and why: the keys at fault with the
    jobs that lack them and those that have them, and one sweep command per set of jobs lacking
    the same keys. None when every job composes (or the jobs cannot be known)."""
    jobs = planned_jobs(master, config_loader)
    if not jobs:
        return None
    outcomes = [lacking_keys(config_loader, master, job) for job in jobs]
    failing = [num for num, (keys, err) in enumerate(outcomes) if keys or err]
    if not failing:
        return None
    parsed = OverridesParser.create(config_loader=config_loader).parse_overrides(arguments(master))
    swept = {o.key_or_group for o in parsed if o.is_sweep_override()}
    # Jobs are told apart by their config-group choices (method=logreg), else every swept value.
    groups = sorted(k for k in swept if k in master.hydra.runtime.choices) or sorted(swept)
    lines = [f"This sweep ran no job: Hydra's basic sweeper composes every job before it starts any, and "
             f"{len(failing)} of its {len(jobs)} jobs cannot be composed."]
    for key in dict.fromkeys(k for keys, _ in outcomes for k in keys):
        without = [job for job, (keys, _) in zip(jobs, outcomes) if key in keys]
        having = [job for job, (keys, _) in zip(jobs, outcomes) if key not in keys]
        lines.append(f"  {key} is not a key of {_described(without, groups)} (it is of {_described(having, groups)}).")
    for num, (_, err) in enumerate(outcomes):
        if err is not None:
            lines.append(f"  job {num} ({' '.join(jobs[num])}): {error_line(err)}")
    sets: dict[frozenset[str], list[list[str]]] = {}
    for job, (keys, err) in zip(jobs, outcomes):
        if err is None:
            sets.setdefault(frozenset(keys), []).append(job)
    if any(sets):  # Hydra has no override that applies to some config-group choices only
        lines.append("Set a key only for the jobs that have it, with one sweep each (your hydra.* settings "
                     "too, each sweep into its own folder), e.g.:")
        lines += [f"  {_command(master, group, keys, swept)}" for keys, group in sets.items()]
        lines.append("then one table of them all: sealab-summary <sweep dir> <sweep dir> ... --out <folder>")
    return "\n".join(lines)
