"""Caltech-101 and SUN397: benchmarks whose split comes from a per-class rule or partition lists.

Caltech-101 (102 classes, BACKGROUND_Google included as the protocol does): ``train_per_class``
(30) images per class for train, the rest test; a class too small for that keeps
``min_test_per_class`` (1) images for test and gives all its others to train. The draw is
seeded and recorded; ``split_files`` (train / val / test lists of ``<class>/<image> <label>``
lines, the form the protocol's public code ships) reproduces a published split exactly.

SUN397: the official partition ``partition`` (the protocol uses the first):
``Partitions/Training_01.txt`` and ``Testing_01.txt``, 50 + 50 images per class, read as listed,
from ``SUN397/Partitions/`` or from ``Partitions/`` beside ``SUN397/``.

In both, a seeded, stratified ``val_fraction`` of train becomes val (unless a val list is given).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torchvision import datasets as tv
from torchvision.datasets.folder import IMG_EXTENSIONS

from sealab.data.base import FRACTION, PARTITION, SPLIT_SEED, check_settings
from sealab.data.benchmark import (
    BenchmarkDataset,
    Split,
    holdout_val,
    per_class_partition,
)
from sealab.data.split_files import (
    ImageFiles,
    check_split_files,
    split_files_identity,
    splits_from_files,
)
from sealab.metrics import MEAN_PER_CLASS
from sealab.rules import BOOL, COUNT, mapping

BACKGROUND = "BACKGROUND_Google"
PARTITION_FOLDERS = ("SUN397/Partitions", "Partitions")  # relative to the root; the first is the documented one
_CALTECH = "caltech101/101_ObjectCategories"


class Caltech101(BenchmarkDataset):
    name, primary_metric = "caltech101", MEAN_PER_CLASS
    can_download = True
    expected = (f"{_CALTECH}/",)
    layout = (f"<root>/{_CALTECH}/<class>/image_<0001>.jpg, 102 class folders including {BACKGROUND} "
              "(torchvision.datasets.Caltech101)")
    how_to_get = ("rerun with dataset.download=true (torchvision fetches caltech-101.zip from "
                  "https://data.caltech.edu/records/mzrjq-6wc02 into {root}/caltech101).")

    RULES = {**BenchmarkDataset.RULES, "train_per_class": COUNT, "min_test_per_class": COUNT,
             "include_background": BOOL, "split_files": mapping(nullable=True), "val_fraction": FRACTION,
             "seed": SPLIT_SEED}

    def __init__(self, root: str | Path, download: bool = False, train_per_class: int = 30,
                 min_test_per_class: int = 1, include_background: bool = True,
                 split_files: Mapping[str, str] | None = None, val_fraction: float = 0.2, seed: int = 0):
        check_settings(self.name, self.RULES, train_per_class=train_per_class,
                       min_test_per_class=min_test_per_class, include_background=include_background,
                       split_files=split_files, val_fraction=val_fraction, seed=seed)
        self.train_per_class, self.min_test_per_class = train_per_class, min_test_per_class
        self.include_background = include_background
        self.split_files = check_split_files(split_files) if split_files else None
        self.val_fraction, self.seed = val_fraction, seed
        super().__init__(root, download)

    def _download(self) -> None:
        tv.Caltech101(self.root, download=True)

    def _build(self) -> dict[str, Split]:
        images = self.root / _CALTECH
        if self.split_files:
            splits, self.class_names = splits_from_files(self, self.split_files, images,
                                                         self.val_fraction, self.seed)
            self.num_classes = len(self.class_names)
            return splits
        classes = sorted(d.name for d in images.iterdir() if d.is_dir())
        if not self.include_background and BACKGROUND in classes:
            classes.remove(BACKGROUND)
        paths, targets = [], []
        for c, name in enumerate(classes):
            files = sorted(f for f in (images / name).iterdir()
                           if f.is_file() and f.suffix.lower() in IMG_EXTENSIONS)
            if not files:
                raise self.not_found([f"{_CALTECH}/{name}/image_0001.jpg"],
                                     problem=f"class folder {name!r} holds no images")
            paths += files
            targets += [c] * len(files)
        if not classes:
            raise self.not_found([f"{_CALTECH}/<class>/"], problem="no class folders")
        self.class_names, self.num_classes = classes, len(classes)
        targets = np.asarray(targets, dtype=np.int64)
        everything = Split.whole(ImageFiles(paths, targets), targets)
        train, test = per_class_partition(targets, classes, self.train_per_class, None, self.seed,
                                          self.min_test_per_class)
        train, val = holdout_val(everything.take(train), self.val_fraction, self.seed, self.name)
        return {"train": train, "val": val, "test": everything.take(test)}

    def protocol(self) -> dict[str, Any]:
        if self.split_files:
            return {"splits": "list files (dataset.split_files)" + (
                        "" if "val" in self.split_files else "; val = seeded stratified fraction of train"),
                    "split_files": split_files_identity(self.split_files),
                    "val_fraction": None if "val" in self.split_files else self.val_fraction,
                    "split_seed": None if "val" in self.split_files else self.seed}
        return {"splits": "seeded per-class train/test; val = seeded stratified fraction of train",
                "train_per_class": self.train_per_class, "test_per_class": "rest",
                "min_test_per_class": self.min_test_per_class, "include_background": self.include_background,
                "val_fraction": self.val_fraction, "split_seed": self.seed}


PARTITIONS_URL = "http://vision.princeton.edu/projects/2010/SUN/download/Partitions.zip"


class SUN397(BenchmarkDataset):
    """SUN397 (397 scene classes) on its official partition ``partition`` (1..10)."""

    name = "sun397"
    can_download = True  # the images; the partition lists must be placed by hand

    RULES = {**BenchmarkDataset.RULES, "partition": PARTITION, "val_fraction": FRACTION, "seed": SPLIT_SEED}

    def __init__(self, root: str | Path, download: bool = False, partition: int = 1,
                 val_fraction: float = 0.2, seed: int = 0):
        check_settings(self.name, self.RULES, partition=partition, val_fraction=val_fraction, seed=seed)
        self.partition, self.val_fraction, self.seed = partition, val_fraction, seed
        super().__init__(root, download)

    @property
    def lists(self) -> dict[str, str]:
        """The partition lists, in SUN397/Partitions/ or in Partitions/ beside SUN397/ (where
        Partitions.zip unzips when it is unzipped in the root, as often as inside SUN397/)."""
        names = {s: f"{kind}_{self.partition:02d}.txt" for s, kind in (("train", "Training"), ("test", "Testing"))}
        found = next((folder for folder in PARTITION_FOLDERS
                      if all((self.root / folder / name).is_file() for name in names.values())), PARTITION_FOLDERS[0])
        return {s: f"{found}/{name}" for s, name in names.items()}

    @property
    def expected(self) -> tuple[str, ...]:
        return ("SUN397/ClassName.txt", *self.lists.values())

    @property
    def layout(self) -> str:
        return ("<root>/SUN397/{ClassName.txt, <letter>/<class>/sun_<id>.jpg} (torchvision.datasets.SUN397) "
                f"and the official partition lists <root>/{self.lists['train']} and <root>/{self.lists['test']} "
                "(lines like /a/abbey/sun_aaalbzqrimafwbiv.jpg, relative to <root>/SUN397)")

    @property
    def how_to_get(self) -> str:
        return ("the images: rerun with dataset.download=true (torchvision fetches SUN397.tar.gz, 37 GB, from "
                "http://vision.princeton.edu/projects/2010/SUN/ into {root}). The partition lists: download "
                f"Partitions.zip from the SUN397 site ({PARTITIONS_URL}) and unzip it so that "
                f"Training_{self.partition:02d}.txt and Testing_{self.partition:02d}.txt sit in "
                "{root}/SUN397/Partitions/ or {root}/Partitions/.")

    def _download(self) -> None:
        if not (self.root / "SUN397" / "ClassName.txt").is_file():
            tv.SUN397(self.root, download=True)

    def _read_list(self, rel_list: str, class_index: dict[str, int]) -> Split:
        base, path = self.root / "SUN397", self.root / rel_list
        paths, targets, problems = [], [], []
        for line_no, line in enumerate(path.read_text().splitlines(), 1):
            rel = line.strip()
            if not rel:
                continue
            cls = "/" + str(Path(rel.lstrip("/")).parent)
            if cls not in class_index:
                problems.append(f"{path}:{line_no}: class {cls!r} of {rel!r} is not in ClassName.txt")
            elif not (base / rel.lstrip("/")).is_file():
                problems.append(f"{path}:{line_no}: image {rel!r} not found under {base}")
            else:
                paths.append(base / rel.lstrip("/"))
                targets.append(class_index[cls])
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise self.not_found([], problem="; ".join(problems[:5]) + more)
        targets = np.asarray(targets, dtype=np.int64)
        return Split.whole(ImageFiles(paths, targets), targets)

    def _build(self) -> dict[str, Split]:
        keys = [c.strip() for c in (self.root / "SUN397" / "ClassName.txt").read_text().splitlines() if c.strip()]
        self.class_names = [k[3:] for k in keys]  # "/a/abbey" -> "abbey", as torchvision names them
        self.num_classes = len(keys)
        index = {k: i for i, k in enumerate(keys)}
        train = self._read_list(self.lists["train"], index)
        train, val = holdout_val(train, self.val_fraction, self.seed, self.name)
        return {"train": train, "val": val, "test": self._read_list(self.lists["test"], index)}

    def protocol(self) -> dict[str, Any]:
        return {"splits": f"official partition {self.partition} (Training/Testing_{self.partition:02d}.txt); "
                          "val = seeded stratified fraction of its training part",
                "partition": self.partition,
                "partition_lists": split_files_identity({s: self.root / p for s, p in self.lists.items()}),
                "val_fraction": self.val_fraction, "split_seed": self.seed}
