"""What a setting's value must be: a ``Rule`` (type, range, choices), declared once beside the
code that owns the setting and read both by the pre-run check of the composed config
(``sealab.checks``) and by the owner's constructor (``validate``), so the two never drift.

A component (a class named by a config node's ``_target_``) declares its rules as a class
attribute ``RULES``: ``{argument: Rule}``; keys with a dot (``"optimizer.lr"``) hold the rules of
a sub-node whose ``_target_`` is not sealab's (e.g. ``torch.optim.SGD``), which the component
owns by building it. Imports neither torch nor Lightning.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    """What a value must be. ``kind``: int, number (int or float), bool, str (one of
    ``choices``), text (any string), list, mapping, or component (a config node with its own
    ``_target_``, checked by that target's rules). Numbers lie between ``low`` and ``high``
    (excluded when ``open_*``); ``also`` lists literal values accepted besides (e.g. "auto");
    ``nullable`` accepts null."""

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
        if isinstance(value, (str, int, float, bool)) and value in self.also and type(value) is not bool:
            return True
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "str":
            return isinstance(value, str) and value in self.choices
        if self.kind == "text":  # a path given from Python is text in a config
            return isinstance(value, (str, os.PathLike))
        if self.kind == "list":
            return isinstance(value, (list, tuple)) or _is_omegaconf(value, "ListConfig")
        if self.kind == "mapping":
            return isinstance(value, Mapping) or _is_omegaconf(value, "DictConfig")
        if self.kind == "component":
            # a config node, or (given to a constructor in Python) the object or factory it builds
            return isinstance(value, Mapping) or _is_omegaconf(value, "DictConfig") or callable(value)
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
        elif self.kind in ("text", "list", "mapping"):
            text = {"text": "a string", "list": "a list", "mapping": "a mapping"}[self.kind]
        elif self.kind == "component":
            text = "a config node with a _target_"
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


def _is_omegaconf(value: Any, name: str) -> bool:
    return type(value).__name__ == name and type(value).__module__.startswith("omegaconf")


def integer(low: int | None = None, high: int | None = None, **kw: Any) -> Rule:
    return Rule("int", low, high, **kw)


def number(low: float | None = None, high: float | None = None, **kw: Any) -> Rule:
    return Rule("number", low, high, **kw)


def positive(**kw: Any) -> Rule:
    return Rule("number", 0, open_low=True, **kw)


def one_of(*choices: str, **kw: Any) -> Rule:
    return Rule("str", choices=tuple(choices), **kw)


def text(**kw: Any) -> Rule:
    return Rule("text", **kw)


def listing(**kw: Any) -> Rule:
    return Rule("list", **kw)


def mapping(**kw: Any) -> Rule:
    return Rule("mapping", **kw)


def component(**kw: Any) -> Rule:
    return Rule("component", **kw)


BOOL = Rule("bool")
COUNT = integer(1)
WORKERS = integer(0, also=("auto",))
NAME = text()  # a method's or dataset's display name

# Hydra's own keys of an instantiable node: no rule needed.
HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")


def problem(key: str, value: Any, rule: Rule) -> str | None:
    """``key=value: must be ...`` when ``value`` breaks ``rule``, else None."""
    return None if rule.accepts(value) else f"{key}={value!r}: must be {rule.describe()}"


def violations(rules: Mapping[str, Rule], values: Mapping[str, Any], prefix: str = "") -> list[str]:
    """One line per value in ``values`` that breaks its rule; a dotted rule key (``optimizer.lr``)
    is looked up inside the mapping ``values`` holds at its first part. Keys absent from
    ``values`` are skipped (defaults apply, or Hydra reports a missing ``???``)."""
    problems = []
    for key, rule in rules.items():
        node: Any = values
        for part in key.split("."):
            if not (isinstance(node, Mapping) or _is_omegaconf(node, "DictConfig")) or part not in node:
                break
            node = node[part]
        else:
            if (found := problem(prefix + key, node, rule)) is not None:
                problems.append(found)
    return problems


def validate(owner: str, rules: Mapping[str, Rule], *, prefix: str = "", **values: Any) -> None:
    """What a constructor calls with its arguments: raises one ValueError listing every value that
    breaks its declared rule, each named by its config key (``prefix``: where the owner's node
    sits), e.g. ``SeA: method.augmenter.eta=-1: must be a number >= 0``: the pre-run check's line."""
    problems = violations(rules, values, prefix)
    if problems:
        raise ValueError(f"{owner}: " + "; ".join(problems))
