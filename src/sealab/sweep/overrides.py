"""A run's command-line overrides, read with Hydra's own parser: which of them make it a variant
of its method (a row label of the summary), and the value one of them set."""

from __future__ import annotations

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override

# Keys that name a table cell already (dataset, backbone, method, seed), or do not change what a
# run computes: where and how it is launched, logged, printed or optimised.
NOT_A_VARIANT = {"dataset", "backbone", "method", "seed", "method.grid", "experiment", "hparams_search",
                 "debug", "local", "logger", "num_threads", "optimized_metric", "resume",
                 "trainer.enable_progress_bar"}
NOT_A_VARIANT_PREFIXES = ("paths.", "hydra.", "hydra/", "extract.", "logger.")


def parse(overrides: list[str]) -> list[Override]:
    return OverridesParser.create().parse_overrides(list(overrides))


def _is_variant(override: Override, exclude: tuple[str, ...]) -> bool:
    key = override.key_or_group
    return key not in NOT_A_VARIANT and key not in exclude and not key.startswith(NOT_A_VARIANT_PREFIXES)


def variant(overrides: list[str], exclude: tuple[str, ...] = ()) -> str:
    """What else the run changed (e.g. ``method.augmenter.eta=0.3``): part of its row label.
    Overrides of the keys in ``exclude`` are left out (they label columns instead)."""
    return ", ".join(o.input_line for o in parse(overrides) if _is_variant(o, exclude))


def override_value(overrides: list[str], key: str) -> str | None:
    """The value the overrides give ``key`` as written (None when they leave it alone)."""
    for override in parse(overrides):
        if override.key_or_group == key and not override.is_delete():
            return override.get_value_element_as_str()
    return None
