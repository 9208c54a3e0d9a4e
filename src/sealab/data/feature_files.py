"""Precomputed features and labels read from .pt, .npy or .npz files.

``.pt`` is what the paper's public code reads: an n x d float tensor loaded with
``torch.load`` and a label tensor or list in a second file. ``.npy`` holds one array;
``.npz`` holds ``features`` and ``labels`` together (then ``labels`` may be left out).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sealab.data.base import SPLITS, PrecomputedFeatures, check_split_name
from sealab.data.splits import stratified_holdout
from sealab.task import class_indices, make_task

SUFFIXES = (".pt", ".pth", ".npy", ".npz")
# What each file must hold, for the messages about one that holds something else.
HOLDS = {"features": "an n x d array of numbers (one row per example)",
         "labels": "n class indices 0..C-1 (a tensor, array or list of integers; n x C 0/1 for multi-label)"}
# What torch.load and np.load raise for a file cut short or not written by torch.save / np.save.
UNREADABLE = (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile)


def _load(path: Path, suffix: str, key: str) -> Any:
    if suffix in (".pt", ".pth"):
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            if key not in obj:
                raise KeyError(f"{path} holds a dict without a {key!r} entry (keys: {list(obj)})")
            obj = obj[key]
        return obj
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    with np.load(path, allow_pickle=False) as archive:
        if key not in archive:
            raise KeyError(f"{path} has no array {key!r} (arrays: {list(archive.keys())})")
        return archive[key]


def _as_numbers(obj: Any, path: Path, key: str) -> torch.Tensor:
    """``obj`` as a tensor of numbers, or an error naming the file and what it should hold."""
    if isinstance(obj, (list, tuple, np.ndarray)):
        array = np.asarray(obj)
        if array.dtype.kind in "biuf":
            return torch.from_numpy(array)
        kind = "text" if array.dtype.kind in "US" else f"{array.dtype} values"
        found = f"{kind} (e.g. {array.flat[0].item()!r})" if array.size else "nothing"
        hint = (" Map each class name to an index 0..C-1 (and give the names in dataset.class_names)."
                if key == "labels" else "")
        raise TypeError(f"{path}: {key} must be numbers, but it holds {found}; it should hold {HOLDS[key]}.{hint}")
    if isinstance(obj, torch.Tensor):
        return obj
    # (only a .pt file, which torch.save may fill with any picklable value, gets here)
    raise TypeError(f"{path} holds a {type(obj).__name__} ({str(obj)[:40]!r}), not {key}: it should hold "
                    f"{HOLDS[key]}, or a dict with a {key!r} entry holding that.")


def _read_array(path: Path, key: str) -> torch.Tensor:
    if not path.is_file():
        raise FileNotFoundError(
            f"{key} file not found: {path}. Point dataset.<split>_{key} at an existing "
            f"{'/'.join(SUFFIXES)} file."
        )
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"unsupported file type {path.name!r}: use one of {SUFFIXES}")
    try:
        obj = _load(path, suffix, key)
    except UNREADABLE as err:
        reason = str(err).splitlines()[0][:200]
        raise ValueError(
            f"{path}: cannot read it as a {suffix} file ({type(err).__name__}: {reason}). A file cut short "
            f"(an interrupted write or copy) gives this: write it again, with "
            f"{'torch.save (tensors only)' if suffix in ('.pt', '.pth') else 'numpy.save / numpy.savez'}."
        ) from err
    return _as_numbers(obj, path, key)


def load_feature_file(
    features: str | Path, labels: str | Path | None, multilabel: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read, check and return ``(x float32 n x d, y)`` from one split's files (the targets'
    values are checked by the dataset's task once the number of classes is known)."""
    features = Path(features)
    x = _read_array(features, "features").float()
    labels_file = Path(labels) if labels else features
    y = _read_array(labels_file, "labels")
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
    return x, (y.float() if multilabel else class_indices(y, f"labels ({labels_file})"))


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
        for s, (x, _) in loaded.items():
            if not len(x):  # caught here, not after training (test) or in a numpy reduction (train)
                raise ValueError(f"dataset {name!r}: the {s} split is empty ({self.files[s][0]} has no rows): "
                                 f"point dataset.{s}_features at a file with examples")
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
