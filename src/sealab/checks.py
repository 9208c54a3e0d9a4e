"""Checks of the composed configuration, run when a run starts, before any data is read. Each
failure names the key at fault and what to set instead.

The one mechanism is a table, ``RULES``: dotted key -> the type and range its value must have,
walked over the composed config (top-level keys, ``extract.*`` and every ``method.*`` node
present: a method's head, optimizer and augmenter are found by their keys, and each value of
``method.grid`` is held to the rule of the key it varies). Keys without a rule are left to Hydra
(misspelt overrides) and to instantiate (arguments a class does not take).

Why a table rather than dataclass schemas registered with Hydra's ConfigStore: a method config
is a tree of ``_target_`` nodes whose keys change with the method, augmenter and optimizer an
experiment or override picks; a schema per component would repeat every constructor's signature,
would have to be named in each YAML's defaults list, and would check types only (OmegaConf has
no ranges). The table states type and range together, in the message a user sees.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

FIT_ON = ("train", "trainval")

# Trainer arguments the run sets itself: an override in trainer.* would be silently replaced.
TRAINER_KEYS_SET_ELSEWHERE = {
    "max_epochs": "method.epochs",
    "max_steps": "method.epochs (or method.steps for method=finetune)",
    "accelerator": "device (auto, cpu, cuda, cuda:N)",
    "devices": "devices=N (how many processes; which kind: device=auto, cpu or cuda)",
    "strategy": "devices=N (N > 1 runs DDP over N processes)",
    "logger": "logger=<csv|wandb> (or ~logger for none)",
}


@dataclass(frozen=True)
class Rule:
    """What a value must be: ``kind`` is int, number (int or float), bool or str (then one of
    ``choices``); numbers lie between ``low`` and ``high`` (excluded when ``open_*``); ``also``
    lists literal values accepted besides (e.g. "auto"); ``nullable`` accepts null."""

    kind: str
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple[str, ...] = ()
    also: tuple[Any, ...] = ()
    nullable: bool = False

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if value in self.also:
            return True
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "str":
            return value in self.choices
        # bool is an int subclass in Python: true/false is no count or step size
        numeric = isinstance(value, int if self.kind == "int" else (int, float)) and not isinstance(value, bool)
        if not numeric or not math.isfinite(value):
            return False
        return ((self.low is None or value > self.low or (value == self.low and not self.open_low))
                and (self.high is None or value < self.high or (value == self.high and not self.open_high)))

    def describe(self) -> str:
        if self.kind == "bool":
            text = "true or false"
        elif self.kind == "str":
            text = "one of " + ", ".join(map(repr, self.choices))
        else:
            text = "an integer" if self.kind == "int" else "a number"
            if self.low is not None and self.high is not None:
                text += (f" in {'(' if self.open_low else '['}{self.low}, "
                         f"{self.high}{')' if self.open_high else ']'}")
            elif self.low is not None:
                text += f" {'>' if self.open_low else '>='} {self.low}"
            elif self.high is not None:
                text += f" {'<' if self.open_high else '<='} {self.high}"
        extra = [repr(v) for v in self.also] + (["null"] if self.nullable else [])
        return " or ".join([text, *extra])


def integer(low: int | None = None, high: int | None = None, **kw: Any) -> Rule:
    return Rule("int", low, high, **kw)


def number(low: float | None = None, high: float | None = None, **kw: Any) -> Rule:
    return Rule("number", low, high, **kw)


def positive(**kw: Any) -> Rule:
    return Rule("number", 0, open_low=True, **kw)


def one_of(*choices: str, **kw: Any) -> Rule:
    return Rule("str", choices=tuple(choices), **kw)


BOOL = Rule("bool")
COUNT = integer(1)
WORKERS = integer(0, also=("auto",))

RULES: dict[str, Rule] = {
    # run
    "seed": integer(0, 2**32 - 1),  # Lightning replaces a seed outside this range by a random one
    "fit_on": one_of(*FIT_ON),
    "num_threads": integer(1, nullable=True),
    "devices": COUNT,
    "save_classifier": BOOL,
    "resume": BOOL,
    # extraction
    "extract.batch_size": COUNT,
    "extract.num_workers": WORKERS,
    "extract.channels_last": BOOL,
    "extract.shard_size": COUNT,
    "extract.lock_timeout": number(0),  # seconds; 0: give up at once when another job holds the entry
    # the SGD probe and its components (method=linear and every augmenter; finetune)
    "method.epochs": COUNT,
    "method.steps": integer(1, nullable=True),
    "method.batch_size": COUNT,
    "method.drop_last": BOOL,
    "method.num_workers": WORKERS,
    "method.head.lamda": positive(),
    "method.head.delta": number(),
    "method.optimizer.lr": positive(),
    "method.optimizer.momentum": number(0, 1, open_high=True),
    "method.optimizer.weight_decay": number(0),
    "method.optimizer.nesterov": BOOL,
    "method.augmenter.eta": number(0),
    "method.augmenter.alpha": positive(),  # SeA's softmax temperature; mixup's Beta parameter
    "method.augmenter.concentration": positive(),
    "method.augmenter.sigma": number(0),
    "method.augmenter.lambda0": number(0),
    "method.augmenter.steps": COUNT,
    "method.augmenter.step_size": positive(),
    "method.augmenter.radius": positive(),
    # closed-form methods
    "method.weight_decay": number(0, nullable=True),  # logreg (null: selected on val)
    "method.grid_min": positive(),
    "method.grid_max": positive(),
    "method.grid_size": COUNT,
    "method.max_iter": COUNT,
    "method.tol": positive(),
    "method.history_size": COUNT,
    "method.refit": BOOL,
    "method.k": COUNT,
    "method.temperature": positive(),
    "method.query_chunk": COUNT,
    "method.bank_chunk": COUNT,
    "method.shrinkage": number(0, 1, also=("auto",)),
}


def _missing(cfg: DictConfig, key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return not isinstance(node, DictConfig) or leaf not in node or OmegaConf.is_missing(node, leaf)


def rule_violations(cfg: DictConfig, rules: Mapping[str, Rule]) -> list[str]:
    """One line per value of ``cfg`` that breaks its rule (absent and ``???`` keys are skipped:
    Hydra and instantiate report those)."""
    problems = []

    def check(key: str, value: Any, rule: Rule) -> None:
        if not rule.accepts(value):
            problems.append(f"{key}={value!r}: must be {rule.describe()}")

    for key, rule in rules.items():
        if not _missing(cfg, key):
            check(key, OmegaConf.select(cfg, key), rule)
    grid = OmegaConf.select(cfg, "method.grid")
    for key, values in (grid or {}).items():
        rule = rules.get(f"method.{key}")
        if rule and OmegaConf.is_list(values):
            for i, value in enumerate(values):
                check(f"method.grid.{key}[{i}]", value, rule)
    return problems


def check_run_config(cfg: DictConfig, method_choice: str, rules: Mapping[str, Rule] | None = None) -> None:
    """Every check of the composed config; ``rules`` adds to (or replaces entries of) ``RULES``,
    e.g. choices that the modules using them define."""
    problems = rule_violations(cfg, {**RULES, **(rules or {})})
    for key, use in TRAINER_KEYS_SET_ELSEWHERE.items():
        if key in cfg.trainer:
            problems.append(f"trainer.{key} is set by sealab itself and would be ignored: set {use} instead")
    # A component slot the chosen method leaves empty, filled by settings meant for another
    # method (e.g. an experiment's SeA step landing in the linear probe's augmenter slot).
    for key, node in cfg.method.items():
        # (A grid maps keys to lists; every other mapping in a method config is a component.)
        if key != "grid" and isinstance(node, DictConfig) and "_target_" not in node:
            problems.append(
                f"method.{key} holds settings ({', '.join(map(str, node))}) but method={method_choice} has no "
                f"{key}: they come from an override or an experiment meant for another method. Drop them, "
                f"or choose a method that has one.")
    if problems:
        raise ValueError("invalid configuration (fix these, on the command line or in your config):\n  "
                         + "\n  ".join(problems))
