"""Keyed on-disk feature cache: atomic writes, content hashes, one writer per key.

Layout: ``<root>/<key>/features.pt`` and ``meta.json``. ``meta.json`` is written last and
records the sha256 of ``features.pt``, so a truncated or corrupted file is never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable

import torch
from filelock import FileLock

from sealab.fileio import atomic_write_bytes, atomic_write_json, file_sha256

log = logging.getLogger(__name__)

# Bump when the stored format or the extraction changes meaning: old entries are then ignored.
FEATURE_FORMAT_VERSION = 1

Features = tuple[torch.Tensor, torch.Tensor]


def cache_key(identity: dict[str, Any]) -> str:
    payload = json.dumps({"format": FEATURE_FORMAT_VERSION, **identity}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


class FeatureCache:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()

    def _entry(self, key: str) -> Path:
        return self.root / key

    def load(self, key: str) -> Features | None:
        """The cached features, or None when absent or failing verification (logged)."""
        entry = self._entry(key)
        meta_path, data_path = entry / "meta.json", entry / "features.pt"
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if not data_path.is_file() or file_sha256(data_path) != meta["sha256"]:
                raise ValueError("content hash does not match meta.json")
            data = torch.load(data_path, map_location="cpu", weights_only=True)
            x, y = data["features"], data["labels"]
            if list(x.shape) != meta["shape"] or len(y) != len(x):
                raise ValueError(f"shape {list(x.shape)} differs from meta.json {meta['shape']}")
        except Exception as err:  # any damage means: extract again
            log.warning("feature cache entry %s is damaged (%s); extracting again", entry, err)
            return None
        return x, y

    def store(self, key: str, features: Features, meta: dict[str, Any]) -> None:
        entry = self._entry(key)
        entry.mkdir(parents=True, exist_ok=True)
        x, y = features
        data_path = entry / "features.pt"
        atomic_write_bytes(data_path, lambda p: torch.save({"features": x, "labels": y}, p))
        atomic_write_json(entry / "meta.json", {
            **meta, "key": key, "format": FEATURE_FORMAT_VERSION,
            "shape": list(x.shape), "sha256": file_sha256(data_path),
        })

    def get_or_compute(self, identity: dict[str, Any], compute: Callable[[], Features]) -> tuple[Features, bool]:
        """``(features, cache_hit)``. Parallel jobs asking for one key compute it once."""
        key = cache_key(identity)
        cached = self.load(key)
        if cached is not None:
            return cached, True
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / f"{key}.lock")):
            cached = self.load(key)  # another job may have finished while we waited
            if cached is not None:
                return cached, True
            features = compute()
            self.store(key, features, {"identity": identity})
        return features, False
