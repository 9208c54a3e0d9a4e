"""Shared test helpers: compose configs like sealab-train does, run it in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from sealab.heads.linear import LinearHead
from sealab.methods.base import FitContext
from sealab.task import MultiClass, make_task
from sealab.train import CONFIG_MODULE

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"  # the repository's conf/, for tests that go over its files
QUIET = ["trainer.enable_progress_bar=false"]


def compose_train(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """The config ``sealab-train <overrides>`` would run, with ``hydra:`` interpolations usable."""
    # From the packaged configs (pkg://sealab.conf), as sealab-train composes them.
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
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


def make_batch(b=12, d=16, c=5, seed=0, dtype=torch.float64):
    """Unit-norm features, labels and a head with seeded N(0, 1) weights (lamda 0.1, delta 0.2)."""
    gen = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(b, d, generator=gen, dtype=dtype), dim=1)
    y = torch.randint(0, c, (b,), generator=gen)
    head = LinearHead(d, MultiClass(c), lamda=0.1, delta=0.2).to(dtype)
    with torch.no_grad():
        head.weight.copy_(torch.randn(c, d, generator=gen, dtype=dtype))
    return x, y, head


def gaussian_blobs(n: int, d: int, c: int, device: torch.device | str = "cpu", seed: int = 5):
    """``n`` unit-length features around ``c`` random class means (labels in turn): classes that
    overlap a little, for fits whose weights are compared."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(c, d, generator=gen)
    y = torch.arange(n) % c
    return F.normalize(means[y] + 1.2 * torch.randn(n, d, generator=gen), dim=1).to(device), y.to(device)


def fit_context(num_classes: int = 3, multilabel: bool = False, seed: int = 0, callbacks=(),
                run_dir: Path | None = None) -> FitContext:
    """What a run hands a method, on the CPU, with a quiet trainer (what the method passes wins,
    its callbacks join ``callbacks``)."""
    import lightning as L

    def make_trainer(**kw):
        quiet = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False,
                     enable_model_summary=False, num_sanity_val_steps=0)
        return L.Trainer(**{**quiet, **kw, "callbacks": [*callbacks, *kw.get("callbacks", [])]})

    return FitContext(task=make_task(num_classes, multilabel), seed=seed, device=torch.device("cpu"),
                      make_trainer=make_trainer, run_dir=run_dir)


def tiny_digits(per_split: int = 40):
    """Digits cut to ``per_split`` images a split: an image dataset that extracts in a second."""
    from sealab.data.base import ImageDataset
    from sealab.data.digits import ArrayImages, Digits

    class TinyDigits(ImageDataset):
        name, num_classes, class_names = "tiny_digits", 10, [str(d) for d in range(10)]

        def __init__(self):
            self.digits = Digits()

        def split(self, name):
            images = self.digits.split(name)
            return ArrayImages(images.images[:per_split], images.labels[:per_split])

        def identity(self):
            return {"dataset": self.name, "per_split": per_split}

    return TinyDigits()
