"""scikit-learn's handwritten digits: the offline dataset of the embedded default."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from torch.utils.data import Dataset

from sealab.data.base import FRACTION, SPLIT_SEED, SPLITS, ImageDataset, check_settings, check_split_name
from sealab.data.splits import stratified_holdout
from sealab.rules import COUNT


class ArrayImages(Dataset):
    """Grey-scale images held in a uint8 array, served as PIL images with integer labels."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[i], mode="L"), int(self.labels[i])


class Digits(ImageDataset):
    """1797 8x8 digit images (ships with scikit-learn), split test / val / train by a seeded,
    stratified draw: ``test_size`` images for test, then ``val_fraction`` of the rest for val."""

    name = "digits"
    num_classes = 10
    class_names = [str(d) for d in range(10)]

    RULES = {"test_size": COUNT, "val_fraction": FRACTION, "seed": SPLIT_SEED}  # test_size: images

    def __init__(self, test_size: int = 773, val_fraction: float = 0.2, seed: int = 0):
        check_settings(self.name, self.RULES, test_size=test_size, val_fraction=val_fraction, seed=seed)
        bunch = load_digits()
        # 0..16 intensities -> full 8-bit range, so the images look like any other image.
        self._images = np.round(bunch.images * (255 / 16)).astype(np.uint8)
        self._labels = bunch.target.astype(np.int64)
        self.test_size, self.val_fraction, self.seed = test_size, val_fraction, seed
        rest, test = stratified_holdout(self._labels, test_size, seed, self.name, "dataset.test_size")
        train, val = stratified_holdout(self._labels[rest], val_fraction, seed, self.name)
        self.indices = {"train": rest[train], "val": rest[val], "test": test}

    def split(self, name: str) -> Dataset:
        check_split_name(name)
        if name == "trainval":
            return self.trainval()
        idx = self.indices[name]
        return ArrayImages(self._images[idx], self._labels[idx])

    def identity(self) -> dict[str, Any]:
        return {
            "dataset": self.name,
            "test_size": self.test_size,
            "val_fraction": self.val_fraction,
            "split_seed": self.seed,
        }

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["split_indices"] = {s: self.indices[s].tolist() for s in SPLITS}
        return info
