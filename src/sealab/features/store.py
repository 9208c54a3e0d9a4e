"""Features of every split of a dataset, from files or extracted through the cache."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch.utils.data import Dataset, Subset

from sealab.backbones.base import Backbone
from sealab.backbones.ensemble import Ensemble
from sealab.data.base import SPLITS, DatasetBase, ImageDataset, PrecomputedFeatures
from sealab.features.cache import CacheEntry, DamagedEntry, FeatureCache
from sealab.features.extract import iter_features
from sealab.features.sharded import get_or_compute_across_ranks
from sealab.features.shards import PartialEntry

log = logging.getLogger(__name__)

Split = tuple[torch.Tensor, torch.Tensor]
CACHE_DTYPES = ("float16", "float32")
# extract.* settings about storing features, not about running the backbone.
CACHE_SETTINGS = ("cache_dtype", "shard_size", "lock_timeout")


class LazySplits(Mapping):
    """``split -> (x, y)``, each made by its loader on first access and then kept: a consumer that
    streams the train split from its file never loads it."""

    def __init__(self, loaders: dict[str, Callable[[], Split]]):
        self._loaders, self._loaded = loaders, {}

    def __getitem__(self, split: str) -> Split:
        if split not in self._loaded:
            self._loaded[split] = self._loaders[split]()
        return self._loaded[split]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaders)

    def __len__(self) -> int:
        return len(self._loaders)


@dataclass
class SplitFeatures:
    """``splits[s]``: ``(x float32 n x d, y)`` in RAM, read (and verified) on first access.
    ``files[s]``: the cache entry of split ``s`` when one backbone's entry holds it (not for
    ensembles or precomputed features): ``files[s].features`` is the path of its ``features.npy``
    (n x d float16/float32, C order), ``.labels`` of its ``labels.npy``, ``.shape``, ``.dtype``,
    for consumers that stream rows instead of loading them."""

    splits: Mapping[str, Split]
    cache_hit: bool
    extract_seconds: float
    files: dict[str, CacheEntry] = field(default_factory=dict)
    # The splits this run extracted (the others came from the cache, some perhaps made by a
    # parallel job while this one waited for the key's lock).
    extracted: list[str] = field(default_factory=list)


def check_features(x: torch.Tensor, where: str) -> None:
    bad = ~torch.isfinite(x).all(dim=1)
    if bad.any():
        raise ValueError(f"{where}: {int(bad.sum())} feature rows contain NaN/Inf; the backbone "
                         "or its weights are broken (delete the cache entry after fixing them).")


def extract_split(backbone: Backbone, images: Dataset, device: torch.device, partial: PartialEntry,
                  **extraction) -> None:
    """Extract the rows ``partial`` still lacks into its shards: all of them, or those after the
    shards a killed run finished (same key, so same images in the same order)."""
    start = partial.finished() * partial.shard_rows
    if start:
        log.info("resuming extraction into %s after %d finished rows", partial.path, start)
    rest = Subset(images, range(start, len(images))) if start else images
    partial.extend(iter_features(backbone, rest, device, **extraction))


@dataclass
class _CachedSplit:
    """One backbone's features of one split through the cache; ``load`` repairs a damaged entry."""

    entry: CacheEntry
    hit: bool
    fetch: Callable[[bool], tuple[CacheEntry, bool]]

    def load(self) -> Split:
        try:
            return self.entry.load()
        except DamagedEntry:  # bytes changed since the entry was written: extract again, once
            self.entry = self.fetch(True)[0]
            return self.entry.load()


def _cached_split(cache: FeatureCache, backbone: Backbone, dataset: ImageDataset, split: str,
                  device: torch.device, cache_dtype: str, shard_rows: int, **extraction) -> _CachedSplit:
    identity = {"backbone": backbone.identity(), "dataset": dataset.identity(), "split": split,
                "precision": extraction["precision"], "cache_dtype": cache_dtype}
    images = dataset.split(split)

    def compute(partial: PartialEntry) -> None:
        extract_split(backbone, images, device, partial, **extraction, desc=f"{dataset.name}/{split}")

    def fetch(verify: bool, compute: Callable[[PartialEntry], None] = compute) -> tuple[CacheEntry, bool]:
        return cache.get_or_compute(identity, compute, len(images), cache_dtype, shard_rows, verify=verify)

    def rows(start: int, stop: int) -> Iterator[Split]:  # one rank's block of a several-device run
        return iter_features(backbone, Subset(images, range(start, stop)), device, **extraction,
                             desc=f"{dataset.name}/{split} rows {start}-{stop - 1}")

    # Every rank takes part in the lookup; repairing a damaged entry on load is one rank's own.
    return _CachedSplit(*get_or_compute_across_ranks(lambda c: fetch(False, c), compute, rows), fetch)


def _check_settings(cache_dtype: str, shard_size: int, lock_timeout: float) -> None:
    if cache_dtype not in CACHE_DTYPES:
        raise ValueError(f"extract.cache_dtype={cache_dtype!r}: choose one of {list(CACHE_DTYPES)}")
    if not isinstance(shard_size, int) or isinstance(shard_size, bool) or shard_size < 1:
        raise ValueError(f"extract.shard_size={shard_size!r}: use a number of images >= 1")
    # 0: give up at once when another job holds the entry (as checks.RULES documents it)
    if not isinstance(lock_timeout, (int, float)) or isinstance(lock_timeout, bool) or lock_timeout < 0:
        raise ValueError(f"extract.lock_timeout={lock_timeout!r}: use a number of seconds >= 0")


def load_split_features(dataset: DatasetBase, backbone: Backbone | None, cache_dir: str, device: torch.device,
                        batch_size: int = 128, num_workers: int | str = 0, precision: str = "fp32",
                        channels_last: bool = False, cache_dtype: str = "float16", shard_size: int = 8192,
                        lock_timeout: float = 3600.0) -> SplitFeatures:
    """Train, val and test features. Image datasets go through the backbone and the cache; an
    ensemble's members each through their own cache entries. Extraction writes a shard every
    ``shard_size`` images (rounded up to whole batches, so a resumed run batches exactly like an
    uninterrupted one); ``cache_dtype=float16`` halves the cache (features are used as float32)."""
    start = time.perf_counter()
    if isinstance(dataset, PrecomputedFeatures):
        return SplitFeatures({s: dataset.features(s) for s in SPLITS}, cache_hit=False,
                             extract_seconds=time.perf_counter() - start)
    if not isinstance(dataset, ImageDataset) or backbone is None:
        raise TypeError(f"{type(dataset).__name__} needs a backbone to turn images into features")
    _check_settings(cache_dtype, shard_size, lock_timeout)
    extraction = {"batch_size": batch_size, "num_workers": num_workers, "precision": precision,
                  "channels_last": channels_last}
    shard_rows = -(-shard_size // batch_size) * batch_size
    cache = FeatureCache(cache_dir, lock_timeout=lock_timeout)
    ensemble = isinstance(backbone, Ensemble)
    members = list(backbone.members) if ensemble else [backbone]
    loaders, files, extracted = {}, {}, []
    for split in SPLITS:
        parts = [_cached_split(cache, m, dataset, split, device, cache_dtype, shard_rows, **extraction)
                 for m in members]
        extracted += [split] * sum(not p.hit for p in parts)
        if not ensemble:
            files[split] = parts[0].entry
        loaders[split] = lambda parts=parts, split=split: _load(parts, dataset, backbone, split)
    log.info("features of %s through %s: %s", dataset.name, backbone.name,
             f"extracted {len(extracted)} split(s), cached under {cache.root}" if extracted else
             "all splits from the cache, no extraction")
    return SplitFeatures(LazySplits(loaders), not extracted, time.perf_counter() - start, files, extracted)


def _load(parts: list[_CachedSplit], dataset: ImageDataset, backbone: Backbone, split: str) -> Split:
    loaded = [p.load() for p in parts]
    y = loaded[0][1]
    x = backbone.combine([x for x, _ in loaded]) if isinstance(backbone, Ensemble) else loaded[0][0]
    check_features(x, f"{dataset.name}/{split} features of {backbone.name}")
    dataset.task.check_targets(y, f"{dataset.name}/{split}")
    return x, y
