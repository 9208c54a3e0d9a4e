"""Your own images, one folder per class (torchvision's ImageFolder layout)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torchvision.datasets import ImageFolder

from sealab.data.base import FRACTION, ROOT, SPLIT_SEED, check_settings
from sealab.data.benchmark import BenchmarkDataset, Split, holdout_val
from sealab.data.split_files import (
    check_split_files,
    split_files_identity,
    splits_from_files,
)
from sealab.metrics import MEAN_PER_CLASS, TOP1
from sealab.rules import NAME, mapping, one_of, text

METRICS = (TOP1, MEAN_PER_CLASS)


class FolderWithClasses(ImageFolder):
    """An ImageFolder indexed by a given class list, so a val or test folder holding only
    some of the classes keeps the training folder's label numbers."""

    def __init__(self, root: Path, classes: list[str]):
        self.fixed_classes = classes
        super().__init__(str(root), allow_empty=True)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        return self.fixed_classes, {name: i for i, name in enumerate(self.fixed_classes)}


def class_folders(root: Path) -> list[str]:
    return sorted(entry.name for entry in root.iterdir() if entry.is_dir())


class ImageFolderDataset(BenchmarkDataset):
    """``root/<class>/<image>``. ``val_root`` and ``test_root`` (same layout, classes among
    root's) are optional: without ``test_root`` a seeded, stratified ``test_fraction`` of root
    is test; without ``val_root`` a seeded, stratified ``val_fraction`` of the rest is val.
    ``split_files`` (train / val / test lists of ``<path relative to root> <label>`` lines,
    ``sealab.data.split_files``) instead fixes every split and label exactly."""

    expected = ("./",)
    layout = "<root>/<class name>/<image>.{jpg,jpeg,png,...}: one folder per class (torchvision ImageFolder)"
    how_to_get = ("put your images at {root}/<class name>/<image>.jpg, one folder per class, and set "
                  "dataset.root (and optionally dataset.val_root / dataset.test_root, same layout).")

    RULES = {"name": NAME, "root": ROOT, "val_root": text(nullable=True), "test_root": text(nullable=True),
             "split_files": mapping(nullable=True), "val_fraction": FRACTION, "test_fraction": FRACTION,
             "seed": SPLIT_SEED, "primary_metric": one_of(*METRICS)}

    def __init__(self, root: str | Path, val_root: str | Path | None = None, test_root: str | Path | None = None,
                 val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0,
                 primary_metric: str = TOP1, name: str = "imagefolder",
                 split_files: Mapping[str, str] | None = None):
        check_settings(name, self.RULES, name=name, root=root, val_root=val_root, test_root=test_root,
                       split_files=split_files, val_fraction=val_fraction, test_fraction=test_fraction,
                       seed=seed, primary_metric=primary_metric)
        self.split_files = check_split_files(split_files) if split_files else None
        if self.split_files and (val_root or test_root):
            raise ValueError("dataset.split_files fixes every split: leave dataset.val_root and "
                             "dataset.test_root unset (null) with it")
        self.name, self.primary_metric = name, primary_metric
        self.roots = {"val": Path(val_root).expanduser() if val_root else None,
                      "test": Path(test_root).expanduser() if test_root else None}
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed
        super().__init__(root)

    def _folder(self, root: Path, classes: list[str] | None) -> Split:
        if not root.is_dir():
            raise self.not_found(["./"], root=root)
        try:
            folder = ImageFolder(str(root)) if classes is None else FolderWithClasses(root, classes)
        except FileNotFoundError as err:  # no class folder, or a class folder without images
            raise self.not_found([], problem=str(err), root=root) from err
        return Split.whole(folder, folder.targets)

    def _build(self) -> dict[str, Split]:
        if self.split_files:
            splits, self.class_names = splits_from_files(self, self.split_files, self.root,
                                                         self.val_fraction, self.seed)
            self.num_classes = len(self.class_names)
            return splits
        rest = self._folder(self.root, None)
        self.class_names = list(rest.source.classes)
        self.num_classes = len(self.class_names)
        splits = {}
        for split in ("test", "val"):
            root = self.roots[split]
            if root is None:
                fraction = self.test_fraction if split == "test" else self.val_fraction
                rest, splits[split] = holdout_val(rest, fraction, self.seed, self.name,
                                                  f"dataset.{split}_fraction")
                continue
            unknown = sorted(set(class_folders(root)) - set(self.class_names))
            if unknown:
                raise self.not_found([], root=root, problem=(
                    f"class folders {unknown} are not among the {self.num_classes} classes of {self.root}; "
                    "every val/test class needs training images"))
            splits[split] = self._folder(root, self.class_names)
        return {"train": rest, **splits}

    def protocol(self) -> dict[str, Any]:
        if self.split_files:
            val = "val" in self.split_files
            return {"splits": "list files (dataset.split_files)" + ("" if val else "; val = seeded "
                                                                     "stratified val_fraction of train"),
                    "split_files": split_files_identity(self.split_files),
                    "val_fraction": None if val else self.val_fraction, "split_seed": None if val else self.seed}
        made = {}
        for split in ("test", "val"):
            root = self.roots[split]
            made[split] = "own folder" if root else f"seeded stratified {split}_fraction of the training folder"
        return {"splits": made, "val_fraction": self.val_fraction, "test_fraction": self.test_fraction,
                "split_seed": self.seed}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **{f"{s}_root": str(r) if r else None for s, r in self.roots.items()}}

    def identity(self) -> dict[str, Any]:
        # Unlike a published benchmark, a folder's content can change: key on its file list too.
        digest = hashlib.sha256()
        for split in ("train", "val", "test"):
            s = self._splits[split]
            for i in s.indices:
                path = s.source.samples[i][0] if hasattr(s.source, "samples") else s.source.paths[i]
                digest.update(f"{split}:{Path(path).name}:{Path(path).parent.name}\n".encode())
        return {**super().identity(), "files_sha256": digest.hexdigest()[:16]}
