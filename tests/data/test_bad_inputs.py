"""Feature and label files a user may get wrong: each is refused with the file's name and what it
should hold, or read correctly; nothing is silently converted into other numbers."""

import numpy as np
import pytest
import torch

from sealab.data.benchmark import BenchmarkDataset, Split
from sealab.data.errors import DatasetNotFoundError
from sealab.data.feature_files import FeatureFiles, load_feature_file


def save(path, obj):
    if path.suffix == ".npy":
        np.save(path, obj)
    else:
        torch.save(obj, path)
    return path


@pytest.fixture
def features(tmp_path):
    return save(tmp_path / "x.pt", torch.randn(10, 4))


def test_fractional_float_labels_are_refused_not_truncated(tmp_path, features):
    # 0, 0.5, ..., 4.5: .long() made 5 classes of them (and a run reported 100%)
    labels = save(tmp_path / "y.pt", torch.arange(10) * 0.5)
    with pytest.raises(ValueError, match=r"labels \(.*y\.pt\): class labels must be whole numbers 0\.\.C-1, "
                                         r"but 5 are not \(the first, at position 1, is 0\.5\)"):
        load_feature_file(features, labels, multilabel=False)


def test_whole_number_float_labels_are_read_as_those_classes(tmp_path, features):
    labels = save(tmp_path / "y.npy", np.array([0.0, 1.0, 2.0, 1.0, 0.0] * 2))
    _, y = load_feature_file(features, labels, multilabel=False)
    assert y.dtype == torch.int64 and y.tolist() == [0, 1, 2, 1, 0] * 2


@pytest.mark.parametrize("name", ["y.pt", "y.npy"])
def test_text_labels_name_the_file_and_the_fix(tmp_path, features, name):
    labels = save(tmp_path / name, ["cat", "dog"] * 5 if name.endswith(".pt") else np.array(["cat", "dog"] * 5))
    with pytest.raises(TypeError, match=rf"{name}: labels must be numbers, but it holds text \(e\.g\. 'cat'\).*"
                                        r"Map each class name to an index"):
        load_feature_file(features, labels, multilabel=False)


def test_a_pt_file_holding_a_string_names_the_file_and_what_it_should_hold(tmp_path):
    path = save(tmp_path / "x.pt", "features.npy")
    with pytest.raises(TypeError, match=r"x\.pt holds a str \('features\.npy'\), not features: it should "
                                        r"hold an n x d array of numbers"):
        load_feature_file(path, None, multilabel=False)


@pytest.mark.parametrize("name", ["x.pt", "x.npy", "x.npz"])
@pytest.mark.parametrize("keep", [0.1, 0.6])
def test_a_truncated_feature_file_is_named(tmp_path, name, keep):
    path = tmp_path / name
    x = np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32)
    if name.endswith(".npz"):
        np.savez(path, features=x, labels=np.arange(200) % 3)
    else:
        save(path, torch.from_numpy(x) if name.endswith(".pt") else x)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])  # an interrupted copy
    with pytest.raises(ValueError, match=rf"{name}: cannot read it as a \.{name[2:]} file \(.*\)\. A file cut "
                                         r"short .* write it again"):
        load_feature_file(path, None if name.endswith(".npz") else save(tmp_path / "y.pt", torch.arange(200) % 3),
                          multilabel=False)


@pytest.mark.parametrize("empty", ["train", "test", "val"])
def test_an_empty_split_is_named_with_its_file_when_the_dataset_is_made(tmp_path, empty):
    files = {}
    for split in ("train", "val", "test"):
        n = 0 if split == empty else 30
        files[f"{split}_features"] = str(save(tmp_path / f"{split}_x.pt", torch.randn(n, 4)))
        files[f"{split}_labels"] = str(save(tmp_path / f"{split}_y.pt", torch.arange(n) % 3))
    with pytest.raises(ValueError, match=rf"dataset 'features': the {empty} split is empty \(.*{empty}_x\.pt "
                                         rf"has no rows\): point dataset\.{empty}_features at a file"):
        FeatureFiles(**files)


def test_an_image_dataset_with_an_empty_split_is_refused_when_made(tmp_path):
    class OneEmptySplit(BenchmarkDataset):
        name, layout, how_to_get = "tiny", "<root>/", "fabricate it"

        def _build(self):
            self.class_names = ["a"]
            full = Split.whole(list(range(4)), [0] * 4)
            return {"train": full, "val": full, "test": full.take(np.arange(0))}

        def protocol(self):
            return {}

    with pytest.raises(DatasetNotFoundError, match="the test split.* hold no images"):
        OneEmptySplit(tmp_path)


@pytest.mark.parametrize("name, dtype", [("x.npy", np.float16), ("x.pt", torch.bfloat16), ("x.pt", torch.float16)])
def test_half_precision_features_are_read_as_their_exact_float32_values(tmp_path, name, dtype):
    x = torch.randn(10, 4)
    stored = x.numpy().astype(dtype) if name.endswith(".npy") else x.to(dtype)
    path = save(tmp_path / name, stored)
    loaded, _ = load_feature_file(path, save(tmp_path / "y.pt", torch.arange(10) % 2), multilabel=False)
    assert loaded.dtype == torch.float32 and torch.equal(loaded, torch.as_tensor(stored).float())
