"""Precomputed features and labels read from .pt, .npy or .npz files.

``.pt`` is what the paper's public code reads: an n x d float tensor loaded with
``torch.load`` and a label tensor or list in a second file. ``.npy`` holds one array;
``.npz`` holds ``features`` and ``labels`` together (then ``labels`` may be left out).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from sealab.data.base import SPLITS, PrecomputedFeatures, check_split_name
from sealab.data.splits import stratified_holdout
from sealab.task import make_task

SUFFIXES = (".pt", ".pth", ".npy", ".npz")


def _read_array(path: Path, key: str) -> torch.Tensor:
    if not path.is_file():
        raise FileNotFoundError(
            f"{key} file not found: {path}. Point dataset.<split>_{key} at an existing "
            f"{'/'.join(SUFFIXES)} file."
        )
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            if key not in obj:
                raise KeyError(f"{path} holds a dict without a {key!r} entry (keys: {list(obj)})")
            obj = obj[key]
        return torch.as_tensor(obj)
    if suffix == ".npy":
        return torch.from_numpy(np.load(path, allow_pickle=False))
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            if key not in archive:
                raise KeyError(f"{path} has no array {key!r} (arrays: {list(archive.keys())})")
            return torch.from_numpy(archive[key])
    raise ValueError(f"unsupported file type {path.name!r}: use one of {SUFFIXES}")


def load_feature_file(
    features: str | Path, labels: str | Path | None, multilabel: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read, check and return ``(x float32 n x d, y)`` from one split's files (the targets'
    values are checked by the dataset's task once the number of classes is known)."""
    features = Path(features)
    x = _read_array(features, "features").float()
    y = _read_array(Path(labels) if labels else features, "labels")
    if x.ndim != 2:
        raise ValueError(f"{features}: features must be a 2-d (n x d) array, got shape {tuple(x.shape)}")
    if len(y) != len(x):
        raise ValueError(
            f"{features}: {len(x)} feature rows but {len(y)} labels ({labels or features}); "
            "each row needs exactly one label."
        )
    bad = ~torch.isfinite(x).all(dim=1)
    if bad.any():
        raise ValueError(
            f"{features}: {int(bad.sum())} feature rows contain NaN or Inf (first at row "
            f"{int(bad.nonzero()[0])}); re-extract the features or drop those rows."
        )
    return x, (y.float() if multilabel else y.long())


class FeatureFiles(PrecomputedFeatures):
    """Features stored per split. Without ``val_features``, a seeded stratified
    ``val_fraction`` of the training files becomes the validation split."""

    def __init__(
        self,
        train_features: str,
        test_features: str,
        train_labels: str | None = None,
        test_labels: str | None = None,
        val_features: str | None = None,
        val_labels: str | None = None,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        multilabel: bool = False,
        primary_metric: str | None = None,
        val_fraction: float = 0.2,
        seed: int = 0,
        name: str = "features",
        backbone: str = "precomputed",
    ):
        self.name, self.backbone, self.multilabel = name, backbone, multilabel
        self.files = {
            "train": (train_features, train_labels),
            "val": (val_features, val_labels),
            "test": (test_features, test_labels),
        }
        self.val_fraction, self.seed = val_fraction, seed
        loaded = {s: load_feature_file(*self.files[s], multilabel) for s in ("train", "test")}
        if val_features:
            loaded["val"] = load_feature_file(val_features, val_labels, multilabel)
        else:
            x, y = loaded["train"]
            keep, held = stratified_holdout(y.numpy(), val_fraction, seed, dataset=name)
            loaded["train"], loaded["val"] = (x[keep], y[keep]), (x[held], y[held])
            self.val_indices = held.tolist()
        dims = {s: t[0].shape[1] for s, t in loaded.items()}
        if len(set(dims.values())) != 1:
            raise ValueError(f"feature dimension differs between splits: {dims}")
        if num_classes is None:
            num_classes = loaded["train"][1].shape[1] if multilabel else int(loaded["train"][1].max()) + 1
        self.num_classes = num_classes
        self.primary_metric = make_task(num_classes, multilabel, primary_metric).primary_metric
        for s, (_, y) in loaded.items():
            features_file, labels_file = self.files["train" if s == "val" and not val_features else s]
            self.task.check_targets(y, f"{s} labels ({labels_file or features_file})")
        self.class_names = list(class_names) if class_names else [str(c) for c in range(num_classes)]
        self._splits = loaded

    def features(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        check_split_name(name)
        if name == "trainval":
            (xt, yt), (xv, yv) = self._splits["train"], self._splits["val"]
            return torch.cat([xt, xv]), torch.cat([yt, yv])
        return self._splits[name]

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "name": self.name,
            "backbone": self.backbone,
            "num_classes": self.num_classes,
            "primary_metric": self.primary_metric,
            "multilabel": self.multilabel,
            "files": {s: [str(p) if p else None for p in f] for s, f in self.files.items()},
            "split_sizes": {s: len(self._splits[s][1]) for s in SPLITS},
        }
        if hasattr(self, "val_indices"):
            info["val_from_train"] = {"fraction": self.val_fraction, "seed": self.seed,
                                      "indices": self.val_indices}
        return info
