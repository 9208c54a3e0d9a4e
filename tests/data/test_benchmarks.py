"""Every benchmark loads from a fabricated copy through sealab-train's config, with the
protocol's splits, labels, class count and primary metric; a missing copy gives one clear error."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.dtd
from fabricate import (
    FABRICATORS,
    accept_fabricated_checksums,
    caltech101,
    caltech101_split_files,
    dtd,
    image_id,
    imagefolder,
    sun397,
    write_image,
)
from helpers import CONF_DIR, compose_train
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from PIL import Image

from sealab.data.base import SPLITS, DatasetBase, ImageDataset
from sealab.data.errors import DatasetChecksumError, DatasetNotFoundError
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


def test_caltech101_takes_30_train_images_per_class_and_keeps_the_background(tmp_path):
    dataset = load("caltech101", caltech101(tmp_path).root, output_dir=tmp_path)
    assert dataset.class_names == ["BACKGROUND_Google", "accordion", "airplanes", "yin_yang"]
    # 30 for train where a class has more than 30; the 3-image class keeps 1 test image
    assert per_class_counts(dataset, ("train", "val")) == [2, 30, 30, 30]
    assert per_class_counts(dataset, ("test",)) == [1, 1, 3, 5]  # the rest of 3, 31, 33, 35


def test_caltech101_can_leave_the_background_out(tmp_path):
    dataset = load("caltech101", caltech101(tmp_path).root, "dataset.include_background=false",
                   output_dir=tmp_path)
    assert dataset.class_names == ["accordion", "airplanes", "yin_yang"]
    assert per_class_counts(dataset, ("test",)) == [1, 3, 5]


def test_caltech101_train_per_class_above_a_class_size_keeps_a_test_image(tmp_path):
    dataset = load("caltech101", caltech101(tmp_path).root, "dataset.train_per_class=34", output_dir=tmp_path)
    assert per_class_counts(dataset, ("train", "val")) == [2, 30, 32, 34]
    assert per_class_counts(dataset, ("test",)) == [1, 1, 1, 1]


def test_too_few_images_for_the_per_class_split_is_a_clear_error(tmp_path):
    root = caltech101(tmp_path).root
    with pytest.raises(ValueError, match=r"'BACKGROUND_Google' has 3 images.*dataset.min_test_per_class"):
        load("caltech101", root, "dataset.min_test_per_class=3", output_dir=tmp_path)


def split_files_override(paths: dict[str, Path]) -> str:
    return "dataset.split_files={" + ",".join(f"{s}:'{p}'" for s, p in paths.items()) + "}"


def assert_follows_the_lists(dataset: ImageDataset, listed: dict[str, list[tuple[int, object]]]) -> None:
    for split, expected in listed.items():
        assert served(dataset, split) == expected, split  # same images, same labels, same order
        np.testing.assert_array_equal(dataset.targets(split), [label for _, label in expected])


def test_caltech101_split_files_reproduce_a_published_split_exactly(tmp_path):
    fab = caltech101(tmp_path / "caltech101")
    files = caltech101_split_files(fab, tmp_path / "lists")
    dataset = load("caltech101", fab.root, split_files_override(files), output_dir=tmp_path)
    assert_follows_the_lists(dataset, fab.listed)
    assert dataset.num_classes == 4 and sorted(dataset.class_names) == sorted(
        ["BACKGROUND_Google", "accordion", "airplanes", "yin_yang"])
    folder_of = {image_id_of(p): p.parent.name for p in (fab.root / "caltech101").rglob("*.jpg")}
    for uid, label in fab.listed["train"]:  # the class names follow the files' own numbering
        assert dataset.class_names[label] == folder_of[uid]
    again = load("caltech101", fab.root, split_files_override(files), output_dir=tmp_path)
    assert again.identity() == dataset.identity()
    seeded = load("caltech101", fab.root, output_dir=tmp_path)
    assert seeded.identity() != dataset.identity()
    json.dumps(dataset.describe())


def image_id_of(path: Path) -> int:
    with Image.open(path) as image:
        return image_id(image)


def test_split_files_without_val_draw_val_from_train(tmp_path):
    fab = caltech101(tmp_path / "caltech101")
    files = caltech101_split_files(fab, tmp_path / "lists")
    del files["val"]  # 2 training images per class: half of them make a stratified val
    dataset = load("caltech101", fab.root, split_files_override(files), "dataset.val_fraction=0.5",
                   output_dir=tmp_path)
    train = {uid for uid, _ in fab.listed["train"]}
    got = split_ids(dataset)
    assert got["train"] | got["val"] == train and got["train"].isdisjoint(got["val"])
    assert served(dataset, "test") == fab.listed["test"]


def test_split_file_naming_a_missing_image_names_the_file_and_line(tmp_path):
    fab = caltech101(tmp_path / "caltech101")
    files = caltech101_split_files(fab, tmp_path / "lists")
    lines = files["test"].read_text().splitlines()
    victim = lines[2].rsplit(maxsplit=1)[0]
    (fab.root / "caltech101" / "101_ObjectCategories" / victim).unlink()
    with pytest.raises(DatasetNotFoundError, match=rf"test\.txt:3: image '{victim}' not found"):
        load("caltech101", fab.root, split_files_override(files), output_dir=tmp_path)


def test_split_file_with_a_malformed_line_names_it(tmp_path):
    fab = caltech101(tmp_path / "caltech101")
    files = caltech101_split_files(fab, tmp_path / "lists")
    files["val"].write_text(files["val"].read_text() + "accordion/image_0001.jpg\n")
    with pytest.raises(DatasetNotFoundError, match=r"val\.txt:5: expected '<relative path> <label>'"):
        load("caltech101", fab.root, split_files_override(files), output_dir=tmp_path)


def test_split_files_must_exist(tmp_path):
    fab = caltech101(tmp_path / "caltech101")
    files = {"train": tmp_path / "nope_train.txt", "test": tmp_path / "nope_test.txt"}
    with pytest.raises(DatasetNotFoundError, match="nope_train.txt"):
        load("caltech101", fab.root, split_files_override(files), output_dir=tmp_path)


def test_imagefolder_split_files_reproduce_a_split_exactly(tmp_path):
    fab = imagefolder(tmp_path / "folder", per_class=4)
    listed: dict[str, list[tuple[int, int]]] = {"train": [], "val": [], "test": []}
    lines: dict[str, list[str]] = {s: [] for s in listed}
    for c, name in enumerate(["cat", "dog", "zebra"]):
        label = 2 - c  # the lists' own numbering
        for k, split in enumerate(["test", "train", "val", "train"]):
            lines[split].append(f"{name}/{k}.png {label}")
            listed[split].append((image_id_of(fab.root / name / f"{k}.png"), label))
    files = {}
    for split, split_lines in lines.items():
        files[split] = tmp_path / f"{split}.txt"
        files[split].write_text("".join(f"{line}\n" for line in split_lines))
    dataset = load("imagefolder", fab.root, split_files_override(files), output_dir=tmp_path)
    assert_follows_the_lists(dataset, listed)
    assert dataset.class_names == ["zebra", "dog", "cat"]


def test_sun397_follows_the_first_official_partition_exactly(tmp_path):
    fab = sun397(tmp_path)
    dataset = load("sun397", fab.root, output_dir=tmp_path)
    assert dataset.class_names == ["abbey", "bakery/shop", "zoo"]
    assert served(dataset, "test") == fab.listed["test"]  # Testing_01.txt, in its order
    train_val = sorted(served(dataset, "train") + served(dataset, "val"))
    assert train_val == sorted(fab.listed["train"])  # Training_01.txt, split into train and val
    assert per_class_counts(dataset, ("train", "val")) == [50, 50, 50]
    assert per_class_counts(dataset, ("val",)) == [10, 10, 10]  # a stratified 20%
    assert dataset.identity()["partition"] == 1


def test_sun397_partition_lists_beside_the_image_folder_give_the_same_splits(tmp_path):
    fab = sun397(tmp_path)
    inside = load("sun397", fab.root, output_dir=tmp_path)
    (fab.root / "SUN397" / "Partitions").rename(fab.root / "Partitions")  # Partitions.zip unzipped in the root
    beside = load("sun397", fab.root, output_dir=tmp_path)
    for split in ("train", "val", "test"):
        assert served(beside, split) == served(inside, split)


def test_sun397_without_its_partition_lists_says_where_to_get_them(tmp_path):
    fab = sun397(tmp_path)
    for kind in ("Training", "Testing"):
        (fab.root / "SUN397" / "Partitions" / f"{kind}_01.txt").unlink()
    with pytest.raises(DatasetNotFoundError) as caught:
        load("sun397", fab.root, output_dir=tmp_path)
    message = str(caught.value)
    assert "SUN397/Partitions/Training_01.txt" in message and "SUN397/Partitions/Testing_01.txt" in message
    assert "Partitions.zip" in message and "/Partitions/ or " in message


def test_sun397_partition_line_naming_a_missing_image_names_the_file_and_line(tmp_path):
    fab = sun397(tmp_path)
    listing = fab.root / "SUN397" / "Partitions" / "Training_01.txt"
    rel = listing.read_text().splitlines()[6]
    (fab.root / "SUN397" / rel.lstrip("/")).unlink()
    with pytest.raises(DatasetNotFoundError, match=r"Training_01\.txt:7: image .* not found"):
        load("sun397", fab.root, output_dir=tmp_path)


def test_a_validation_fraction_too_small_for_the_classes_names_the_dataset_and_setting(tmp_path):
    root = FABRICATORS["cifar10"](tmp_path).root  # 50 training images of 10 classes
    accept = pytest.MonkeyPatch.context()
    with accept as patch:
        accept_fabricated_checksums(patch)
        with pytest.raises(ValueError, match=r"dataset 'cifar10': dataset.val_fraction=0.1 holds out 5 of 50 "
                                             r"examples, fewer than its 10 classes"):
            load("cifar10", root, "dataset.val_fraction=0.1", output_dir=tmp_path)
        load("cifar10", root, "dataset.val_fraction=0.2", output_dir=tmp_path)


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
    "sun397": "SUN397/Partitions/Training_01.txt",
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


def test_files_failing_torchvisions_checksum_are_reported_as_present_but_corrupted(tmp_path):
    # No checksum patch: torchvision compares the fabricated CIFAR files with the real md5 sums.
    root = FABRICATORS["cifar10"](tmp_path).root
    with pytest.raises(DatasetChecksumError) as caught:
        load("cifar10", root, output_dir=tmp_path)
    message = str(caught.value)
    assert "present but their checksum does not match" in message and "not found" not in message
    assert "cifar-10-batches-py/data_batch_1" in message and "dataset.download=true" in message


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name, victim", [("cifar10", "cifar-10-batches-py/data_batch_3"),
                                          ("cifar100", "cifar-100-python/meta"),
                                          ("flowers", "flowers-102/setid.mat")])
def test_one_corrupted_file_is_named_as_failing_its_checksum(name, victim, tmp_path, monkeypatch):
    from torchvision.datasets import cifar, flowers102

    fab = FABRICATORS[name](tmp_path / name)
    # Let the fabricated files be "the release": torchvision's check compares with their md5 sums.
    release = {str(p): md5_of(p) for p in fab.root.rglob("*") if p.is_file()}

    def check(fpath, md5=None):
        return os.path.isfile(fpath) and md5_of(Path(fpath)) == release.get(str(fpath))

    monkeypatch.setattr(cifar, "check_integrity", check)
    monkeypatch.setattr(flowers102, "check_integrity", check)
    load(name, fab.root, output_dir=tmp_path)  # intact: loads
    path = fab.root / victim
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a truncated download
    with pytest.raises(DatasetChecksumError) as caught:
        load(name, fab.root, output_dir=tmp_path)
    message = str(caught.value)
    assert "present but their checksum does not match" in message and "not found" not in message
    assert victim in message and caught.value.corrupted == [(victim, caught.value.corrupted[0][1])]
    assert "delete those files and rerun with dataset.download=true" in message


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


def test_imagefolder_test_fraction_too_small_names_its_setting(tmp_path):
    train = imagefolder(tmp_path / "train", per_class=4)  # 12 images of 3 classes
    with pytest.raises(ValueError, match=r"dataset 'imagefolder': dataset.test_fraction=0.1 holds out 2 of 12"):
        load("imagefolder", train.root, "dataset.test_fraction=0.1", output_dir=tmp_path)


@pytest.mark.parametrize("split", ["train", "test"])
def test_an_empty_list_is_named_when_the_dataset_is_made(split, tmp_path):
    # (an empty test list used to fail only after training)
    fab = caltech101(tmp_path / "caltech101")
    files = caltech101_split_files(fab, tmp_path / "lists")
    files[split].write_text("")
    with pytest.raises(DatasetNotFoundError, match=rf"{split}\.txt lists no images"):
        load("caltech101", fab.root, split_files_override(files), output_dir=tmp_path)
