"""PASCAL VOC2007 classification: 20 classes, multi-label, official train / val / test.

Labels come from the devkit's per-class lists ``ImageSets/Main/<class>_<split>.txt``, whose
entries are 1 (the image holds a non-difficult instance), -1 (no instance) and 0 (only
"difficult" instances). Targets are multi-hot float vectors with 1, 0 and -1 for that last
case: the devkit leaves such an image out of the class's evaluation, and so do the 11-point
mAP (``sealab.metrics``) and the multi-label loss (``sealab.heads.linear``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets as tv

from sealab.data.base import SPLITS
from sealab.data.benchmark import BenchmarkDataset, Split
from sealab.metrics import MAP11

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
VOC2007 = "VOCdevkit/VOC2007"
IGNORED = -1.0
# devkit entry -> target: present, absent, only difficult instances (ignored)
DEVKIT_TO_TARGET = {1: 1.0, -1: 0.0, 0: IGNORED}


class LabelledImages(Dataset):
    """Image files with one target each, served as RGB PIL images."""

    def __init__(self, paths: list[Path], targets: np.ndarray):
        self.paths, self.targets = paths, targets

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Image.Image, torch.Tensor]:
        with Image.open(self.paths[i]) as image:
            return image.convert("RGB"), torch.from_numpy(self.targets[i])


def read_devkit_list(path: Path) -> dict[str, int]:
    """``{image id: flag}`` from a ``<class>_<split>.txt`` file (lines ``000005 -1``)."""
    entries = {}
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("1", "0", "-1"):
            raise ValueError(f"{path}:{line_no}: expected '<image id> <1|0|-1>', got {line!r}")
        entries[fields[0]] = int(fields[1])
    return entries


class VOC2007Classification(BenchmarkDataset):
    name, primary_metric, multilabel = "voc2007", MAP11, True
    class_names, num_classes = list(VOC_CLASSES), len(VOC_CLASSES)
    can_download = True
    expected = (f"{VOC2007}/JPEGImages/",
                *(f"{VOC2007}/ImageSets/Main/{s}.txt" for s in SPLITS),
                *(f"{VOC2007}/ImageSets/Main/{c}_{s}.txt" for s in SPLITS for c in VOC_CLASSES))
    layout = (f"<root>/{VOC2007}/{{JPEGImages/<id>.jpg, ImageSets/Main/{{train,val,test}}.txt, "
              "ImageSets/Main/<class>_{train,val,test}.txt}} (the VOCtrainval and VOCtest tars of 2007, "
              "as torchvision.datasets.VOCDetection extracts them)")
    how_to_get = ("rerun with dataset.download=true (torchvision fetches VOCtrainval_06-Nov-2007.tar and "
                  "VOCtest_06-Nov-2007.tar from https://thor.robots.ox.ac.uk/pascal/VOC/voc2007/ into {root}).")

    def _download(self) -> None:
        for image_set in ("trainval", "test"):
            tv.VOCDetection(self.root, year="2007", image_set=image_set, download=True)

    def _read_split(self, split: str) -> Split:
        main = self.root / VOC2007 / "ImageSets" / "Main"
        ids = (main / f"{split}.txt").read_text().split()
        targets = np.empty((len(ids), self.num_classes), dtype=np.float32)
        for c, name in enumerate(VOC_CLASSES):
            flags = read_devkit_list(main / f"{name}_{split}.txt")
            absent = [i for i in ids if i not in flags]
            if absent:
                raise self.not_found([], problem=f"{name}_{split}.txt lacks {len(absent)} of the images in "
                                                 f"{split}.txt (first: {absent[0]}); the copy is incomplete")
            targets[:, c] = [DEVKIT_TO_TARGET[flags[i]] for i in ids]
        paths = [self.root / VOC2007 / "JPEGImages" / f"{i}.jpg" for i in ids]
        self.require([str(p.relative_to(self.root)) for p in paths if not p.is_file()])
        return Split.whole(LabelledImages(paths, targets), targets)

    def _build(self) -> dict[str, Split]:
        return {split: self._read_split(split) for split in SPLITS}

    def protocol(self) -> dict[str, Any]:
        return {"splits": "official VOC2007 train/val/test",
                "difficult": "target -1 (ignored for that class) when an image has only difficult instances"}
