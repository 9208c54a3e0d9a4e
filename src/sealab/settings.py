"""The run-level settings of ``conf/train.yaml`` (everything outside the dataset, backbone and
method components, whose classes declare their own rules): each key's **role** and its rule,
declared once here and read by everything that needs them.

Roles:

- ``RESULT``: changes the numbers. Hashed for ``resume=true``; labels a summary row, a wandb run
  name and a wandb group's runs when it varies in a sweep.
- ``SEED``: changes the numbers as a repetition: hashed, named in wandb runs, averaged over
  (mean +- std) in summaries.
- ``WHERE``: changes only where or how the run goes (files, logging, threads, launching,
  resuming). Neither hashed nor labelling anything.

A declaration names a key (``seed``), a whole node (``paths``: every key below it) or a config
group chosen on the command line (``experiment=...``); the longest declared prefix of a key
decides. The dataset, backbone and method nodes are ``RESULT`` wholesale: they are the
experiment. Imports neither torch nor Lightning (``resume=true`` skips a job before they load).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from sealab.rules import BOOL, COUNT, WORKERS, Rule, integer, number, one_of, positive, text


class Role(Enum):
    RESULT = "changes the numbers"
    SEED = "repeats the run with another seed"
    WHERE = "changes only where or how the run goes"


@dataclass(frozen=True)
class Setting:
    role: Role
    rule: Rule | None = None  # None: a node, a group, or a value Hydra or Lightning check themselves
    owner: str = ""  # the module that reads it


R, S, W = Role.RESULT, Role.SEED, Role.WHERE

# Choices of these rules are defined where they are used and checked there too; the names here
# must match (tests/test_settings.py checks they do).
NORMS = ("l2", "center_l2", "none")
FIT_ON = ("train", "trainval")
PRECISIONS = ("fp32", "bf16", "fp16")
CACHE_DTYPES = ("float16", "float32")

SETTINGS: dict[str, Setting] = {
    # the experiment itself: the components declare their own keys' rules (their RULES)
    "dataset": Setting(R, owner="sealab.data"),
    "backbone": Setting(R, owner="sealab.backbones"),
    "method": Setting(R, owner="sealab.methods"),
    "seed": Setting(S, integer(0, 2**32 - 1), "sealab.experiment"),  # Lightning replaces others by a random one
    "norm": Setting(R, one_of(*NORMS), "sealab.heads.normalize"),
    "fit_on": Setting(R, one_of(*FIT_ON), "sealab.experiment"),
    # DDP fine-tuning splits each batch over the processes: a different run
    "devices": Setting(R, COUNT, "sealab.device"),
    "device": Setting(W, text(), "sealab.device"),  # the same computation on another device
    "save_classifier": Setting(W, BOOL, "sealab.experiment"),
    "num_threads": Setting(W, integer(1, nullable=True), "sealab.train"),
    "optimized_metric": Setting(W, text(nullable=True), "sealab.train"),
    "resume": Setting(W, BOOL, "sealab.train"),
    # extraction: precision and cache dtype change the features (and key the cache); the rest
    # only how fast they are made
    "extract.precision": Setting(R, one_of(*PRECISIONS), "sealab.features.extract"),
    "extract.cache_dtype": Setting(R, one_of(*CACHE_DTYPES), "sealab.features.store"),
    "extract.batch_size": Setting(W, COUNT, "sealab.features.extract"),
    "extract.num_workers": Setting(W, WORKERS, "sealab.features.extract"),
    "extract.channels_last": Setting(W, BOOL, "sealab.features.extract"),
    "extract.shard_size": Setting(W, COUNT, "sealab.features.store"),
    # seconds; 0: give up at once when another job holds the entry
    "extract.lock_timeout": Setting(W, number(0), "sealab.features.store"),
    # streaming visits the training rows in another order than in memory: other numbers
    "features.in_memory": Setting(R, Rule("bool", also=("auto",)), "sealab.features.ondisk"),
    "features.memory_budget_gb": Setting(R, positive(), "sealab.features.ondisk"),
    "features.block_rows": Setting(R, COUNT, "sealab.features.ondisk"),
    "features.chunk_rows": Setting(R, COUNT, "sealab.features.ondisk"),
    # Lightning's Trainer: what bounds or orders training changes numbers (fast_dev_run,
    # limit_*_batches, deterministic, precision, ...); what it prints or saves does not
    "trainer": Setting(R, owner="sealab.experiment"),
    "trainer.default_root_dir": Setting(W),
    "trainer.check_val_every_n_epoch": Setting(W),
    "trainer.num_sanity_val_steps": Setting(W),
    "trainer.log_every_n_steps": Setting(W),
    "trainer.enable_checkpointing": Setting(W),
    "trainer.enable_model_summary": Setting(W),
    "trainer.enable_progress_bar": Setting(W),
    # where files go, how results are logged, how jobs are launched
    "paths": Setting(W, owner="conf/paths"),
    "logger": Setting(W, owner="sealab.loggers"),
    "wandb": Setting(W, owner="sealab.loggers"),  # a local config's wandb.project / wandb.entity
    "hydra": Setting(W, owner="hydra"),
    # config groups picked on the command line (their values land in the keys above)
    "experiment": Setting(R),
    "hparams_search": Setting(R),
    "debug": Setting(R),  # debug=fast trains one batch: never the same numbers
    "tuned": Setting(R),
    "local": Setting(W),
}


def declaration(key: str) -> Setting | None:
    """The setting that governs ``key`` (``a.b.c``; a group override ``hydra/launcher`` reads as
    ``hydra.launcher``): the longest declared prefix, or None when nothing declares it."""
    parts = key.replace("/", ".").lstrip("~+").split(".")
    for end in range(len(parts), 0, -1):
        found = SETTINGS.get(".".join(parts[:end]))
        if found is not None:
            return found
    return None


def role(key: str) -> Role:
    """The role of ``key``. An undeclared key (e.g. a root key a user's own config adds) is
    treated as changing the numbers: hashing too much re-runs a job, hashing too little would
    reuse a result made with other settings."""
    found = declaration(key)
    return found.role if found is not None else Role.RESULT


def run_rules() -> dict[str, Rule]:
    """The rules of the run-level keys that take a value."""
    return {key: s.rule for key, s in SETTINGS.items() if s.rule is not None}


def rule(key: str) -> Rule:
    """The declared rule of run-level ``key`` (for its owner's own checks)."""
    found = SETTINGS[key].rule
    assert found is not None, f"{key} declares no rule"
    return found


def flatten(container: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a.b.c": leaf}`` for every leaf of a nested mapping (lists are leaves)."""
    flat: dict[str, Any] = {}
    for key, value in container.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def changes_numbers(key: str) -> bool:
    return role(key) is not Role.WHERE


def labels_a_row(key: str) -> bool:
    """A key whose differing values must split a summary row (seeds are averaged instead)."""
    return role(key) is Role.RESULT
