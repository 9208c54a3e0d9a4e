"""Entry point: ``sealab-train dataset=X backbone=Y method=Z seed=S key=value ...``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

# The configs ship inside the package (conf/ in the repository, sealab/conf once installed; see
# pyproject.toml), so sealab-train works from any directory, editable install or wheel. Add
# your own YAML files with --config-dir DIR or hydra.searchpath.
CONFIG_MODULE = "sealab.conf"


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="train")
def main(cfg: DictConfig) -> float:
    # Imported here, not at the top: torch, Lightning and timm take seconds to import, and
    # --help, --cfg, shell completion and a compose error need none of them.
    from sealab.experiment import run

    record = run(cfg)
    # Returned for Hydra sweepers that optimise a value: the validation twin of the primary
    # metric unless optimized_metric names another, so test data never drives a search.
    metric = cfg.optimized_metric or record["primary_metric"].replace("test/", "val/", 1)
    return record["metrics"].get(metric, float("nan"))


if __name__ == "__main__":
    main()
