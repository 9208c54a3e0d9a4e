"""A run's command-line overrides, read with Hydra's own parser: which of them make it a variant
of its method. What a failed job changed is known from its overrides alone (it left no resolved
config); a finished run's row is labelled from its resolved config instead (sweep.summary)."""

from __future__ import annotations

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override

from sealab.checks import COMPONENTS
from sealab.settings import labels_a_row

# A grid is not a variant itself: each of its heads is one, named by its values (sweep.summary).
GRID = "method.grid"


def parse(overrides: list[str]) -> list[Override]:
    return OverridesParser.create().parse_overrides(list(overrides))


def is_variant(key: str) -> bool:
    """Whether ``key`` (dotted, or a config group) tells a variant of a method apart: its declared
    role changes the numbers, seeds excepted (averaged over), and it does not name the table cell
    already (the dataset, backbone and method choices) nor is a grid."""
    return labels_a_row(key) and key not in COMPONENTS and key != GRID and not key.startswith(GRID + ".")


def variant(overrides: list[str]) -> str:
    """What else the run changed (e.g. ``method.augmenter.eta=0.3``), as written on the command line."""
    return ", ".join(o.input_line for o in parse(overrides) if is_variant(o.key_or_group))
