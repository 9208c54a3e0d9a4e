"""What every on-disk benchmark shares: the root check, split records and the seeded splits."""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Subset

from sealab.data.base import (
    DOWNLOAD,
    ROOT,
    SPLITS,
    ImageDataset,
    check_settings,
    check_several_classes,
    check_split_name,
)
from sealab.data.errors import DatasetChecksumError, DatasetNotFoundError, missing_paths
from sealab.data.splits import stratified_holdout


@dataclass(frozen=True)
class Split:
    """Samples ``indices`` of ``source`` (in that order) and their targets.

    ``seeded`` marks a split drawn at random (with a recorded seed); its indices go into
    ``describe()`` so the exact partition can be reproduced or audited."""

    source: Dataset
    indices: np.ndarray
    targets: np.ndarray
    seeded: bool = False

    @classmethod
    def whole(cls, source: Dataset, targets) -> Split:
        targets = np.asarray(targets)
        return cls(source, np.arange(len(targets)), targets)

    def take(self, positions: np.ndarray) -> Split:
        """The sub-split at ``positions`` (positions within this split), marked as seeded."""
        return Split(self.source, self.indices[positions], self.targets[positions], seeded=True)


def holdout_val(split: Split, fraction: float, seed: int, dataset: str = "dataset",
                setting: str = "dataset.val_fraction") -> tuple[Split, Split]:
    """(train, val): a seeded, stratified ``fraction`` of ``split`` becomes val. A fraction too
    small (or large) for the number of classes is an error naming ``dataset`` and ``setting``."""
    kept, held = stratified_holdout(split.targets, fraction, seed, dataset=dataset, setting=setting)
    return split.take(kept), split.take(held)


def per_class_partition(targets: np.ndarray, class_names: list[str], train_per_class: int,
                        test_per_class: int | None, seed: int,
                        min_test_per_class: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Positions of (train, test): per class a seeded draw of ``train_per_class`` images for
    train and ``test_per_class`` of the rest (all of the rest when None) for test.

    With ``test_per_class=None`` (Caltech-101's "30 per class, the rest test") a class too small
    for that keeps ``min_test_per_class`` images for test and gives all of its others to train.
    A class that cannot give both sides an image is an error naming it."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c, name in enumerate(class_names):
        members = rng.permutation(np.flatnonzero(targets == c))
        if test_per_class is None:
            n_train = min(train_per_class, len(members) - min_test_per_class)
            n_test = len(members) - n_train
            short = n_train < 1 or n_test < 1
            wants = f"at least 1 for train and {min_test_per_class} for test (dataset.min_test_per_class)"
        else:
            n_train, n_test = train_per_class, test_per_class
            short = len(members) < n_train + n_test
            wants = (f"{train_per_class} for train and {test_per_class} for test. Lower "
                     "dataset.train_per_class / dataset.test_per_class or complete the class")
        if short:
            raise ValueError(f"class {name!r} has {len(members)} images but the split takes {wants}.")
        train.append(members[:n_train])
        test.append(members[n_train:n_train + n_test])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


class BenchmarkDataset(ImageDataset):
    """An image dataset stored under ``root`` whose splits are index lists into source datasets.

    Subclasses name the files they need (``expected``, relative to ``root``; a trailing ``/``
    marks a folder), describe the layout and how to get it, and build the splits. The root is
    checked before anything is read, so a missing or partial copy gives one
    ``DatasetNotFoundError``; torchvision's own complaints (e.g. a checksum mismatch) are turned
    into the same error.
    """

    expected: tuple[str, ...] = ()
    layout: str = ""
    how_to_get: str = ""  # may name {root}
    can_download: bool = False

    RULES = {"root": ROOT, "download": DOWNLOAD}

    def __init__(self, root: str | Path, download: bool = False):
        check_settings(self.name, BenchmarkDataset.RULES, root=root, download=download)
        self.root = Path(root).expanduser()
        self.download = download
        if download and self.can_download and (missing_paths(self.root, self.expected) or self.corrupted()):
            self.root.mkdir(parents=True, exist_ok=True)
            self._download()  # torchvision's downloaders fetch again what fails its checksum
        self.require(missing_paths(self.root, self.expected))
        try:
            self._splits = self._build()
        except RuntimeError as err:  # torchvision: "Dataset not found or corrupted ..."
            corrupted = self.corrupted()
            if corrupted:
                raise DatasetChecksumError(self.name, self.root, corrupted,
                                           self.how_to_get.format(root=self.root)) from err
            raise self.not_found([], problem=f"torchvision could not read it: {err}") from err
        # An empty split would fail only once it is used, perhaps after training.
        empty = [name for name in SPLITS if not len(self._splits[name].indices)]
        if empty:
            raise self.not_found([], problem=f"the {' and '.join(empty)} split(s) hold no images")
        if not self.multilabel:
            check_several_classes(self.name, self._splits["train"].targets, f"under {self.root}")

    def not_found(self, missing: list[str], problem: str | None = None,
                  root: Path | None = None) -> DatasetNotFoundError:
        root = root or self.root
        how = self.how_to_get.format(root=root)
        if self.download and not self.can_download:
            how = f"(dataset.download=true cannot fetch this dataset.) {how}"
        return DatasetNotFoundError(self.name, root, missing, self.layout, how, problem)

    def require(self, missing: list[str]) -> None:
        if missing:
            raise self.not_found(missing)

    def _download(self) -> None:
        raise NotImplementedError(f"{self.name} has no downloader")

    def corrupted(self) -> list[tuple[str, str]]:
        """``(path relative to root, expected md5)`` of the files present whose checksum fails the
        check torchvision applies (none for datasets torchvision does not checksum)."""
        return []

    @abstractmethod
    def _build(self) -> dict[str, Split]:
        """Read the data and return the train, val and test splits; set class names."""

    @abstractmethod
    def protocol(self) -> dict[str, Any]:
        """How the splits were made (official or seeded, with every parameter)."""

    def split(self, name: str) -> Dataset:
        check_split_name(name)
        if name == "trainval":
            return self.trainval()
        split = self._splits[name]
        return Subset(split.source, split.indices.tolist())

    def targets(self, name: str) -> np.ndarray:
        """The targets of split ``name`` (train, val or test), without reading any image."""
        return self._splits[name].targets

    def identity(self) -> dict[str, Any]:
        # The root is left out on purpose: a copy of the data moved elsewhere (e.g. node-local
        # scratch) still hits the feature cache. The digest changes whenever a split does.
        digest = hashlib.sha256()
        for name in SPLITS:
            split = self._splits[name]
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(split.indices, dtype=np.int64).tobytes())
            digest.update(np.ascontiguousarray(split.targets).tobytes())
        return {"dataset": self.name, **self.protocol(), "splits_sha256": digest.hexdigest()[:16]}

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["root"] = str(self.root)
        info["class_names"] = list(self.class_names)
        info["split_indices"] = {name: s.indices.tolist() for name, s in self._splits.items() if s.seeded}
        return info
