"""One run: dataset -> features -> normalise -> fit the method -> evaluate -> metrics.json.
(An ``ImageMethod``, i.e. fine-tuning, skips the features: it trains and is scored on images.)"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sealab.backbones.base import Backbone
from sealab.data.base import SPLITS, DatasetBase, ImageDataset, PrecomputedFeatures
from sealab.fileio import atomic_write_bytes, atomic_write_json
from sealab.features.extract import run_model
from sealab.features.store import SplitFeatures, load_split_features
from sealab.heads.normalize import FeatureNormalizer
from sealab.methods import FitContext, ImageMethod, Method
from sealab.metrics import classification_metrics
from sealab.report import git_sha, print_metrics, write_metrics

log = logging.getLogger(__name__)
FIT_ON = ("train", "trainval")


def _task_overrides() -> list[str]:
    """The command-line overrides of this job (a sweep job's own values included)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _choice(group: str, cfg: DictConfig) -> str:
    """The config-group option picked for this run (e.g. ``sea`` for method)."""
    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get(group)
        if choice:
            return str(choice)
    return str(cfg[group].get("_target_", "?")).rsplit(".", 1)[-1]


@torch.no_grad()
def _scores(model: nn.Module, x: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    return torch.cat([model(x[i:i + chunk]) for i in range(0, len(x), chunk)])


def split_metrics(scored: dict[str, tuple[torch.Tensor, torch.Tensor]], dataset: DatasetBase) -> dict[str, float]:
    """``{"<split>/<metric>": value}`` from each split's ``(scores, targets)``."""
    metrics = {}
    for split, (scores, y) in scored.items():
        values = classification_metrics(scores, y, dataset.num_classes, dataset.multilabel)
        metrics.update({f"{split}/{name}": value for name, value in values.items()})
    return metrics


def evaluate(model: nn.Module, splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
             dataset: DatasetBase) -> dict[str, float]:
    return split_metrics({split: (_scores(model, x), y) for split, (x, y) in splits.items()}, dataset)


FitResult = tuple[nn.Module, float, dict[str, float]]  # classifier, fit seconds, metrics


def _fit_on_features(method: Method, features: SplitFeatures, dataset: DatasetBase, cfg: DictConfig,
                     ctx: FitContext) -> FitResult:
    train, val, test = (features.splits[s] for s in SPLITS)
    if cfg.fit_on == "trainval":
        train, val = (torch.cat([train[0], val[0]]), torch.cat([train[1], val[1]])), None
    normalizer = FeatureNormalizer(cfg.norm).fit(train[0])
    start = time.perf_counter()
    scorer = method.fit((normalizer(train[0]), train[1]),
                        None if val is None else (normalizer(val[0]), val[1]), ctx)
    fit_seconds = time.perf_counter() - start
    classifier = nn.Sequential(normalizer, scorer).cpu().eval()
    evaluated = {"test": test} if val is None or method.val_metrics else {"val": val, "test": test}
    return classifier, fit_seconds, {**method.val_metrics, **evaluate(classifier, evaluated, dataset)}


def _fit_on_images(method: ImageMethod, dataset: ImageDataset, backbone: Backbone, cfg: DictConfig,
                   ctx: FitContext) -> FitResult:
    refit = cfg.fit_on == "trainval"
    start = time.perf_counter()
    classifier = method.fit_images(dataset.split(cfg.fit_on), None if refit else dataset.split("val"),
                                   backbone, ctx)
    fit_seconds = time.perf_counter() - start
    scored = {split: run_model(classifier, dataset.split(split), backbone.transform, **cfg.extract,
                               desc=f"{dataset.name}/{split} scores")
              for split in (("test",) if refit else ("val", "test"))}
    return classifier.cpu(), fit_seconds, split_metrics(scored, dataset)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Execute one configured experiment and return its metrics record."""
    if cfg.fit_on not in FIT_ON:
        raise ValueError(f"fit_on={cfg.fit_on!r}: choose one of {FIT_ON}")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    dataset: DatasetBase = instantiate(cfg.dataset)
    precomputed = isinstance(dataset, PrecomputedFeatures)
    backbone = None if precomputed else instantiate(cfg.backbone)
    atomic_write_json(run_dir / "dataset.json", dataset.describe())
    method: Method = instantiate(cfg.method)
    on_images = isinstance(method, ImageMethod)
    if on_images and precomputed:
        raise ValueError(f"method={method.name} trains the backbone on images, but dataset "
                         f"{dataset.name} holds precomputed features: choose an image dataset")
    # Fine-tuning trains on the images themselves: nothing to extract.
    features = (SplitFeatures({}, cache_hit=False, extract_seconds=0.0) if on_images
                else load_split_features(dataset, backbone, cfg.paths.cache_dir, **cfg.extract))
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    try:
        if logger:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        ctx = FitContext(num_classes=dataset.num_classes, multilabel=dataset.multilabel, seed=cfg.seed,
                         make_trainer=lambda **kw: instantiate(cfg.trainer, logger=logger, **kw),
                         primary_metric=dataset.primary_metric)
        if on_images:
            classifier, fit_seconds, metrics = _fit_on_images(method, dataset, backbone, cfg, ctx)
        else:
            classifier, fit_seconds, metrics = _fit_on_features(method, features, dataset, cfg, ctx)
        if logger:
            logger.log_metrics(metrics)
    finally:
        if logger:
            logger.finalize("success")
            if hasattr(logger, "experiment") and type(logger).__name__ == "WandbLogger":
                logger.experiment.finish()

    if cfg.save_classifier:
        atomic_write_bytes(run_dir / "classifier.pt", lambda p: torch.save(classifier.state_dict(), p))
    record = {
        "dataset": getattr(dataset, "name", _choice("dataset", cfg)),
        "backbone": getattr(dataset, "backbone", None) if precomputed else _choice("backbone", cfg),
        "method": method.name,
        "seed": cfg.seed,
        "overrides": _task_overrides(),
        "norm": cfg.norm,
        "fit_on": cfg.fit_on,
        "metrics": metrics,
        "primary_metric": f"test/{dataset.primary_metric}",
        "fit_seconds": fit_seconds,
        # What the method chose itself (e.g. logreg's validation-selected weight decay).
        **({"selected": method.selected} if getattr(method, "selected", None) else {}),
        "extract_seconds": features.extract_seconds,
        "cache_hit": features.cache_hit,
        "git_sha": git_sha(),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    path = write_metrics(run_dir, record)
    print_metrics(record)
    log.info("wrote %s", path)
    return record
