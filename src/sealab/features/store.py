"""Features of every split of a dataset, from files or extracted through the cache."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch.utils.data import Dataset, Subset

from sealab import settings
from sealab.backbones.base import Backbone
from sealab.backbones.ensemble import Ensemble
from sealab.data.base import SPLITS, DatasetBase, ImageDataset, PrecomputedFeatures
from sealab.features.cache import CacheEntry, DamagedEntry, FeatureCache
from sealab.features.extract import iter_features
from sealab.features.ondisk import NpyRows, StreamedFeatures
from sealab.features.sharded import get_or_compute_across_ranks
from sealab.features.shards import PartialEntry
from sealab.rules import validate

log = logging.getLogger(__name__)

Split = tuple[torch.Tensor, torch.Tensor]
# The extract.* settings this module owns (as sealab.settings declares): how features are stored,
# not how the backbone runs them, so a pass of the model that stores nothing does not take them.
CACHE_SETTINGS = tuple(key.removeprefix("extract.") for key, setting in settings.SETTINGS.items()
                       if key.startswith("extract.") and setting.owner == __name__)


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
class CachedSplit:
    """One backbone's cache entry of one split. ``hit``: this run did not extract it;
    ``repaired``: reading its rows found them damaged, and the entry was made again (extracted by
    this run, or by a parallel job it waited for) before any row was used."""

    entry: CacheEntry
    hit: bool
    fetch: Callable[[bool], tuple[CacheEntry, bool]]
    repaired: bool = False
    repair_seconds: float = 0.0

    def _repair(self) -> None:  # bytes changed since the entry was written: extract again, once
        start = time.perf_counter()
        self.entry, hit = self.fetch(True)
        self.hit, self.repaired = self.hit and hit, True
        self.repair_seconds += time.perf_counter() - start

    def load(self) -> Split:
        try:
            return self.entry.load()
        except DamagedEntry:
            self._repair()
            return self.entry.load()

    def streamed(self, block_rows: int, chunk_rows: int) -> StreamedFeatures:
        """The split left on disk, every row checked first (a damaged entry is made again)."""
        try:
            signature = self.entry.verify()
        except DamagedEntry:
            self._repair()
            signature = self.entry.verify()
        targets = torch.from_numpy(self.entry.read_labels())
        return StreamedFeatures(NpyRows(self.entry.features, signature), targets, block_rows, chunk_rows)


@dataclass
class SplitFeatures:
    """``splits[s]``: ``(x float32 n x d, y)`` in RAM, read (and verified) on first access.
    ``cached[s]``: the cache entries of split ``s``, one per backbone (an ensemble's members;
    none for precomputed features). ``files[s]``: the entry of split ``s`` when one backbone's
    entry holds it (not for ensembles or precomputed features): ``files[s].features`` is the path
    of its ``features.npy`` (n x d float16/float32, C order), ``.shape``, ``.dtype``; stream it
    through ``streamed(s, ...)``, which checks its rows first. A damaged entry found while reading
    is made again before its rows are used, and counted in ``repaired`` and ``extracted``."""

    splits: Mapping[str, Split]
    lookup_seconds: float
    cached: dict[str, list[CachedSplit]] = field(default_factory=dict)
    one_file: bool = False  # each split's features are one entry's features.npy, as they are

    @property
    def files(self) -> dict[str, CacheEntry]:
        return {split: parts[0].entry for split, parts in self.cached.items()} if self.one_file else {}

    @property
    def extracted(self) -> list[str]:
        """The splits this run extracted (the others came from the cache, some perhaps made by a
        parallel job while this one waited for the key's lock); a split once per entry."""
        return [split for split, parts in self.cached.items() for part in parts if not part.hit]

    @property
    def repaired(self) -> list[str]:
        return [split for split, parts in self.cached.items() for part in parts if part.repaired]

    @property
    def cache_hit(self) -> bool:
        return bool(self.cached) and not self.extracted

    @property
    def extract_seconds(self) -> float:
        return self.lookup_seconds + sum(part.repair_seconds for parts in self.cached.values() for part in parts)

    def streamed(self, split: str, block_rows: int, chunk_rows: int) -> StreamedFeatures:
        """Split ``split`` to stream from its entry's features.npy, every row checked against
        meta.json first; its signature then guards every read (``NpyRows``)."""
        streamed = self.cached[split][0].streamed(block_rows, chunk_rows)
        log.info("streaming %.1f GiB of training features (as float32) from %s in blocks of %d rows",
                 len(streamed) * streamed.shape[1] * 4 / 2**30, streamed.rows.path, block_rows)
        return streamed


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


def _cached_split(cache: FeatureCache, backbone: Backbone, dataset: ImageDataset, split: str,
                  device: torch.device, cache_dtype: str, shard_rows: int, **extraction) -> CachedSplit:
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
    return CachedSplit(*get_or_compute_across_ranks(lambda c: fetch(False, c), compute, rows), fetch)


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
        return SplitFeatures({s: dataset.features(s) for s in SPLITS}, time.perf_counter() - start)
    if not isinstance(dataset, ImageDataset) or backbone is None:
        raise TypeError(f"{type(dataset).__name__} needs a backbone to turn images into features")
    validate("feature cache", {f"extract.{key}": settings.rule(f"extract.{key}") for key in CACHE_SETTINGS},
             extract={"cache_dtype": cache_dtype, "shard_size": shard_size, "lock_timeout": lock_timeout})
    extraction = {"batch_size": batch_size, "num_workers": num_workers, "precision": precision,
                  "channels_last": channels_last}
    shard_rows = -(-shard_size // batch_size) * batch_size
    cache = FeatureCache(cache_dir, lock_timeout=lock_timeout)
    ensemble = isinstance(backbone, Ensemble)
    members = list(backbone.members) if ensemble else [backbone]
    loaders, cached = {}, {}
    for split in SPLITS:
        cached[split] = [_cached_split(cache, m, dataset, split, device, cache_dtype, shard_rows, **extraction)
                         for m in members]
        loaders[split] = lambda parts=cached[split], split=split: _load(parts, dataset, backbone, split)
    found = SplitFeatures(LazySplits(loaders), time.perf_counter() - start, cached, one_file=not ensemble)
    log.info("features of %s through %s: %s", dataset.name, backbone.name,
             f"extracted {len(found.extracted)} split(s), cached under {cache.root}" if found.extracted else
             "all splits from the cache, no extraction")
    return found


def _load(parts: list[CachedSplit], dataset: ImageDataset, backbone: Backbone, split: str) -> Split:
    loaded = [p.load() for p in parts]
    y = loaded[0][1]
    x = backbone.combine([x for x, _ in loaded]) if isinstance(backbone, Ensemble) else loaded[0][0]
    check_features(x, f"{dataset.name}/{split} features of {backbone.name}")
    dataset.task.check_targets(y, f"{dataset.name}/{split}")
    return x, y
