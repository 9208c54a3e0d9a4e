"""Entry point: ``sealab-train dataset=X backbone=Y method=Z seed=S key=value ...``."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from sealab.experiment import run

# conf/ lives at the top of the repository (src layout, editable install).
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    record = run(cfg)
    # Returned for Hydra sweepers that optimise a value: the validation twin of the primary
    # metric unless optimized_metric names another, so test data never drives a search.
    metric = cfg.optimized_metric or record["primary_metric"].replace("test/", "val/", 1)
    return record["metrics"].get(metric, float("nan"))


if __name__ == "__main__":
    main()
