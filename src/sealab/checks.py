"""The check of the composed configuration, run when a run starts, before any data is read. Each
failure names the key at fault and what to set instead.

Nothing here states a rule: run-level keys are declared in ``sealab.settings``, and every config
node with a ``_target_`` is held to the ``RULES`` its class declares beside its constructor
(``sealab.rules``), the same rules the constructor applies. Each value of ``method.grid`` is held
to the rule of the key it varies.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from sealab.rules import HYDRA_KEYS, Rule, problem, violations
from sealab.settings import declaration, flatten, run_rules

# Trainer arguments the run sets itself: an override in trainer.* would be silently replaced.
TRAINER_KEYS_SET_ELSEWHERE = {
    "max_epochs": "method.epochs",
    "max_steps": "method.epochs (or method.steps for method=finetune)",
    "accelerator": "device (auto, cpu, cuda, cuda:N)",
    "devices": "devices=N (how many processes; which kind: device=auto, cpu or cuda)",
    "strategy": "devices=N (N > 1 runs DDP over N processes)",
    "logger": "logger=<csv|wandb> (or ~logger for none)",
}
COMPONENTS = ("dataset", "backbone", "method")


def declared_rules(node: Any) -> Mapping[str, Rule]:
    """The ``RULES`` of the class a config node's ``_target_`` names (none for a class that is not
    sealab's, e.g. torch.optim.SGD: its owner declares ``optimizer.lr`` etc.)."""
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return {}
    return getattr(get_object(node._target_), "RULES", {})


def _components(node: Any, path: str) -> Iterator[tuple[str, DictConfig]]:
    """Every node with a ``_target_`` at or below ``node``, with its dotted path."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        for key in node:
            if not OmegaConf.is_missing(node, key):
                yield from _components(node[key], f"{path}.{key}")


def rule_at(node: Any, key: str) -> Rule | None:
    """The rule of dotted ``key`` below the component ``node``: declared by the node's class
    (``optimizer.lr``, ``epochs``) or by a sub-component's (``augmenter.eta``)."""
    rules = declared_rules(node)
    if key in rules:
        return rules[key]
    head, _, rest = key.partition(".")
    if rest and isinstance(node, DictConfig) and head in node:
        return rule_at(node[head], rest)
    return None


def rule_violations(cfg: DictConfig) -> list[str]:
    """One line per value of ``cfg`` that breaks its declared rule (absent and ``???`` keys are
    skipped: Hydra and instantiate report those)."""
    problems = violations(run_rules(), _present(cfg))
    for group in COMPONENTS:
        for path, node in _components(cfg.get(group), group):
            problems += violations(declared_rules(node), _present(node), prefix=path + ".")
    grid = OmegaConf.select(cfg, "method.grid")
    for key, values in (grid or {}).items() if isinstance(grid, DictConfig) else ():
        rule = rule_at(cfg.method, str(key))
        if rule is not None and OmegaConf.is_list(values):
            problems += [p for i, value in enumerate(values)
                         if (p := problem(f"method.grid.{key}[{i}]", value, rule)) is not None]
    return problems


def _present(node: DictConfig) -> dict[str, Any]:
    """``node`` without its ``???`` values (as plain containers where they are nodes)."""
    return {key: node[key] for key in node if not OmegaConf.is_missing(node, key)}


def undeclared_keys(cfg: DictConfig) -> list[str]:
    """Keys of ``cfg`` that nothing declares: a run-level key without a role, or a component key
    (below dataset, backbone or method) without a rule. Shipped configs have none."""
    run_level = {key: value for key, value in OmegaConf.to_container(cfg, resolve=False).items()
                 if key not in COMPONENTS}
    missing = [key for key in flatten(run_level) if declaration(key) is None]
    for group in COMPONENTS:
        if isinstance(cfg.get(group), DictConfig):
            missing += _undeclared_below(cfg[group], group)
    return sorted(missing)


def _is_sealabs(node: Any) -> bool:
    """A node whose ``_target_`` is a sealab class, which declares the node's keys itself."""
    return isinstance(node, DictConfig) and str(node.get("_target_", "")).split(".")[0] == "sealab"


def _undeclared_below(node: DictConfig, path: str) -> list[str]:
    """The keys of component ``node`` without a rule. A sub-node built by a class that is not
    sealab's (``optimizer``: torch.optim.SGD) needs a dotted rule of ``node``'s class per key,
    unless ``node`` declares it a component (any class: a scheduler), which checks its own."""
    missing = []
    for key in node:
        if key in HYDRA_KEYS:
            continue
        child = None if OmegaConf.is_missing(node, key) else node[key]
        if _is_sealabs(child):
            missing += _undeclared_below(child, f"{path}.{key}")
        elif rule_at(node, str(key)) is None:
            if isinstance(child, DictConfig):
                missing += [f"{path}.{key}.{leaf}" for leaf in child
                            if leaf not in HYDRA_KEYS and rule_at(node, f"{key}.{leaf}") is None]
            else:
                missing.append(f"{path}.{key}")
    return missing


def check_run_config(cfg: DictConfig, method_choice: str) -> None:
    """Every check of the composed config, all problems reported at once."""
    problems = rule_violations(cfg)
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

