"""Feature files where mutation testing (make mutants) found the suite blind: dataset.json's
description worked by hand (the held-out rows from scikit-learn), defaults against the shipped
config, the primary metric, what is never unpickled, and the messages that name the file, the
key and the fix."""

import datetime
import inspect
import re

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from sklearn.model_selection import train_test_split

from helpers import CONF_DIR
from sealab.data.feature_files import FeatureFiles, load_feature_file

N, D = 20, 3


def files(tmp_path, labels=None, n=N, suffix=".npy"):
    """train and test features (n x D) and labels (0..3 cycling) in ``suffix`` files."""
    y = np.arange(n) % 4 if labels is None else np.asarray(labels)
    x = np.random.default_rng(0).normal(size=(len(y), D)).astype(np.float32)
    paths = {}
    for split in ("train", "test"):
        if suffix == ".npz":
            paths[f"{split}_features"] = tmp_path / f"{split}.npz"
            np.savez(paths[f"{split}_features"], features=x, labels=y)
        else:
            paths[f"{split}_features"], paths[f"{split}_labels"] = tmp_path / f"{split}_x.npy", tmp_path / f"{split}_y.npy"
            np.save(paths[f"{split}_features"], x)
            np.save(paths[f"{split}_labels"], y)
    return {k: str(v) for k, v in paths.items()}


def message(text):
    return f"^{re.escape(text)}$"


def refused(error, text, *args, **kwargs):
    """load_feature_file(*args, **kwargs) raises ``error`` with exactly ``text``."""
    with pytest.raises(error, match=message(text)):
        load_feature_file(*args, **kwargs)


def test_the_description_holds_the_files_sizes_and_the_rows_held_out(tmp_path):
    paths = files(tmp_path)
    data = FeatureFiles(**paths, val_fraction=0.25, seed=3, name="mine", backbone="clip")
    _, held = train_test_split(np.arange(N), test_size=0.25, random_state=3, stratify=np.arange(N) % 4)
    assert data.describe() == {
        "name": "mine", "backbone": "clip", "num_classes": 4, "primary_metric": "top1", "multilabel": False,
        "files": {"train": [paths["train_features"], paths["train_labels"]], "val": [None, None],
                  "test": [paths["test_features"], paths["test_labels"]]},
        "split_sizes": {"train": 15, "val": 5, "test": 20},
        "val_split": "a seeded stratified val_fraction of the train file",
        "val_from_train": {"fraction": 0.25, "seed": 3, "indices": sorted(held.tolist())},
    }


def test_constructor_defaults_are_the_shipped_config(tmp_path):
    shipped = OmegaConf.load(CONF_DIR / "dataset" / "features.yaml")
    for key, parameter in inspect.signature(FeatureFiles).parameters.items():
        if parameter.default is not inspect.Parameter.empty:
            assert shipped[key] == parameter.default, key
    described = FeatureFiles(**files(tmp_path)).describe()  # every setting left to its default
    assert (described["name"], described["backbone"], described["multilabel"], described["primary_metric"]) == \
        (shipped.name, shipped.backbone, shipped.multilabel, "top1")
    assert (described["val_from_train"]["fraction"], described["val_from_train"]["seed"]) == \
        (shipped.val_fraction, shipped.seed)


def test_the_primary_metric_asked_for_is_the_datasets(tmp_path):
    assert FeatureFiles(**files(tmp_path), primary_metric="mean_per_class").primary_metric == "mean_per_class"


def test_multilabel_files_count_their_columns_and_score_map11(tmp_path):
    y = np.eye(5, dtype=np.float32)[np.arange(N) % 5]
    data = FeatureFiles(**files(tmp_path, labels=y), multilabel=True)
    assert (data.num_classes, data.primary_metric) == (5, "map11")


def test_an_arbitrary_pickled_object_is_never_unpickled(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"features": datetime.date(2026, 1, 1)}, path)
    with pytest.raises(ValueError, match=r"cannot read it as a \.pt file \(UnpicklingError: "):
        load_feature_file(path, None, False, split="train")


def test_a_directory_names_the_feature_files_it_holds_first_five(tmp_path):
    folder = tmp_path / "feats"
    folder.mkdir()
    for name in ["f.npy", "a.pt", "e.npz", "c.pth", "b.npy", "d.npy", "notes.txt"]:
        (folder / name).write_bytes(b"")
    refused(IsADirectoryError, f"dataset.train_features={folder} is a directory, not a file (it holds a.pt, b.npy, "
            "c.pth, d.npy, e.npz). Point dataset.train_features at an existing .pt/.pth/.npy/.npz file.",
            folder, None, False, split="train")


def test_without_a_split_the_messages_name_the_file_kind(tmp_path):
    missing = tmp_path / "none.npy"
    refused(FileNotFoundError,
            f"features file {missing}: file not found. Point it at an existing .pt/.pth/.npy/.npz file.",
            missing, None, False)
    other = tmp_path / "x.csv"
    other.write_text("1,2\n")
    refused(ValueError, f"features file {other}: unsupported file type 'x.csv': use one of "
            "('.pt', '.pth', '.npy', '.npz')", other, None, False)


def test_labels_looked_for_in_an_npy_features_file_say_where_to_give_them(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((4, 2), dtype=np.float32))
    refused(TypeError, f"{path}: a .npy file holds one array (the features), so it has no labels: give the labels "
            "in their own file (dataset.val_labels), or save both with numpy.savez(path, features=..., labels=...)",
            path, None, False, split="val")


def test_a_pt_tensor_without_labels_says_to_save_a_dict(tmp_path):
    path = tmp_path / "x.pt"
    torch.save(torch.zeros(4, 2), path)
    refused(TypeError, f"{path} holds one Tensor, not a dict with a 'labels' entry, so it has no labels: give the "
            "labels in their own file, or save a dict {'features': ..., 'labels': ...}", path, None, False)


def test_missing_entries_of_a_dict_or_an_archive_are_listed(tmp_path):
    pt, npz = tmp_path / "x.pt", tmp_path / "x.npz"
    torch.save({"feats": torch.zeros(4, 2)}, pt)
    np.savez(npz, feats=np.zeros((4, 2)))
    with pytest.raises(KeyError, match=re.escape(f"{pt} holds a dict without a 'features' entry (keys: ['feats'])")):
        load_feature_file(pt, None, False)
    with pytest.raises(KeyError, match=re.escape(f"{npz} has no array 'features' (arrays: ['feats'])")):
        load_feature_file(npz, None, False)


@pytest.mark.parametrize("suffix, how", [(".pt", "torch.save (tensors only)"), (".pth", "torch.save (tensors only)"),
                                         (".npy", "numpy.save / numpy.savez")])
def test_a_file_cut_short_says_how_to_write_it_again(tmp_path, suffix, how):
    path = tmp_path / f"x{suffix}"
    (torch.save if suffix != ".npy" else lambda a, p: np.save(p, a))(torch.zeros(50, 4).numpy(), path)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(ValueError, match=rf"^{re.escape(f'{path}: cannot read it as a {suffix} file (')}\w+: .*\)\. "
                                         rf"{re.escape('A file cut short (an interrupted write or copy) gives this: ')}"
                                         rf"{re.escape(f'write it again, with {how}.')}$"):
        load_feature_file(path, None, False)


def test_object_labels_say_to_save_int64(tmp_path):
    x, y = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(x, np.zeros((2, 2), dtype=np.float32))
    np.save(y, np.array([1, None], dtype=object), allow_pickle=True)
    with pytest.raises(TypeError, match=re.escape("numpy.save(path, numpy.asarray(a, dtype=numpy.int64)).")):
        load_feature_file(x, y, False)


def test_text_labels_name_an_example_and_how_to_map_them(tmp_path):
    x, y = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(x, np.zeros((2, 2), dtype=np.float32))
    np.save(y, np.array(["cat", "dog"]))
    with pytest.raises(TypeError, match=message(
            f"{y}: labels must be numbers, but it holds text (e.g. 'cat'); it should hold n class indices 0..C-1 "
            "(a tensor, array or list of integers; n x C 0/1 for multi-label). Map each class name to an index "
            "0..C-1 (and give the names in dataset.class_names).")):
        load_feature_file(x, y, False)
    np.save(x, np.array([["a", "b"]]))
    with pytest.raises(TypeError, match=message(
            f"{x}: features must be numbers, but it holds text (e.g. 'a'); it should hold an n x d array of "
            "numbers (one row per example).")):
        load_feature_file(x, y, False)


def test_a_pt_holding_something_else_shows_its_start(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"features": "z" * 50}, path)
    refused(TypeError, f"{path} holds a str ({'z' * 40!r}), not features: it should hold an n x d array of numbers "
            "(one row per example), or a dict with a 'features' entry holding that.", path, None, False)


def test_rows_and_labels_of_unequal_length_name_both_files(tmp_path):
    x, y = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(x, np.zeros((3, 2), dtype=np.float32))
    np.save(y, np.array([0, 1]))
    with pytest.raises(ValueError, match=message(
            f"{x}: 3 feature rows but 2 labels ({y}); each row needs exactly one label.")):
        load_feature_file(x, y, False)


def test_one_dimensional_features_are_refused_with_their_shape(tmp_path):
    x, y = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(x, np.zeros(3, dtype=np.float32))
    np.save(y, np.array([0, 1, 1]))
    with pytest.raises(ValueError, match=message(f"{x}: features must be a 2-d (n x d) array, got shape (3,)")):
        load_feature_file(x, y, False)


def test_too_many_classes_for_the_examples_say_what_to_set(tmp_path):
    with pytest.raises(ValueError, match=message(
            "dataset 'features': dataset.num_classes=41 is more than the 40 examples of all splits together: "
            "most classes would have no example. Set it to the number of classes of the labels.")):
        FeatureFiles(**files(tmp_path), num_classes=41)
    labels = np.arange(N) % 4
    labels[5] = 99
    with pytest.raises(ValueError, match=re.escape(
            "holds the label 99, which makes 100 classes, more than the 40 examples of all splits together "
            "(the labels take 5 distinct values). Labels must be class indices 0..C-1: renumber them, or set "
            "dataset.num_classes if that many classes is right.")):
        FeatureFiles(**files(tmp_path, labels=labels))


BAD = {"text": 5, "int": "abc", "number": "abc", "bool": "yes", "str": "bogus", "list": "abc"}


@pytest.mark.parametrize("key", sorted(FeatureFiles.RULES))
def test_each_setting_is_checked_against_its_rule_and_named(tmp_path, key):
    settings = {**files(tmp_path), key: BAD[FeatureFiles.RULES[key].kind]}
    if key == "val_labels":  # (val labels without val features are refused on their own)
        settings["val_features"] = settings["train_features"]
    with pytest.raises(ValueError, match=rf"^dataset .*dataset\.{key}="):
        FeatureFiles(**settings)


def test_a_bad_label_of_a_val_file_names_the_val_labels_file(tmp_path):
    paths = files(tmp_path)
    val_x, val_y = tmp_path / "val_x.npy", tmp_path / "val_y.npy"
    np.save(val_x, np.zeros((4, D), dtype=np.float32))
    np.save(val_y, np.array([0, 1, 2, 7]))
    with pytest.raises(ValueError, match=re.escape(f"val labels ({val_y}): labels span [0, 7] but num_classes is 4")):
        FeatureFiles(**paths, val_features=str(val_x), val_labels=str(val_y), num_classes=4)


def test_non_numeric_contents_are_described_by_kind(tmp_path):
    x, y = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(x, np.zeros((2, 2), dtype=np.float32))
    np.save(y, np.array([1 + 2j, 3j]))
    with pytest.raises(TypeError, match=re.escape(f"{y}: labels must be numbers, but it holds complex128 values "
                                                  "(e.g. (1+2j)); it should hold")):
        load_feature_file(x, y, False)
    np.save(y, np.array([], dtype=str))
    with pytest.raises(TypeError, match=re.escape(f"{y}: labels must be numbers, but it holds nothing; it should")):
        load_feature_file(x, y, False)


def test_object_arrays_in_a_version_2_npy_file_are_named_too(tmp_path):
    x, y = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(x, np.zeros((2, 2), dtype=np.float32))
    with open(y, "wb") as f:
        np.lib.format.write_array(f, np.array([1, None], dtype=object), version=(2, 0), allow_pickle=True)
    with pytest.raises(TypeError, match=re.escape(f"{y}: labels is a numpy array of Python objects")):
        load_feature_file(x, y, False)


def test_a_pth_file_is_read_as_torch_saves_it(tmp_path):
    path = tmp_path / "x.pth"
    torch.save({"features": torch.ones(3, 2), "labels": torch.tensor([0, 1, 1])}, path)
    x, y = load_feature_file(path, None, False)
    assert torch.equal(x, torch.ones(3, 2)) and torch.equal(y, torch.tensor([0, 1, 1]))


def test_a_directory_without_feature_files_says_only_that(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match=message(
            f"features file {folder} is a directory, not a file. Point it at an existing .pt/.pth/.npy/.npz file.")):
        load_feature_file(folder, None, False)


def test_labels_read_from_the_features_file_are_named_by_it(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, features=np.zeros((2, 2), dtype=np.float32), labels=np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match=re.escape(f"labels ({path}): class labels must be whole numbers")):
        load_feature_file(path, None, False)


def test_multilabel_targets_come_back_as_floats(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, features=np.zeros((2, 2), dtype=np.float32), labels=np.array([[1, 0], [0, 1]]))
    assert load_feature_file(path, None, True)[1].dtype == torch.float32


def test_a_val_fraction_too_small_names_the_dataset(tmp_path):
    with pytest.raises(ValueError, match=r"^dataset 'mine': dataset\.val_fraction=0\.1 holds out 2 of 20 examples"):
        FeatureFiles(**files(tmp_path), val_fraction=0.1, name="mine")


def test_a_multilabel_num_classes_other_than_the_columns_is_refused(tmp_path):
    y = np.eye(5, dtype=np.float32)[np.arange(N) % 5]
    with pytest.raises(ValueError, match=r"multi-label targets must be n x 6 \(multi-hot\), got shape \(\d+, 5\)"):
        FeatureFiles(**files(tmp_path, labels=y), multilabel=True, num_classes=6)


def test_classes_are_named_by_their_index_unless_names_are_given(tmp_path):
    assert FeatureFiles(**files(tmp_path)).class_names == ["0", "1", "2", "3"]


def test_a_label_too_large_found_in_val_drawn_from_train_names_the_train_labels_file(tmp_path):
    labels = np.arange(N) % 4
    labels[18] = 99  # a class of one example: the hold-out is not stratified
    _, held = train_test_split(np.arange(N), test_size=0.2, random_state=0)
    assert 18 in held  # so the largest label is in val only
    paths = files(tmp_path, labels=labels)
    np.save(paths["test_labels"], np.arange(N) % 4)
    with pytest.raises(ValueError, match=re.escape(f"dataset 'features': {paths['train_labels']} holds the label 99")):
        FeatureFiles(**paths)


def test_a_file_cut_short_quotes_the_readers_own_error(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((50, 4), dtype=np.float32))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(Exception) as raised:  # what numpy itself says about the file
        np.load(path)
    first_line = str(raised.value).splitlines()[0]
    with pytest.raises(ValueError, match=re.escape(f"({type(raised.value).__name__}: {first_line})")):
        load_feature_file(path, None, False)
