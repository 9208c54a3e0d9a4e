"""sealab as a user installs it: a plain (non-editable) wheel, run from an empty directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import CONF_DIR, REPO

SRC = REPO / "src" / "sealab"
# What the build reads; copied so that setuptools' build/ and egg-info stay out of the
# working tree and no stale build/lib file can slip into the wheel.
BUILD_INPUTS = ("pyproject.toml", "README.md", "src", "conf")


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel ``pip wheel .`` builds from this checkout, offline and without build isolation."""
    tmp = tmp_path_factory.mktemp("wheel")
    project = tmp / "project"
    project.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in BUILD_INPUTS:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, project / name, ignore=ignore)
        else:
            shutil.copy2(source, project / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "--quiet", "-w", str(tmp / "dist"), str(project)])
    (built,) = (tmp / "dist").glob("sealab-*.whl")
    return built


def test_wheel_carries_every_config_and_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"sealab/conf/{p.relative_to(CONF_DIR).as_posix()}" for p in CONF_DIR.rglob("*.yaml")}
    assert configs, f"no configs under {CONF_DIR}"
    assert configs <= names, f"missing from the wheel: {sorted(configs - names)}"
    assert "sealab/conf/__init__.py" in names  # Hydra's pkg:// source imports the package
    # Every module of every subpackage, so a package the build does not discover shows here.
    modules = {f"sealab/{p.relative_to(SRC).as_posix()}" for p in SRC.rglob("*.py")
               if "__pycache__" not in p.parts}
    assert modules <= names, f"missing from the wheel: {sorted(modules - names)}"
    # sealab's sweeper, in Hydra's plugin namespace package (no __init__.py of its own there)
    assert {"hydra_plugins/sealab_sweeper/__init__.py", "hydra_plugins/sealab_sweeper/sealab_sweeper.py"} <= names
    assert "hydra_plugins/__init__.py" not in names


def test_installed_wheel_trains_from_an_empty_directory(wheel, tmp_path):
    site = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
          "--target", str(site), str(wheel)])
    root, cwd = tmp_path / "root", tmp_path / "cwd"
    root.mkdir()
    cwd.mkdir()
    # The wheel's sealab first on the path; its dependencies come from this environment.
    env = {**os.environ, "PYTHONPATH": str(site), "SEALAB_ROOT": str(root), "HYDRA_FULL_ERROR": "1",
           "WANDB_MODE": "offline", "WANDB_SILENT": "true"}

    where = _run([sys.executable, "-c", "import sealab, sealab.conf, sealab.train, hydra_plugins.sealab_sweeper as s; "
                  "print(sealab.__file__); print(sealab.conf.__file__); print(s.__file__)"],
                 env=env, cwd=cwd).stdout.split()
    assert all(Path(f).resolve().is_relative_to(site.resolve()) for f in where), where

    # The console script finds the packaged configs (composes and prints, trains nothing).
    script = _run([str(site / "bin" / "sealab-train"), "--cfg", "job"], env=env, cwd=cwd)
    assert "dataset:" in script.stdout

    _run([sys.executable, "-m", "sealab.train", "debug=fast", "trainer.enable_progress_bar=false"],
         env=env, cwd=cwd)
    (metrics,) = root.rglob("metrics.json")
    assert "metrics" in json.loads(metrics.read_text())
    assert not any(cwd.iterdir())  # everything went under SEALAB_ROOT


def test_bench_default_output_is_the_checkout_or_the_current_directory(tmp_path):
    from sealab.bench.cli import default_out

    assert default_out(REPO) == REPO / "bench" / "results.json"
    assert default_out(tmp_path) == tmp_path / "sealab-bench.json"
