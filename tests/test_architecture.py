"""Imports run one way: foundations -> data -> backbones -> features -> augment/heads -> methods
-> experiment -> sweep / entry points. A module never imports from a later layer."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "sealab"
LAYERS = [
    {"rules", "settings", "objective", "metrics", "task", "fileio", "device", "checks", "job", "distributed"},
    {"data"},
    {"backbones"},
    {"features"},
    {"heads", "augment"},
    {"methods"},
    {"experiment", "report", "loggers"},
    {"sweep", "train", "interrupt", "console", "bench", "estimators", "cache_cli"},
]


def layer_of(module: str) -> int:
    top = module.split(".")[1] if module.startswith("sealab.") else module
    return next(i for i, names in enumerate(LAYERS) if top in names)


def sealab_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sealab."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sealab.")}
    return found


MODULES = sorted(p for p in SRC.rglob("*.py") if p.name != "__init__.py")


def test_every_module_has_a_layer():
    for path in MODULES:
        layer_of("sealab." + path.relative_to(SRC).with_suffix("").as_posix().replace("/", "."))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(SRC).as_posix())
def test_imports_point_to_earlier_layers_only(path):
    own = layer_of("sealab." + path.relative_to(SRC).with_suffix("").as_posix().replace("/", "."))
    against = [m for m in sealab_imports(path) if layer_of(m) > own]
    assert not against, f"{path.relative_to(SRC)} (layer {own}) imports {against}"
