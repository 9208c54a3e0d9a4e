"""Hydra answers before anything heavy is imported: ``sealab-train --help``, ``--cfg job``, a compose
error and shell completion need only hydra and omegaconf (a check of what is imported, not of time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# Seconds to import each; none of them is needed before a run starts.
HEAVY = ("torch", "torchvision", "lightning", "pytorch_lightning", "torchmetrics", "timm", "wandb",
         "pandas", "sklearn", "scipy", "matplotlib")

# Runs sealab-train's entry point with the given argv and, whichever way it exits (Hydra calls
# sys.exit on a compose error), prints the heavy modules it had imported as the last line.
PROBE = """
import atexit, json, sys
heavy = {heavy!r}
atexit.register(lambda: print("\\n" + json.dumps([m for m in heavy if m in sys.modules])))
sys.argv = ["sealab-train", *{argv!r}]
{code}
"""


def _imported(argv: list[str], code: str, env: dict[str, str] | None = None) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY, argv=argv, code=code)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no output ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1])


def test_importing_the_entry_point_is_light():
    assert _imported([], "import sealab.train") == []


def test_importing_the_sweep_callback_is_light():
    # Hydra instantiates it before every run and sweep.
    assert _imported([], "import sealab.sweep.callback") == []


@pytest.mark.parametrize(("argv", "env"), [
    (["--help"], None),
    (["--cfg", "job"], None),
    (["method=nope"], None),  # a compose error
    (["-sc", "query=bash"], {"COMP_LINE": "sealab-train method=s"}),  # one TAB of shell completion
], ids=["help", "cfg_job", "compose_error", "completion"])
def test_hydra_answers_without_heavy_imports(argv, env, tmp_path):
    env = {**(env or {}), "SEALAB_ROOT": str(tmp_path)}
    assert _imported(argv, "from sealab.train import main\nmain()", env) == []


def test_a_run_on_cached_features_imports_no_backbone_logger_or_table_library():
    # timm comes with a backbone that is built, wandb with logger=wandb, pandas with a sweep's
    # summary, scikit-learn with a dataset that splits or ships through it. (matplotlib, scipy and
    # torchvision are not checked: Lightning imports them, through torchmetrics.)
    imported = _imported([], "import sealab.experiment")
    assert "torch" in imported and not {"timm", "wandb", "pandas", "sklearn"} & set(imported)
