"""One run: compose -> data -> features -> fit -> evaluate -> record.
(An ``ImageMethod``, i.e. fine-tuning, skips the features: it trains and is scored on images.)"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from sealab.backbones.base import Backbone
from sealab.checks import check_run_config
from sealab.data.base import DatasetBase, ImageDataset, PrecomputedFeatures
from sealab.device import check_devices, rank_device, resolve_device, trainer_placement
from sealab.distributed import broadcast_from_zero, is_rank_zero, launch, rank
from sealab.features.extract import run_model
from sealab.features.ondisk import StreamedFeatures, streams_training_split
from sealab.features.store import CACHE_SETTINGS, SplitFeatures, load_split_features
from sealab.fileio import atomic_torch_save, atomic_write_json
from sealab.heads.normalize import FeatureNormalizer
from sealab.job import choice, sweep_dir, task_overrides, varying_keys
from sealab.loggers import log_results, run_logger
from sealab.methods.base import Features, FitContext, FitResult, ImageMethod, Method
from sealab.report import git_sha, print_metrics, write_metrics
from sealab.objective import check_metric_of_task
from sealab.task import Task

log = logging.getLogger(__name__)

@torch.no_grad()
def class_scores(model: nn.Module, x: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """``model``'s scores of ``x`` (n x C), ``chunk`` rows at a time."""
    return torch.cat([model(x[i:i + chunk]) for i in range(0, len(x), chunk)])


def split_metrics(scored: dict[str, tuple[torch.Tensor, torch.Tensor]], task: Task) -> dict[str, float]:
    """``{"<split>/<metric>": value}`` from each split's ``(scores, targets)``."""
    return {f"{split}/{name}": value for split, (scores, y) in scored.items()
            for name, value in task.metrics(scores, y).items()}


@dataclass
class Fitted:
    """What a run records of its fit: the classifier (normaliser + scorer), what was selected,
    the metrics, every grid head's values and metrics (and its control's), the training time,
    and the metrics of the selected head's control (the head trained beside it without
    augmentation; None without one)."""

    classifier: nn.Module
    selected: dict[str, Any]
    metrics: dict[str, float]
    fit_seconds: float
    grid: list[dict[str, Any]] = field(default_factory=list)
    control: dict[str, float] | None = None


def best_on_validation(metrics: list[dict[str, float]], key: str) -> int:
    """Index of the best ``key`` (a val/ metric: test data never selects); ties go to the first."""
    return max(range(len(metrics)), key=lambda i: (metrics[i][key], -i))


def fit_normalized(method: Method, train: Features | StreamedFeatures, val: Features | None, norm: str,
                   ctx: FitContext) -> tuple[FeatureNormalizer, FitResult, float]:
    """The normaliser fitted on ``train`` (a streamed split: block by block), the method fitted on
    the normalised splits, and the method's fit time: what a run trains, and what sealab's
    scikit-learn estimators (sealab.estimators) train."""
    if isinstance(train, StreamedFeatures):
        normalizer = FeatureNormalizer(norm).fit_rows(train.rows, train.block_rows)
        fit_train = train.with_transform(normalizer.normalize_)
    else:
        normalizer = FeatureNormalizer(norm).fit(train[0])
        fit_train = (normalizer(train[0]), train[1])
    start = time.perf_counter()
    result = method.fit(fit_train, None if val is None else (normalizer(val[0]), val[1]), ctx)
    return normalizer, result, time.perf_counter() - start


def _fit_and_score(method: Method, train: Features | StreamedFeatures, val: Features | None, test: Features,
                   norm: str, ctx: FitContext) -> Fitted:
    """Fit on ``train`` (``fit_normalized``) and score val and test; of a grid, the head with the
    best validation primary metric wins (ties: the first in grid order)."""
    normalizer, result, fit_seconds = fit_normalized(method, train, val, norm, ctx)
    # Val is scored here unless the method measured it before training on it.
    scored = {"test": test} if val is None or result.val_metrics else {"val": val, "test": test}

    def score(scorer: nn.Module) -> tuple[nn.Module, dict[str, float]]:
        classifier = nn.Sequential(normalizer, scorer).cpu().eval()
        metrics = split_metrics({s: (class_scores(classifier, x), y) for s, (x, y) in scored.items()}, ctx.task)
        return classifier, {**result.val_metrics, **metrics}

    controls = [(c.values, score(c.scorer)[1]) for c in result.controls]

    def control_of(values: dict[str, Any]) -> dict[str, float] | None:
        """The metrics of the control that differs from the head of ``values`` in augmentation only."""
        return next((metrics for shared, metrics in controls if shared.items() <= values.items()), None)

    if not result.candidates:
        classifier, metrics = score(result.scorer)
        return Fitted(classifier, result.selected, metrics, fit_seconds, control=control_of({}))
    if val is None:
        raise ValueError("a grid is selected on the validation split, but this fit has none")
    heads = [score(candidate.scorer) for candidate in result.candidates]
    grid = [{"values": c.values, "metrics": metrics, **({"control": control_of(c.values)} if controls else {})}
            for c, (_, metrics) in zip(result.candidates, heads)]
    best = best_on_validation([metrics for _, metrics in heads], f"val/{ctx.task.primary_metric}")
    classifier, metrics = heads[best]
    selected = result.candidates[best].values
    return Fitted(classifier, selected, metrics, fit_seconds, grid, control_of(selected))


# Points of the primary validation metric a method's head may lose to its control (the same head
# trained beside it without augmentation) before the run calls it a collapse: seed-to-seed noise
# on small validation splits stays well below, a too large SeA step costs tens of points.
COLLAPSE_POINTS = 5.0
# Mean pairwise cosine of the L2-normalised training features above which they are "nearly
# collinear" (a randomly initialised resnet10t on digits: 0.99, where SeA collapses; centring
# first cures it), measured on at most COSINE_SAMPLE rows so the check costs O(sample x d).
COLLINEAR_COSINE = 0.95
COSINE_SAMPLE = 4096


def collapse_warning(method: DictConfig, primary_metric: str, metrics: dict[str, float],
                     control: dict[str, float] | None) -> str | None:
    """The warning of a method whose validation score falls ``COLLAPSE_POINTS`` or more below its
    control's, naming the fixes; None otherwise (or without a control or validation score)."""
    key = f"val/{primary_metric}"
    if control is None or key not in metrics or key not in control:
        return None
    gap = 100 * (control[key] - metrics[key])
    if gap < COLLAPSE_POINTS:
        return None
    strengths = [k for k, v in (method.get("augmenter") or {}).items()
                 if not str(k).startswith("_") and isinstance(v, (int, float)) and not isinstance(v, bool)]
    step = "eta" if "eta" in strengths else (strengths or ["<strength>"])[0]
    search = (f"hparams_search=sea_eta{'' if method.name == 'sea' else f' method={method.name}'} (a grid of eta "
              "chosen on val), or " if step == "eta" else "")
    return (f"method={method.name}: validation {primary_metric} {100 * metrics[key]:.2f}% is {gap:.1f} pt below "
            f"its control head's {100 * control[key]:.2f}% (the same head trained beside it without augmentation): "
            f"the augmentation is too strong for these features. Fixes: {search}"
            f"method.grid='{{augmenter.{step}:[...]}}' (smaller values, the best chosen on val), or norm=center_l2 "
            "(centred features make SeA far less sensitive to its step)")


def mean_pairwise_cosine(x: torch.Tensor) -> float:
    """The mean of ``x_i . x_j`` over pairs ``i != j`` of the L2-normalised rows, without the Gram
    matrix: ``(||sum_i x_i||^2 - sum_i ||x_i||^2) / (n (n - 1))`` (a zero row counts as zeros)."""
    x = FeatureNormalizer("l2")(x.double())
    n = len(x)
    if n < 2:
        return float("nan")
    return float((x.sum(dim=0).square().sum() - x.square().sum()) / (n * (n - 1)))


def training_sample(train: Features | StreamedFeatures, rows: int = COSINE_SAMPLE) -> torch.Tensor:
    """At most ``rows`` training rows drawn at random (a generator of its own: the run's random
    stream is untouched); of features streamed from disk, from the first block alone."""
    x = (torch.from_numpy(train.rows.read(0, train.block_rows)) if isinstance(train, StreamedFeatures)
         else train[0])
    pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:rows]
    return x[pick]


def collinearity_warning(train: Features | StreamedFeatures, norm: str) -> str | None:
    """The warning of nearly collinear features under ``norm=l2`` (see ``COLLINEAR_COSINE``)."""
    if norm != "l2":
        return None
    cosine = mean_pairwise_cosine(training_sample(train))
    if not cosine > COLLINEAR_COSINE:
        return None
    return (f"the training features are nearly collinear after L2 normalisation (mean pairwise cosine "
            f"{cosine:.3f} > {COLLINEAR_COSINE}): a linear head separates them poorly and SeA's steps move every "
            "feature alike. Use norm=center_l2 (subtract the training mean, then L2)")


FitSplits = tuple[Features | StreamedFeatures, Features, Features]


def _fit_splits(method: Method, features: SplitFeatures, cfg: DictConfig) -> FitSplits:
    """Train (streamed from its cache file, or in RAM), val and test, every row checked against
    the cache's digests and a damaged entry extracted again: all before the fit is seeded, so a
    repaired entry gives the numbers of a clean run."""
    entry = features.files.get("train")
    if streams_training_split(entry and entry.shape, method.streams, method.name, cfg.features.in_memory,
                              cfg.features.memory_budget_gb):
        if cfg.fit_on != "train":
            raise ValueError("fit_on=trainval needs train and val in one matrix, but the training features are "
                             "streamed from disk (features.in_memory): use fit_on=train or features.in_memory=true")
        train = features.streamed("train", cfg.features.block_rows, cfg.features.chunk_rows)  # never loaded
    else:
        train = features.splits["train"]
    return train, features.splits["val"], features.splits["test"]


def _fit_on_features(method: Method, splits: FitSplits, cfg: DictConfig, ctx: FitContext) -> Fitted:
    train, val, test = splits
    if cfg.fit_on == "train":
        return _fit_and_score(method, train, val, test, cfg.norm, ctx)
    trainval = (torch.cat([train[0], val[0]]), torch.cat([train[1], val[1]]))
    if not cfg.method.get("grid"):
        return _fit_and_score(method, trainval, None, test, cfg.norm, ctx)
    # A grid: select on val as with fit_on=train, then train the selected head on train+val.
    chosen = _fit_and_score(method, train, val, test, cfg.norm, ctx)
    refit = _fit_and_score(instantiate(_with_values(cfg.method, chosen.selected)), trainval, None, test,
                           cfg.norm, ctx)
    val_metrics = {k: v for k, v in chosen.metrics.items() if k.startswith("val/")}
    control = None
    if chosen.control and refit.control:  # validated before the refit, tested after it, as the head
        control = {**{k: v for k, v in chosen.control.items() if k.startswith("val/")}, **refit.control}
    return Fitted(refit.classifier, chosen.selected, {**val_metrics, **refit.metrics},
                  chosen.fit_seconds + refit.fit_seconds, chosen.grid, control)


def _with_values(method_cfg: DictConfig, values: dict[str, Any]) -> DictConfig:
    """The method config of one grid head: its values set, no grid."""
    single = copy.deepcopy(method_cfg)
    with open_dict(single):
        single.grid = None
        for key, value in values.items():
            OmegaConf.update(single, key, value, merge=False)
    return single


def _fit_on_images(method: ImageMethod, dataset: ImageDataset, backbone: Backbone, cfg: DictConfig,
                   ctx: FitContext) -> Fitted:
    refit = cfg.fit_on == "trainval"
    start = time.perf_counter()
    # The run dir keeps its checkpoints: a killed job started again there continues from them.
    result = method.fit_images(dataset.split(cfg.fit_on), None if refit else dataset.split("val"),
                               backbone, replace(ctx, run_dir=Path(cfg.paths.output_dir)))
    fit_seconds = time.perf_counter() - start
    extraction = {k: v for k, v in cfg.extract.items() if k not in CACHE_SETTINGS}  # scores are not cached
    scored = {split: run_model(result.scorer, dataset.split(split), backbone.transform, ctx.device,
                               **extraction, desc=f"{dataset.name}/{split} scores")
              for split in (("test",) if refit else ("val", "test"))}
    return Fitted(result.scorer.cpu(), result.selected, {**result.val_metrics, **split_metrics(scored, ctx.task)},
                  fit_seconds)


def _sweep_variant(overrides: list[str]) -> list[str]:
    """The job's overrides of what its sweep varies besides dataset, backbone, method and seed
    (all of them when the sweep does not say what it varies)."""
    varying, named = varying_keys(), {"dataset", "backbone", "method", "seed"}
    keys = [override.split("=", 1)[0].lstrip("+~") for override in overrides]
    return [o for o, key in zip(overrides, keys) if key not in named and (varying is None or key in varying)]


def run(cfg: DictConfig, config_hash: str | None = None) -> dict[str, Any]:
    """Execute one configured experiment and return its metrics record. ``config_hash``
    (sealab.sweep.resume) is recorded for ``resume=true`` to recognise the result."""
    check_run_config(cfg, choice("method", cfg))
    device = resolve_device(cfg.device)
    devices = check_devices(cfg.devices, device)
    launch(devices, device)  # from here on, one process per device
    device = rank_device(device, devices, rank())
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    # The method first: its components check their settings before any data is read.
    method: Method | ImageMethod = instantiate(cfg.method)
    # Data
    dataset: DatasetBase = instantiate(cfg.dataset)
    precomputed = isinstance(dataset, PrecomputedFeatures)
    on_images = isinstance(method, ImageMethod)
    if on_images and precomputed:
        raise ValueError(f"method={method.name} trains the backbone on images, but dataset "
                         f"{dataset.name} holds precomputed features: choose an image dataset")
    # Known once the task is (multi-class or multi-label), refused before any training.
    check_metric_of_task(cfg.optimized_metric, dataset.task,
                         validated=cfg.fit_on == "train" or (bool(cfg.method.get("grid")) and not on_images))
    backbone = None if precomputed else instantiate(cfg.backbone)
    if precomputed:  # no backbone runs: the features name their own (dataset.backbone)
        with open_dict(cfg):
            cfg.backbone = None
    if is_rank_zero():
        atomic_write_json(run_dir / "dataset.json", dataset.describe())

    with run_logger(cfg) as logger:
        # Features (fine-tuning trains on the images themselves: nothing to extract)
        features = (SplitFeatures({}, 0.0) if on_images
                    else load_split_features(dataset, backbone, cfg.paths.cache_dir, device, **cfg.extract))
        # Read (and repaired) before seeding, on the rank that fits.
        splits = _fit_splits(method, features, cfg) if is_rank_zero() and not on_images else None
        notices = [collinearity_warning(splits[0], cfg.norm)] if splits is not None else []
        for notice in filter(None, notices):
            log.warning(notice)
        # Fit and evaluate. Seeded again: extraction (of a miss or of a damaged entry) may draw
        # random numbers and a cache hit does not, and the fit must not depend on which happened.
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        ctx = FitContext(task=dataset.task, seed=cfg.seed, device=device,
                         make_trainer=lambda **kw: instantiate(
                             cfg.trainer, logger=logger or False,
                             **trainer_placement(device, devices if on_images else 1), **kw))
        # Fine-tuning trains on every rank (DDP); a method on features fits on rank zero alone
        # while the others wait for its record.
        fitted = (_fit_on_images(method, dataset, backbone, cfg, ctx) if on_images
                  else _fit_on_features(method, splits, cfg, ctx) if is_rank_zero() else None)
        if logger and fitted is not None:
            # The control's under the keys its training logged them with (``val/top1[control]``).
            controls = {f"{key}[control]": value for key, value in (fitted.control or {}).items()}
            log_results(logger, {**fitted.metrics, **controls},
                        {"primary_metric": f"test/{dataset.primary_metric}", "fit_seconds": fitted.fit_seconds,
                         "extract_seconds": features.extract_seconds, "cache_hit": features.cache_hit})
    if not is_rank_zero():  # rank zero alone records
        return broadcast_from_zero(None)
    collapse = collapse_warning(cfg.method, dataset.primary_metric, fitted.metrics, fitted.control)
    if collapse:
        log.warning(collapse)
    notices = [notice for notice in (*notices, collapse) if notice]

    # Record
    if cfg.save_classifier:
        atomic_torch_save(run_dir / "classifier.pt", fitted.classifier.state_dict())
    record = {
        "dataset": dataset.name,
        "backbone": choice("backbone", cfg),
        "method": method.name,
        "seed": cfg.seed,
        "overrides": task_overrides(),
        "norm": cfg.norm,
        "fit_on": cfg.fit_on,
        "device": str(device),
        "devices": devices,
        "metrics": fitted.metrics,
        "primary_metric": f"test/{dataset.primary_metric}",
        "fit_seconds": fitted.fit_seconds,
        # What the method or the grid chose (e.g. logreg's weight decay, SeA's eta).
        **({"selected": fitted.selected} if fitted.selected else {}),
        **({"grid": fitted.grid} if fitted.grid else {}),
        # The selected head's control: the same head trained beside it without augmentation.
        **({"control": fitted.control} if fitted.control else {}),
        **({"warnings": notices} if notices else {}),
        "extract_seconds": features.extract_seconds,
        "cache_hit": features.cache_hit,
        "extracted": features.extracted,
        # Splits whose entry was found damaged as it was read and made again before use (listed in
        # "extracted" too when this run extracted it, not a parallel job it waited for).
        "repaired": features.repaired,
        "git_sha": git_sha(),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "config_hash": config_hash,
    }
    path = write_metrics(run_dir, record)
    print_metrics(record, one_line=sweep_dir() is not None, variant=_sweep_variant(record["overrides"]))
    log.info("wrote %s", path)
    return broadcast_from_zero(record)
