"""Splits read from list files: ``<relative path> <label>`` per line, one file per split.

This is the form in which the transfer protocol's public code ships its Caltech-101 split
(``<class>/<image> <label>``); pointing ``dataset.split_files`` at such files reproduces a
published split exactly, image for image and label for label. Paths are relative to the
dataset's image root (a path may hold spaces: the label is the last field). Labels are
0-based class indices; when every label's images sit in one folder, that folder names the
class. ``train`` and ``test`` are required; without ``val`` a seeded, stratified
``dataset.val_fraction`` of train becomes val.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from sealab.data.benchmark import BenchmarkDataset, Split, holdout_val

LIST_SPLITS = ("train", "val", "test")


class ImageFiles(Dataset):
    """Image files with one class index each, served as ``(RGB PIL image, int)``."""

    def __init__(self, paths: list[Path], targets: np.ndarray):
        self.paths, self.targets = list(paths), np.asarray(targets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        with Image.open(self.paths[i]) as image:
            return image.convert("RGB"), int(self.targets[i])


def read_split_file(path: Path, image_root: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """``(relative paths, labels, problems)`` of one list file. ``problems`` names each line
    (``file:line``) that is malformed or names an image absent under ``image_root``."""
    rels, labels, problems = [], [], []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.strip().rsplit(maxsplit=1)
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit() or int(fields[1]) < 0:
            problems.append(f"{path}:{line_no}: expected '<relative path> <label>' with a 0-based "
                            f"integer label, got {line!r}")
            continue
        rel = fields[0].lstrip("/")
        if not (image_root / rel).is_file():
            problems.append(f"{path}:{line_no}: image {rel!r} not found under {image_root}")
            continue
        rels.append(rel)
        labels.append(int(fields[1]))
    return rels, np.asarray(labels, dtype=np.int64), problems


def check_split_files(split_files: Mapping[str, Any]) -> dict[str, Path]:
    """The ``dataset.split_files`` mapping as paths, after checking its keys."""
    files = {str(k): Path(str(v)).expanduser() for k, v in dict(split_files).items() if v is not None}
    unknown = sorted(set(files) - set(LIST_SPLITS))
    if unknown or not {"train", "test"} <= set(files):
        raise ValueError(f"dataset.split_files={dict(split_files)}: give list files for train and test "
                         f"(and optionally val), keys among {LIST_SPLITS}; got {sorted(files)}")
    return files


def split_files_identity(files: Mapping[str, Path]) -> dict[str, str]:
    """What keys the feature cache for list-file splits: a digest of each file's content."""
    return {s: hashlib.sha256(p.read_bytes()).hexdigest()[:16] for s, p in sorted(files.items())}


def splits_from_files(dataset: BenchmarkDataset, files: Mapping[str, Path], image_root: Path,
                      val_fraction: float, seed: int) -> tuple[dict[str, Split], list[str]]:
    """The train / val / test splits the list ``files`` name (val: drawn from train when no
    file is given) and the class names. Problems (a missing list file or image, a malformed
    line, labels that do not cover 0..K-1 in train) raise ``dataset.not_found`` naming them."""
    absent = [str(p) for p in files.values() if not p.is_file()]
    if absent:
        raise dataset.not_found(absent, problem="dataset.split_files names list files that do not exist")
    read = {s: read_split_file(p, image_root) for s, p in files.items()}
    problems = [p for _, _, ps in read.values() for p in ps]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise dataset.not_found([], problem="; ".join(problems[:5]) + more)
    empty = [f"{files[s]} lists no images" for s, (_, labels, _) in read.items() if not len(labels)]
    if empty:  # every split is used: an empty test list would fail only after training
        raise dataset.not_found([], problem="; ".join(empty))
    num_classes = 1 + max(int(labels.max()) for _, labels, _ in read.values() if len(labels))
    uncovered = sorted(set(range(num_classes)) - set(read["train"][1].tolist()))
    if uncovered:
        raise dataset.not_found([], problem=(
            f"{files['train']}: labels must be 0-based class indices with training images for every "
            f"class 0..{num_classes - 1}, but there are none for {uncovered[:10]}"))
    folders: dict[int, set[str]] = {}
    for rels, labels, _ in read.values():
        for rel, label in zip(rels, labels.tolist()):
            folders.setdefault(label, set()).add(str(Path(rel).parent))
    names = [next(iter(folders[c])) if len(folders[c]) == 1 else str(c) for c in range(num_classes)]
    if len(set(names)) != len(names):  # two labels share a folder: the folder names no class
        names = [str(c) for c in range(num_classes)]
    splits = {}
    for s, (rels, labels, _) in read.items():
        splits[s] = Split.whole(ImageFiles([image_root / r for r in rels], labels), labels)
    if "val" not in splits:
        splits["train"], splits["val"] = holdout_val(splits["train"], val_fraction, seed, dataset.name)
    return splits, names
