"""Every benchmark loads from a fabricated copy through sealab-train's config, with the
protocol's splits, labels, class count and primary metric; a missing copy gives one clear error."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.dtd
from fabricate import (
    FABRICATORS,
    accept_fabricated_checksums,
    caltech101,
    dtd,
    image_id,
    imagefolder,
    sun397,
    write_image,
)
from helpers import CONF_DIR, compose_train
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from sealab.data.base import SPLITS, DatasetBase, ImageDataset
from sealab.data.errors import DatasetNotFoundError
from sealab.metrics import MAP11, MEAN_PER_CLASS, TOP1

NAMES = list(FABRICATORS)
# The protocol (Ericsson et al. 2021): which metric each benchmark reports.
PRIMARY = {"aircraft": MEAN_PER_CLASS, "caltech101": MEAN_PER_CLASS, "flowers": MEAN_PER_CLASS,
           "pets": MEAN_PER_CLASS, "voc2007": MAP11}
SEEDED = ["caltech101", "cars", "cifar10", "cifar100", "food101", "pets", "sun397", "imagefolder"]


@pytest.fixture
def fabricated_checksums(monkeypatch):
    accept_fabricated_checksums(monkeypatch)


def load(name: str, root: Path, *overrides: str, output_dir: Path) -> ImageDataset:
    cfg = compose_train([f"dataset={name}", f"dataset.root={root}", *overrides], output_dir=output_dir)
    try:
        return instantiate(cfg.dataset)
    except InstantiationException as err:  # Hydra wraps what the constructor raised
        raise err.__cause__ from None


def served(dataset: ImageDataset, split: str) -> list[tuple[int, object]]:
    """(fabricated image id, target) of every sample the split serves, in order."""
    return [(image_id(image), target) for image, target in dataset.split(split)]


def split_ids(dataset: ImageDataset) -> dict[str, set[int]]:
    return {split: {uid for uid, _ in served(dataset, split)} for split in SPLITS}


@pytest.mark.parametrize("name", NAMES)
def test_loads_with_the_protocols_splits(name, tmp_path, fabricated_checksums):
    fab = FABRICATORS[name](tmp_path / name)
    dataset = load(name, fab.root, output_dir=tmp_path)

    assert isinstance(dataset, ImageDataset)
    assert dataset.num_classes == fab.num_classes == len(dataset.class_names)
    assert dataset.primary_metric == PRIMARY.get(name, TOP1)
    assert dataset.multilabel == (name == "voc2007")
    ids = {}
    for split in SPLITS:
        items = served(dataset, split)
        assert len(items) == fab.sizes[split], split
        uids = [uid for uid, _ in items]
        assert len(set(uids)) == len(uids), f"{split} serves an image twice"
        for uid, target in items:  # each image carries the label it was written with
            if dataset.multilabel:
                assert torch.as_tensor(target).tolist() == fab.labels[uid]
            else:
                assert target == fab.labels[uid] and 0 <= target < dataset.num_classes
        targets = np.asarray([torch.as_tensor(t).numpy() for _, t in items])
        np.testing.assert_array_equal(dataset.targets(split), targets)
        ids[split] = set(uids)
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert ids[a].isdisjoint(ids[b]), f"{a} and {b} share images"
    unused = 0
    for pool, members in fab.pools.items():  # e.g. train + val together are exactly the official train
        covered = set().union(*(ids[s] for s in pool))
        assert covered <= members, pool
        unused += len(members - covered)
    assert unused == fab.unused
    assert len(dataset.split("trainval")) == fab.sizes["train"] + fab.sizes["val"]
    record = json.loads(json.dumps(dataset.describe()))
    assert record["split_sizes"] == fab.sizes and record["primary_metric"] == dataset.primary_metric


@pytest.mark.parametrize("name", SEEDED)
def test_seeded_splits_are_reproducible_and_recorded(name, tmp_path, fabricated_checksums):
    fab = FABRICATORS[name](tmp_path / name)
    first, again = (load(name, fab.root, output_dir=tmp_path) for _ in range(2))
    other = load(name, fab.root, "dataset.seed=1", output_dir=tmp_path)
    assert split_ids(first) == split_ids(again) and first.identity() == again.identity()
    assert split_ids(first)["val"] != split_ids(other)["val"] and first.identity() != other.identity()
    recorded = first.describe()["split_indices"]
    assert len(recorded["val"]) == fab.sizes["val"] and recorded["val"] != recorded["train"]


def per_class_counts(dataset: ImageDataset, splits: tuple[str, ...]) -> list[int]:
    labels = np.concatenate([dataset.targets(s) for s in splits])
    return np.bincount(labels, minlength=dataset.num_classes).tolist()


def test_caltech101_takes_30_train_images_per_class_and_skips_the_background(tmp_path):
    dataset = load("caltech101", caltech101(tmp_path).root, output_dir=tmp_path)
    assert per_class_counts(dataset, ("train", "val")) == [30, 30, 30]
    assert per_class_counts(dataset, ("test",)) == [1, 3, 5]  # the rest of 31, 33, 35
    assert "BACKGROUND_Google" not in dataset.class_names


def test_sun397_takes_50_train_and_50_test_images_per_class(tmp_path):
    dataset = load("sun397", sun397(tmp_path).root, output_dir=tmp_path)
    assert per_class_counts(dataset, ("train", "val")) == [50, 50, 50]
    assert per_class_counts(dataset, ("test",)) == [50, 50, 50]
    assert dataset.class_names == ["abbey", "bakery/shop", "zoo"]


def test_sun397_split_does_not_depend_on_the_file_listing_order(tmp_path, monkeypatch):
    root = sun397(tmp_path).root
    first = split_ids(load("sun397", root, output_dir=tmp_path))
    listing = Path.rglob
    monkeypatch.setattr(Path, "rglob", lambda self, pattern: list(listing(self, pattern))[::-1])
    assert split_ids(load("sun397", root, output_dir=tmp_path)) == first


def test_too_few_images_for_the_per_class_split_is_a_clear_error(tmp_path):
    root = caltech101(tmp_path).root
    with pytest.raises(ValueError, match=r"'accordion' has 31 images.*dataset.train_per_class"):
        load("caltech101", root, "dataset.train_per_class=31", output_dir=tmp_path)


# --- errors ---------------------------------------------------------------------------------

FIX = {"cars": "kaggle.com/datasets", "imagefolder": "one folder per class"}


@pytest.mark.parametrize("name", NAMES)
def test_missing_dataset_names_the_path_the_files_and_the_fix(name, tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as caught:
        load(name, root, output_dir=tmp_path)
    message = str(caught.value)
    assert str(root) in message and "Expected layout" in message
    assert FIX.get(name, "dataset.download=true") in message and "dataset.root" in message
    assert not root.exists(), "looking for a dataset must not create its folder"


# One file or folder each copy cannot do without (relative to the dataset root).
ESSENTIAL = {
    "aircraft": "fgvc-aircraft-2013b/data/images_variant_test.txt",
    "caltech101": "caltech101/101_ObjectCategories/",
    "cars": "stanford_cars/cars_test_annos_withlabels.mat",
    "cifar10": "cifar-10-batches-py/data_batch_3",
    "cifar100": "cifar-100-python/meta",
    "dtd": "dtd/dtd/labels/val1.txt",
    "flowers": "flowers-102/setid.mat",
    "food101": "food-101/meta/test.json",
    "pets": "oxford-iiit-pet/annotations/test.txt",
    "sun397": "SUN397/ClassName.txt",
    "voc2007": "VOCdevkit/VOC2007/ImageSets/Main/dog_val.txt",
}


@pytest.mark.parametrize("name", list(ESSENTIAL))
def test_incomplete_dataset_names_the_missing_file(name, tmp_path, fabricated_checksums):
    fab = FABRICATORS[name](tmp_path / name)
    path = fab.root / ESSENTIAL[name]
    if path.is_dir():
        for child in path.rglob("*"):
            if child.is_file():
                child.unlink()
        for child in sorted(path.rglob("*"), reverse=True):
            child.rmdir()
        path.rmdir()
    else:
        path.unlink()
    with pytest.raises(DatasetNotFoundError, match=ESSENTIAL[name]):
        load(name, fab.root, output_dir=tmp_path)


def test_voc_image_missing_from_its_folder_is_named(tmp_path):
    fab = FABRICATORS["voc2007"](tmp_path)
    (fab.root / "VOCdevkit/VOC2007/JPEGImages/000003.jpg").unlink()
    with pytest.raises(DatasetNotFoundError, match="JPEGImages/000003.jpg"):
        load("voc2007", fab.root, output_dir=tmp_path)


def test_files_torchvision_rejects_give_the_same_error(tmp_path):
    # No checksum patch: torchvision compares the fabricated CIFAR files with the real md5 sums.
    root = FABRICATORS["cifar10"](tmp_path).root
    with pytest.raises(DatasetNotFoundError, match="torchvision could not read it"):
        load("cifar10", root, output_dir=tmp_path)


def test_stanford_cars_download_request_explains_the_manual_route(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="download=true cannot fetch") as caught:
        load("cars", tmp_path / "cars", "dataset.download=true", output_dir=tmp_path)
    assert "cars_test_annos_withlabels.mat" in str(caught.value)


def test_download_uses_torchvisions_downloader_only_when_files_are_missing(tmp_path, monkeypatch):
    calls = []

    def fake_download(url, download_root, **kwargs):  # what the archive would have extracted
        calls.append(url)
        dtd(tmp_path / "dtd")

    monkeypatch.setattr(torchvision.datasets.dtd, "download_and_extract_archive", fake_download)
    dataset = load("dtd", tmp_path / "dtd", "dataset.download=true", output_dir=tmp_path)
    assert len(calls) == 1 and "dtd" in calls[0] and len(dataset.split("test")) == 6
    load("dtd", tmp_path / "dtd", "dataset.download=true", output_dir=tmp_path)
    assert len(calls) == 1, "a complete copy is not downloaded again"


# --- your own folders -----------------------------------------------------------------------

def test_imagefolder_with_own_val_and_test_folders_keeps_the_training_class_numbers(tmp_path):
    train = imagefolder(tmp_path / "train", per_class=4)
    for split, classes in (("val", ["cat", "zebra"]), ("test", ["dog", "zebra"])):
        for k, name in enumerate(classes):  # ids far from the training images' ids
            write_image(tmp_path / split / name / f"{k}.jpg", 1000 + 100 * (split == "test") + k)
    dataset = load("imagefolder", train.root, f"dataset.val_root={tmp_path / 'val'}",
                   f"dataset.test_root={tmp_path / 'test'}", output_dir=tmp_path)
    assert dataset.class_names == ["cat", "dog", "zebra"]
    assert [t for _, t in served(dataset, "val")] == [0, 2]
    assert [t for _, t in served(dataset, "test")] == [1, 2]
    assert len(dataset.split("train")) == 12  # the whole training folder


def test_imagefolder_rejects_a_class_it_has_no_training_images_for(tmp_path):
    train = imagefolder(tmp_path / "train", per_class=4)
    write_image(tmp_path / "test" / "okapi" / "0.jpg", 999)
    with pytest.raises(DatasetNotFoundError, match="okapi"):
        load("imagefolder", train.root, f"dataset.test_root={tmp_path / 'test'}", output_dir=tmp_path)


def test_imagefolder_refuses_an_unknown_primary_metric(tmp_path):
    train = imagefolder(tmp_path / "train", per_class=4)
    with pytest.raises(ValueError, match="primary_metric"):
        load("imagefolder", train.root, "dataset.primary_metric=map11", output_dir=tmp_path)


def fabricated_features(root: Path) -> list[str]:
    """Overrides for ``dataset=features``: tiny .pt files in the paper code's format."""
    root.mkdir(parents=True)
    for split in ("train", "test"):
        torch.save(torch.randn(20, 4), root / f"{split}_feat.pt")
        torch.save([i % 2 for i in range(20)], root / f"{split}_label.pt")
    return [f"dataset.{split}_{kind}={root}/{split}_{short}.pt" for split in ("train", "test")
            for kind, short in (("features", "feat"), ("labels", "label"))]


@pytest.mark.parametrize("path", sorted(CONF_DIR.glob("dataset/*.yaml")), ids=lambda p: p.stem)
def test_every_dataset_config_instantiates_a_dataset_of_its_task(path, tmp_path, fabricated_checksums):
    name, overrides = path.stem, []
    if name in FABRICATORS:
        overrides = [f"dataset.root={FABRICATORS[name](tmp_path / name).root}"]
    elif name == "features":
        overrides = fabricated_features(tmp_path / name)
    dataset = instantiate(compose_train([f"dataset={name}", *overrides], output_dir=tmp_path).dataset)
    assert isinstance(dataset, DatasetBase)
    assert dataset.task.primary_metric == dataset.primary_metric in dataset.task.metric_names
    assert dataset.describe()["split_sizes"]["test"] > 0
