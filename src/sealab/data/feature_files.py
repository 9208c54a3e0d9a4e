"""Precomputed features and labels read from .pt, .npy or .npz files.

``.pt`` is what the paper's public code reads: an n x d float tensor loaded with
``torch.load`` and a label tensor or list in a second file. ``.npy`` holds one array;
``.npz`` holds ``features`` and ``labels`` together (then ``labels`` may be left out).
"""

from __future__ import annotations

import pickle
import zipfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sealab.data.base import (
    FRACTION,
    SPLIT_SEED,
    SPLITS,
    PrecomputedFeatures,
    check_settings,
    check_several_classes,
    check_split_name,
)
from sealab.data.splits import stratified_holdout
from sealab.metrics import MAP11, MEAN_PER_CLASS, TOP1
from sealab.rules import BOOL, NAME, integer, listing, one_of, text
from sealab.task import class_indices, make_task

SUFFIXES = (".pt", ".pth", ".npy", ".npz")
# What each file must hold, for the messages about one that holds something else.
HOLDS = {"features": "an n x d array of numbers (one row per example)",
         "labels": "n class indices 0..C-1 (a tensor, array or list of integers; n x C 0/1 for multi-label)"}
# What torch.load and np.load raise for a file cut short or not written by torch.save / np.save.
UNREADABLE = (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile)


def _load(path: Path, suffix: str, key: str, labels_setting: str | None) -> Any:
    """The ``key`` array of ``path``. ``labels_setting`` (the labels key left unset, or "" when
    unknown) is given when the labels are looked for in the features file, which must then hold
    them by name."""
    separately = "give the labels in their own file" + (f" ({labels_setting})" if labels_setting else "")
    if suffix in (".pt", ".pth"):
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            if key not in obj:
                raise KeyError(f"{path} holds a dict without a {key!r} entry (keys: {list(obj)})")
            obj = obj[key]
        elif labels_setting is not None:
            raise TypeError(f"{path} holds one {type(obj).__name__}, not a dict with a 'labels' entry, so it "
                            f"has no labels: {separately}, or save a dict {{'features': ..., 'labels': ...}}")
        return obj
    if suffix == ".npy":
        if labels_setting is not None:
            raise TypeError(f"{path}: a .npy file holds one array (the features), so it has no labels: "
                            f"{separately}, or save both with numpy.savez(path, features=..., labels=...)")
        return np.load(path, allow_pickle=False)
    with np.load(path, allow_pickle=False) as archive:
        if key not in archive:
            raise KeyError(f"{path} has no array {key!r} (arrays: {list(archive.keys())})")
        return archive[key]


def _declared_dtype(path: Path, suffix: str, key: str) -> np.dtype | None:
    """The dtype an .npy file (or the ``key`` array of an .npz archive) declares in its header;
    None for a .pt file or a header that cannot be read."""
    if suffix not in (".npy", ".npz"):
        return None
    try:
        with ExitStack() as stack:
            if suffix == ".npz":
                archive = stack.enter_context(zipfile.ZipFile(path))
                f = stack.enter_context(archive.open(f"{key}.npy"))
            else:
                f = stack.enter_context(open(path, "rb"))
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            return read_header(f)[2]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


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


def _read_array(path: Path, key: str, setting: str | None = None,
                labels_setting: str | None = None) -> torch.Tensor:
    """The ``key`` array of ``path``; errors name ``setting`` (``dataset.val_features``), the
    key that pointed at the file, when it is known. ``labels_setting``: see ``_load``."""
    where = f"{setting}={path}" if setting else f"{key} file {path}"
    fix = f"Point {setting or 'it'} at an existing {'/'.join(SUFFIXES)} file."
    if path.is_dir():
        found = sorted(p.name for p in path.iterdir() if p.suffix.lower() in SUFFIXES)[:5]
        inside = f" (it holds {', '.join(found)})" if found else ""
        raise IsADirectoryError(f"{where} is a directory, not a file{inside}. {fix}")
    if not path.is_file():
        raise FileNotFoundError(f"{where}: file not found. {fix}")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{where}: unsupported file type {path.name!r}: use one of {SUFFIXES}")
    try:
        obj = _load(path, suffix, key, labels_setting)
    except UNREADABLE as err:
        dtype = _declared_dtype(path, suffix, key)
        if dtype is not None and dtype.hasobject:  # np.load refuses to unpickle it: not a damaged file
            raise TypeError(
                f"{path}: {key} is a numpy array of Python objects (dtype {dtype}: e.g. rows of unequal "
                f"length, or numbers mixed with text or None), which sealab does not unpickle. It should "
                f"hold {HOLDS[key]}: save a numeric array, e.g. numpy.save(path, numpy.asarray(a, "
                f"dtype=numpy.{'float32' if key == 'features' else 'int64'})).") from err
        reason = str(err).splitlines()[0][:200]
        raise ValueError(
            f"{path}: cannot read it as a {suffix} file ({type(err).__name__}: {reason}). A file cut short "
            f"(an interrupted write or copy) gives this: write it again, with "
            f"{'torch.save (tensors only)' if suffix in ('.pt', '.pth') else 'numpy.save / numpy.savez'}."
        ) from err
    return _as_numbers(obj, path, key)


def load_feature_file(
    features: str | Path, labels: str | Path | None, multilabel: bool, split: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read, check and return ``(x float32 n x d, y)`` from one split's files (the targets'
    values are checked by the dataset's task once the number of classes is known). ``split``
    lets errors name the key at fault (``dataset.<split>_features``)."""
    features = Path(features)
    setting = (lambda kind: f"dataset.{split}_{kind}") if split else (lambda kind: None)
    x = _read_array(features, "features", setting("features")).float()
    if labels:
        labels_file = Path(labels)
        y = _read_array(labels_file, "labels", setting("labels"))
    else:
        labels_file = features
        y = _read_array(features, "labels", setting("features"), setting("labels") or "")
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
    if multilabel and y.ndim != 2:
        raise ValueError(
            f"{labels_file}: dataset.multilabel=true needs labels of shape n x C (0/1, one column per "
            f"class), but they have shape {tuple(y.shape)}. For one class index per example set "
            "dataset.multilabel=false.")
    return x, (y.float() if multilabel else class_indices(y, f"labels ({labels_file})"))


class FeatureFiles(PrecomputedFeatures):
    """Features stored per split. ``val_features`` (with ``val_labels`` unless it holds them)
    is the validation split, and all of train is trained on; without it, a seeded stratified
    ``val_fraction`` of the training files becomes the validation split."""

    RULES = {
        "name": NAME, "backbone": NAME,
        "train_features": text(), "test_features": text(), "val_features": text(nullable=True),
        **{f"{s}_labels": text(nullable=True) for s in SPLITS},
        "num_classes": integer(1, nullable=True), "class_names": listing(nullable=True),
        "multilabel": BOOL, "primary_metric": one_of(TOP1, MEAN_PER_CLASS, MAP11, nullable=True),
        "val_fraction": FRACTION, "seed": SPLIT_SEED,
    }

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
        check_settings(name, self.RULES, name=name, backbone=backbone, train_features=train_features,
                       test_features=test_features, train_labels=train_labels, test_labels=test_labels,
                       val_features=val_features, val_labels=val_labels, num_classes=num_classes,
                       class_names=class_names, multilabel=multilabel, primary_metric=primary_metric,
                       val_fraction=val_fraction, seed=seed)
        if val_labels and not val_features:
            raise ValueError(f"dataset {name!r}: dataset.val_labels={val_labels} is set but dataset.val_features "
                             "is not: set dataset.val_features to the validation features file too")
        self.name, self.backbone, self.multilabel = name, backbone, multilabel
        self.files = {
            "train": (train_features, train_labels),
            "val": (val_features, val_labels),
            "test": (test_features, test_labels),
        }
        self.val_fraction, self.seed = val_fraction, seed
        self.val_from_file = bool(val_features)
        read = SPLITS if self.val_from_file else ("train", "test")
        loaded = {s: load_feature_file(*self.files[s], multilabel, split=s) for s in read}
        for s, (x, _) in loaded.items():
            if not len(x):  # caught here, not after training (test) or in a numpy reduction (train)
                raise ValueError(f"dataset {name!r}: the {s} split is empty ({self.files[s][0]} has no rows): "
                                 f"point dataset.{s}_features at a file with examples")
        if not multilabel:
            check_several_classes(name, loaded["train"][1], self._labels_file("train"))
        if not self.val_from_file:
            x, y = loaded["train"]
            keep, held = stratified_holdout(y.numpy(), val_fraction, seed, dataset=name)
            loaded["train"], loaded["val"] = (x[keep], y[keep]), (x[held], y[held])
            self.val_indices = held.tolist()
        dims = {s: t[0].shape[1] for s, t in loaded.items()}
        if len(set(dims.values())) != 1:
            raise ValueError(f"feature dimension differs between splits: {dims}")
        self.num_classes = self._class_count(loaded, num_classes)
        self.primary_metric = make_task(self.num_classes, multilabel, primary_metric).primary_metric
        for s, (_, y) in loaded.items():
            self.task.check_targets(y, f"{s} labels ({self._labels_file(s)})")
        if class_names and len(class_names) != self.num_classes:
            raise ValueError(f"dataset {name!r}: dataset.class_names lists {len(class_names)} names but there are "
                             f"{self.num_classes} classes: give one name per class, in label order")
        self.class_names = list(class_names) if class_names else [str(c) for c in range(self.num_classes)]
        self._splits = loaded

    def _labels_file(self, split: str) -> str:
        """The file split ``split``'s labels were read from (val drawn from train: train's)."""
        features, labels = self.files["train" if split == "val" and not self.val_from_file else split]
        return str(labels or features)

    def _class_count(self, loaded: dict[str, tuple[torch.Tensor, torch.Tensor]], given: int | None) -> int:
        """The number of classes: ``given``, else the label columns (multi-label) or the largest
        label + 1. A multi-class count beyond the number of examples is refused before anything
        is made per class: it comes from labels that are ids rather than indices 0..C-1 (a label
        of 1e9 would otherwise make 1e9 class names)."""
        if self.multilabel:
            return given if given is not None else loaded["train"][1].shape[1]
        rows = sum(len(y) for _, y in loaded.values())
        if given is not None:
            if given > rows:
                raise ValueError(f"dataset {self.name!r}: dataset.num_classes={given} is more than the {rows} "
                                 "examples of all splits together: most classes would have no example. "
                                 "Set it to the number of classes of the labels.")
            return given
        top = max(loaded, key=lambda s: int(loaded[s][1].max()))
        largest = int(loaded[top][1].max())
        if largest + 1 > rows:
            distinct = len(torch.unique(torch.cat([y for _, y in loaded.values()])))
            raise ValueError(
                f"dataset {self.name!r}: {self._labels_file(top)} holds the label {largest}, which makes "
                f"{largest + 1} classes, more than the {rows} examples of all splits together (the labels "
                f"take {distinct} distinct values). Labels must be class indices 0..C-1: renumber them, or "
                "set dataset.num_classes if that many classes is right.")
        return largest + 1

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
        if self.val_from_file:
            info["val_split"] = (f"the file of dataset.val_features ({self.files['val'][0]}); "
                                 "all of train is trained on")
        else:
            info["val_split"] = "a seeded stratified val_fraction of the train file"
            info["val_from_train"] = {"fraction": self.val_fraction, "seed": self.seed,
                                      "indices": self.val_indices}
        return info
