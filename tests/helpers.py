"""Shared test helpers: compose configs like sealab-train does, run it in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
QUIET = ["trainer.enable_progress_bar=false"]


def compose_train(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """The config ``sealab-train <overrides>`` would run, with ``hydra:`` interpolations usable."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir or Path.cwd())
        cfg.hydra.runtime.cwd = str(Path.cwd())
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


def run_train(root: Path, *overrides: str, multirun: bool = False, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python -m sealab.train`` with data, cache and outputs under ``root``; fail loudly."""
    env = {**os.environ, "SEALAB_ROOT": str(root), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    cmd = [sys.executable, "-m", "sealab.train", *(["-m"] if multirun else []), *overrides, *QUIET]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=root)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def metrics_files(root: Path) -> list[Path]:
    return sorted(root.rglob("metrics.json"))


def read_metrics(path: Path) -> dict:
    return json.loads(path.read_text())
