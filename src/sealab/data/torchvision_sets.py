"""Benchmarks read through torchvision's class for them, on torchvision's on-disk layout.

Official train / val / test: Aircraft (variant level), DTD (a chosen partition), Flowers-102.
Official train (Pets: trainval) and test, val a seeded stratified fraction of train: Stanford
Cars, CIFAR-10, CIFAR-100, Food-101, Oxford-IIIT Pets. ``dataset.root`` is what torchvision
calls ``root``; ``download=true`` uses torchvision's own downloader.
"""

from __future__ import annotations

import importlib
from abc import abstractmethod
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset
from torchvision import datasets as tv

from sealab.data.base import FRACTION, PARTITION, SPLIT_SEED, SPLITS, check_settings
from sealab.data.benchmark import BenchmarkDataset, Split, holdout_val
from sealab.metrics import MEAN_PER_CLASS

Labelled = tuple[Dataset, list[int], list[str]]  # (images in a fixed order, targets, class names)


class TorchvisionBenchmark(BenchmarkDataset):
    """Official splits, each opened with torchvision's class for the dataset."""

    official: tuple[str, ...] = SPLITS  # torchvision's split names that are read
    can_download = True

    @abstractmethod
    def _open(self, split: str, download: bool) -> Dataset:
        """torchvision's dataset for official split ``split``."""

    def _labelled(self, source: Any) -> Labelled:
        # Most torchvision classes keep the targets in ``_labels``; the others override this.
        return source, source._labels, list(source.classes)

    # torchvision module whose ``check_integrity`` verifies the files of ``checksummed()``
    checksum_module: str | None = None

    def _download(self) -> None:
        for split in self.official:
            self._open(split, download=True)

    def checksummed(self) -> list[tuple[str, str]]:
        """``(path relative to root, md5)`` of the files torchvision checks before reading."""
        return []

    def corrupted(self) -> list[tuple[str, str]]:
        if not self.checksum_module:
            return []
        # looked up at call time: torchvision's own check (which a test may replace)
        check = importlib.import_module(self.checksum_module).check_integrity
        return [(rel, md5) for rel, md5 in self.checksummed()
                if (self.root / rel).is_file() and not check(str(self.root / rel), md5)]

    def _read(self) -> dict[str, Split]:
        labelled = {s: self._labelled(self._open(s, download=False)) for s in self.official}
        class_lists = {s: names for s, (_, _, names) in labelled.items()}
        first = next(iter(class_lists.values()))
        if any(names != first for names in class_lists.values()):
            sizes = {s: len(names) for s, names in class_lists.items()}
            raise self.not_found([], problem=f"the splits list different classes ({sizes} classes); "
                                             "the copy is incomplete or mixes versions")
        self.class_names, self.num_classes = first, len(first)
        return {s: Split.whole(source, targets) for s, (source, targets, _) in labelled.items()}

    def _build(self) -> dict[str, Split]:
        return self._read()

    def protocol(self) -> dict[str, Any]:
        return {"splits": "official train/val/test"}


class HeldOutVal(TorchvisionBenchmark):
    """Official ``fit`` and test splits; a seeded, stratified ``val_fraction`` of fit is val."""

    official = ("train", "test")

    RULES = {**BenchmarkDataset.RULES, "val_fraction": FRACTION, "seed": SPLIT_SEED}

    def __init__(self, root: str | Path, download: bool = False, val_fraction: float = 0.2, seed: int = 0):
        check_settings(self.name, self.RULES, val_fraction=val_fraction, seed=seed)
        self.val_fraction, self.seed = val_fraction, seed
        super().__init__(root, download)

    def _build(self) -> dict[str, Split]:
        read = self._read()
        fit, test = self.official
        train, val = holdout_val(read[fit], self.val_fraction, self.seed, self.name)
        return {"train": train, "val": val, "test": read[test]}

    def protocol(self) -> dict[str, Any]:
        fit = self.official[0]
        return {"splits": f"official {fit}/test; val = seeded stratified fraction of {fit}",
                "val_fraction": self.val_fraction, "split_seed": self.seed}


_AIRCRAFT = "fgvc-aircraft-2013b/data"


class Aircraft(TorchvisionBenchmark):
    """FGVC-Aircraft 2013b at the variant level (100 classes)."""

    name, primary_metric = "aircraft", MEAN_PER_CLASS
    expected = (f"{_AIRCRAFT}/images/", f"{_AIRCRAFT}/variants.txt",
                *(f"{_AIRCRAFT}/images_variant_{s}.txt" for s in SPLITS))
    layout = (f"<root>/{_AIRCRAFT}/{{images/<id>.jpg, variants.txt, images_variant_{{train,val,test}}.txt}}"
              " (torchvision.datasets.FGVCAircraft)")
    how_to_get = ("rerun with dataset.download=true (torchvision fetches fgvc-aircraft-2013b.tar.gz, 2.6 GB, "
                  "from https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/ into {root}).")

    def _open(self, split: str, download: bool) -> Dataset:
        return tv.FGVCAircraft(self.root, split, annotation_level="variant", download=download)


class DTD(TorchvisionBenchmark):
    """Describable Textures (47 classes), official split of one of its 10 partitions."""

    name = "dtd"
    layout = ("<root>/dtd/dtd/{images/<class>/<name>.jpg, labels/{train,val,test}<partition>.txt}"
              " (torchvision.datasets.DTD)")
    how_to_get = ("rerun with dataset.download=true (torchvision fetches dtd-r1.0.1.tar.gz, 600 MB, "
                  "from https://www.robots.ox.ac.uk/~vgg/data/dtd/ into {root}/dtd).")

    RULES = {**BenchmarkDataset.RULES, "partition": PARTITION}  # the protocol uses partition 1

    def __init__(self, root: str | Path, download: bool = False, partition: int = 1):
        check_settings(self.name, self.RULES, partition=partition)
        self.partition = partition
        super().__init__(root, download)

    @property
    def expected(self) -> tuple[str, ...]:
        return ("dtd/dtd/images/", *(f"dtd/dtd/labels/{s}{self.partition}.txt" for s in SPLITS))

    def _open(self, split: str, download: bool) -> Dataset:
        return tv.DTD(self.root, split, partition=self.partition, download=download)

    def protocol(self) -> dict[str, Any]:
        return {**super().protocol(), "partition": self.partition}


class Flowers(TorchvisionBenchmark):
    """Oxford Flowers-102."""

    name, primary_metric = "flowers", MEAN_PER_CLASS
    expected = ("flowers-102/jpg/", "flowers-102/imagelabels.mat", "flowers-102/setid.mat")
    layout = ("<root>/flowers-102/{jpg/image_<00001>.jpg, imagelabels.mat, setid.mat}"
              " (torchvision.datasets.Flowers102)")
    how_to_get = ("rerun with dataset.download=true (torchvision fetches 102flowers.tgz, imagelabels.mat "
                  "and setid.mat from https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ into {root}/flowers-102).")

    checksum_module = "torchvision.datasets.flowers102"

    def _open(self, split: str, download: bool) -> Dataset:
        return tv.Flowers102(self.root, split, download=download)

    def checksummed(self) -> list[tuple[str, str]]:
        return [(f"flowers-102/{name}", md5) for key, (name, md5) in tv.Flowers102._file_dict.items()
                if key in ("label", "setid")]


class Cars(HeldOutVal):
    """Stanford Cars (196 classes). It can no longer be downloaded automatically."""

    name = "cars"
    can_download = False
    expected = ("stanford_cars/devkit/cars_meta.mat", "stanford_cars/devkit/cars_train_annos.mat",
                "stanford_cars/cars_train/", "stanford_cars/cars_test_annos_withlabels.mat",
                "stanford_cars/cars_test/")
    layout = ("<root>/stanford_cars/{cars_train/<id>.jpg, cars_test/<id>.jpg, cars_test_annos_withlabels.mat, "
              "devkit/{cars_meta.mat, cars_train_annos.mat}} (torchvision.datasets.StanfordCars)")
    how_to_get = ("Stanford Cars cannot be downloaded automatically: its original site "
                  "(https://ai.stanford.edu/~jkrause/cars/car_dataset.html) is gone. Place the files by hand "
                  "under {root}/stanford_cars: cars_train/ and cars_test/ from the Kaggle mirror "
                  "https://www.kaggle.com/datasets/jessicali9530/stanford-cars-dataset (flatten its nested "
                  "cars_train/cars_train folders), devkit/ from car_devkit.tgz and "
                  "cars_test_annos_withlabels.mat, both linked in https://github.com/pytorch/vision/issues/7545.")

    def _open(self, split: str, download: bool) -> Dataset:
        return tv.StanfordCars(self.root, split)

    def _labelled(self, source: Any) -> Labelled:
        return source, [target for _, target in source._samples], list(source.classes)


class CIFAR10(HeldOutVal):
    name = "cifar10"
    folder, files = "cifar-10-batches-py", (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
    tv_class = tv.CIFAR10
    checksum_module = "torchvision.datasets.cifar"
    how_to_get = ("rerun with dataset.download=true (torchvision fetches the python version from "
                  "https://www.cs.toronto.edu/~kriz/cifar.html into {root}).")

    @property
    def expected(self) -> tuple[str, ...]:
        return tuple(f"{self.folder}/{f}" for f in self.files)

    @property
    def layout(self) -> str:
        return f"<root>/{self.folder}/{{{', '.join(self.files)}}} (torchvision.datasets.{self.tv_class.__name__})"

    def _open(self, split: str, download: bool) -> Dataset:
        return self.tv_class(self.root, train=split == "train", download=download)

    def _labelled(self, source: Any) -> Labelled:
        return source, source.targets, list(source.classes)

    def checksummed(self) -> list[tuple[str, str]]:
        tvc = self.tv_class
        entries = [*tvc.train_list, *tvc.test_list, (tvc.meta["filename"], tvc.meta["md5"])]
        return [(f"{self.folder}/{name}", md5) for name, md5 in entries]


class CIFAR100(CIFAR10):
    name = "cifar100"
    folder, files = "cifar-100-python", ("train", "test", "meta")
    tv_class = tv.CIFAR100


class Food101(HeldOutVal):
    name = "food101"
    expected = ("food-101/images/", "food-101/meta/train.json", "food-101/meta/test.json")
    layout = ("<root>/food-101/{images/<class>/<id>.jpg, meta/{train,test}.json}"
              " (torchvision.datasets.Food101)")
    how_to_get = ("rerun with dataset.download=true (torchvision fetches food-101.tar.gz, 5 GB, "
                  "from http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz into {root}).")

    def _open(self, split: str, download: bool) -> Dataset:
        return tv.Food101(self.root, split, download=download)


class Pets(HeldOutVal):
    """Oxford-IIIT Pet (37 breeds): official trainval and test."""

    name, primary_metric = "pets", MEAN_PER_CLASS
    official = ("trainval", "test")
    expected = ("oxford-iiit-pet/images/", "oxford-iiit-pet/annotations/trainval.txt",
                "oxford-iiit-pet/annotations/test.txt")
    layout = ("<root>/oxford-iiit-pet/{images/<Breed>_<n>.jpg, annotations/{trainval,test}.txt}"
              " (torchvision.datasets.OxfordIIITPet)")
    how_to_get = ("rerun with dataset.download=true (torchvision fetches images.tar.gz and annotations.tar.gz "
                  "from https://www.robots.ox.ac.uk/~vgg/data/pets/ into {root}/oxford-iiit-pet).")

    def _open(self, split: str, download: bool) -> Dataset:
        return tv.OxfordIIITPet(self.root, split, download=download)
