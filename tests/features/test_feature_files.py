"""dataset=features: precomputed features from .pt / .npy / .npz, with clear errors."""

import json

import numpy as np
import pytest
import torch

from sealab.data.feature_files import FeatureFiles, load_feature_file


def write_split(tmp_path, name, n=30, d=6, c=3, fmt="pt", labels_as_list=False, labels_inside=None, gen=None):
    """One split's files; returns ``(features path, labels path or None, x, y)``. ``labels_inside``
    (default: only for .npz) keeps the labels in the features file: an .npz array or a .pt dict
    entry (a .npy file holds one array, so its labels file is then not written)."""
    x = torch.randn(n, d, generator=gen)
    y = torch.arange(n) % c
    inside = fmt == "npz" if labels_inside is None else labels_inside
    features = tmp_path / f"{name}_x.{fmt}"
    labels = None if inside else tmp_path / f"{name}_y.{'npy' if fmt == 'npz' else fmt}"
    if fmt == "pt":
        torch.save({"features": x, "labels": y} if inside else x, features)
    elif fmt == "npy":
        np.save(features, x.numpy())
    else:
        np.savez(features, features=x.numpy(), **({"labels": y.numpy()} if inside else {}))
    if labels is not None and labels.suffix == ".pt":
        torch.save(y.tolist() if labels_as_list else y, labels)
    elif labels is not None:
        np.save(labels, y.numpy())
    return str(features), None if labels is None else str(labels), x, y


@pytest.mark.parametrize("fmt,as_list", [("pt", False), ("pt", True), ("npy", False), ("npz", False)])
def test_formats_load_exactly(tmp_path, fmt, as_list):
    f, l, x, y = write_split(tmp_path, "train", fmt=fmt, labels_as_list=as_list)
    x2, y2 = load_feature_file(f, l, multilabel=False)
    assert torch.equal(x2, x) and torch.equal(y2, y) and x2.dtype == torch.float32


def test_val_split_is_seeded_stratified_and_disjoint(tmp_path):
    tf, tl, x, _ = write_split(tmp_path, "train", n=100)
    sf, sl, _, _ = write_split(tmp_path, "test")
    ds = FeatureFiles(train_features=tf, train_labels=tl, test_features=sf, test_labels=sl, val_fraction=0.2)
    (xt, _), (xv, yv) = ds.features("train"), ds.features("val")
    assert len(xt) == 80 and len(xv) == 20 and ds.num_classes == 3
    rows = {tuple(r.tolist()) for r in xt}
    assert not any(tuple(r.tolist()) in rows for r in xv)
    assert torch.bincount(yv).min() >= 6  # stratified: every class in val
    again = FeatureFiles(train_features=tf, train_labels=tl, test_features=sf, test_labels=sl)
    assert torch.equal(again.features("val")[0], xv)
    assert ds.describe()["val_from_train"]["indices"] == again.describe()["val_from_train"]["indices"]


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_feature_file(tmp_path / "nope.pt", None, False)


def test_length_mismatch(tmp_path):
    torch.save(torch.randn(10, 4), tmp_path / "x.pt")
    torch.save(torch.arange(9), tmp_path / "y.pt")
    with pytest.raises(ValueError, match="10 feature rows but 9 labels"):
        load_feature_file(tmp_path / "x.pt", tmp_path / "y.pt", False)


def test_non_finite_features(tmp_path):
    x = torch.randn(10, 4)
    x[3, 1] = float("nan")
    torch.save(x, tmp_path / "x.pt")
    torch.save(torch.zeros(10, dtype=torch.long), tmp_path / "y.pt")
    with pytest.raises(ValueError, match="NaN or Inf.*row 3"):
        load_feature_file(tmp_path / "x.pt", tmp_path / "y.pt", False)


@pytest.mark.parametrize("bad", [-1, 5])
def test_labels_outside_range(tmp_path, bad):
    torch.save(torch.randn(4, 2), tmp_path / "x.pt")
    torch.save(torch.tensor([0, 1, 2, bad]), tmp_path / "y.pt")
    with pytest.raises(ValueError, match=r"y\.pt.*\[0, num_classes\)"):
        FeatureFiles(train_features=tmp_path / "x.pt", train_labels=tmp_path / "y.pt",
                     test_features=tmp_path / "x.pt", test_labels=tmp_path / "y.pt", num_classes=5)


def test_dimension_mismatch_between_splits(tmp_path):
    tf, tl, _, _ = write_split(tmp_path, "train", d=6)
    sf, sl, _, _ = write_split(tmp_path, "test", d=7)
    with pytest.raises(ValueError, match="dimension differs"):
        FeatureFiles(train_features=tf, train_labels=tl, test_features=sf, test_labels=sl)


# (fmt, labels in the features file): .npy holds one array, so its labels always come apart
VAL_FILE_ROUTES = [("pt", False), ("pt", True), ("npy", False), ("npz", False), ("npz", True)]


@pytest.mark.parametrize("fmt,inside", VAL_FILE_ROUTES)
def test_a_given_validation_file_is_the_validation_split_and_all_of_train_is_trained_on(tmp_path, fmt, inside):
    # A for-else used to drop the given val files for 20% of train (train 480 / val 120 here).
    gen = torch.Generator().manual_seed(0)
    tf, tl, xt, yt = write_split(tmp_path, "train", n=600, fmt=fmt, gen=gen)
    vf, vl, xv, yv = write_split(tmp_path, "val", n=197, fmt=fmt, labels_inside=inside, gen=gen)
    sf, sl, xs, ys = write_split(tmp_path, "test", n=50, fmt=fmt, gen=gen)
    assert (vl is None) == inside
    ds = FeatureFiles(train_features=tf, train_labels=tl, val_features=vf, val_labels=vl,
                      test_features=sf, test_labels=sl)
    for split, (x, y) in {"train": (xt, yt), "val": (xv, yv), "test": (xs, ys)}.items():
        got_x, got_y = ds.features(split)
        assert torch.equal(got_x, x) and torch.equal(got_y, y), split
    assert torch.equal(ds.features("trainval")[0], torch.cat([xt, xv]))
    info = ds.describe()
    assert info["split_sizes"] == {"train": 600, "val": 197, "test": 50}
    assert "val_from_train" not in info
    assert info["val_split"].startswith(f"the file of dataset.val_features ({vf}); all of train")
    assert info["files"]["val"] == [vf, vl]


def test_without_a_validation_file_dataset_json_says_val_comes_from_train(tmp_path):
    tf, tl, _, _ = write_split(tmp_path, "train", n=100)
    sf, sl, _, _ = write_split(tmp_path, "test")
    info = FeatureFiles(train_features=tf, train_labels=tl, test_features=sf, test_labels=sl).describe()
    assert info["val_split"] == "a seeded stratified val_fraction of the train file"
    assert info["split_sizes"] == {"train": 80, "val": 20, "test": 30} and len(info["val_from_train"]["indices"]) == 20


@pytest.mark.slow
def test_a_run_given_validation_files_records_them_in_dataset_json(tmp_path):
    from helpers import run_train

    files = {}
    for split, n in (("train", 60), ("val", 45), ("test", 30)):
        f, lab, _, _ = write_split(tmp_path, split, n=n, d=8)
        files.update({f"{split}_features": f, f"{split}_labels": lab})
    run_train(tmp_path, "dataset=features", *(f"dataset.{k}={v}" for k, v in files.items()), "method=ncm")
    [record] = list(tmp_path.rglob("dataset.json"))
    info = json.loads(record.read_text())
    assert info["split_sizes"] == {"train": 60, "val": 45, "test": 30} and "val_from_train" not in info
    assert info["files"]["val"] == [files["val_features"], files["val_labels"]]


def test_a_npy_validation_file_without_its_labels_file_names_the_key_to_set(tmp_path):
    tf, tl, _, _ = write_split(tmp_path, "train", fmt="npy")
    vf, vl, _, _ = write_split(tmp_path, "val", fmt="npy", labels_inside=True)
    with pytest.raises(TypeError, match=r"val_x\.npy: a \.npy file holds one array \(the features\), so it has "
                                        r"no labels: give the labels in their own file \(dataset\.val_labels\)"):
        FeatureFiles(train_features=tf, train_labels=tl, val_features=vf, val_labels=vl,
                     test_features=tf, test_labels=tl)


def test_a_pt_tensor_without_labels_is_not_read_as_its_own_labels(tmp_path):
    tf, tl, _, _ = write_split(tmp_path, "train")
    with pytest.raises(TypeError, match=r"train_x\.pt holds one Tensor, not a dict with a 'labels' entry, so it "
                                        r"has no labels: give the labels in their own file \(dataset\.test_labels\)"):
        FeatureFiles(train_features=tf, train_labels=tl, test_features=tf)


def test_validation_labels_without_validation_features_are_refused(tmp_path):
    tf, tl, _, _ = write_split(tmp_path, "train")
    _, vl, _, _ = write_split(tmp_path, "val")
    with pytest.raises(ValueError, match=r"dataset\.val_labels=.*val_y\.pt is set but dataset\.val_features is not"):
        FeatureFiles(train_features=tf, train_labels=tl, val_labels=vl, test_features=tf, test_labels=tl)


@pytest.mark.parametrize("split", ["train", "val", "test"])
@pytest.mark.parametrize("kind", ["features", "labels"])
def test_a_missing_file_names_the_key_at_fault(tmp_path, split, kind):
    files = {}
    for s in ("train", "val", "test"):
        f, lab, _, _ = write_split(tmp_path, s)
        files.update({f"{s}_features": f, f"{s}_labels": lab})
    missing = str(tmp_path / "nowhere.pt")
    files[f"{split}_{kind}"] = missing
    with pytest.raises(FileNotFoundError, match=rf"^dataset\.{split}_{kind}={missing}: file not found\. "
                                                rf"Point dataset\.{split}_{kind} at an existing"):
        FeatureFiles(**files)


def test_a_directory_given_as_a_features_file_is_called_a_directory(tmp_path):
    tf, tl, _, _ = write_split(tmp_path, "train")
    with pytest.raises(IsADirectoryError, match=rf"dataset\.val_features={tmp_path} is a directory, not a file "
                                                r"\(it holds train_x\.pt, train_y\.pt\)\. Point dataset\.val_features"):
        FeatureFiles(train_features=tf, train_labels=tl, val_features=str(tmp_path), val_labels=tl,
                     test_features=tf, test_labels=tl)


@pytest.mark.parametrize("name", ["x.npy", "x.npz"])
def test_an_object_array_is_described_as_what_it_holds_not_as_a_file_cut_short(tmp_path, name):
    ragged = np.empty(3, dtype=object)
    ragged[:] = [np.zeros(4), np.zeros(3), np.zeros(4)]  # rows of unequal length
    path = tmp_path / name
    np.save(path, ragged) if name.endswith(".npy") else np.savez(path, features=ragged, labels=np.arange(3))
    with pytest.raises(TypeError, match=r"x\.np[yz]: features is a numpy array of Python objects \(dtype object: "
                                        r".*which sealab does not unpickle\. It should hold an n x d array of "
                                        r"numbers .*numpy\.asarray\(a, dtype=numpy\.float32\)") as raised:
        load_feature_file(path, None if name.endswith(".npz") else path, multilabel=False)
    assert "cut short" not in str(raised.value)


def test_multilabel_with_one_dimensional_labels_names_the_key_and_file(tmp_path):
    tf, tl, _, _ = write_split(tmp_path, "train")
    with pytest.raises(ValueError, match=r"train_y\.pt: dataset\.multilabel=true needs labels of shape n x C .*"
                                         r"they have shape \(30,\)\. .*set dataset\.multilabel=false"):
        FeatureFiles(train_features=tf, train_labels=tl, test_features=tf, test_labels=tl, multilabel=True)


def test_class_names_of_the_wrong_length_are_refused(tmp_path):
    tf, tl, _, _ = write_split(tmp_path, "train", c=3)
    with pytest.raises(ValueError, match=r"dataset\.class_names lists 2 names but there are 3 classes"):
        FeatureFiles(train_features=tf, train_labels=tl, test_features=tf, test_labels=tl, class_names=["a", "b"])
    named = FeatureFiles(train_features=tf, train_labels=tl, test_features=tf, test_labels=tl,
                         class_names=["a", "b", "c"])
    assert named.class_names == ["a", "b", "c"]


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_huge_label_is_refused_naming_its_file_before_anything_is_made_per_class(tmp_path, split, monkeypatch):
    # A label of 1e9 made 1e9 class-name strings (22 GB) until the kernel killed the run.
    files = {}
    for s in ("train", "test"):
        f, lab, _, _ = write_split(tmp_path, s)
        files.update({f"{s}_features": f, f"{s}_labels": lab})
    y = torch.arange(30) % 3
    y[7] = 10**9
    torch.save(y, files[f"{split}_labels"])
    with pytest.raises(ValueError, match=rf"{split}_y\.pt holds the label 1000000000, which makes 1000000001 "
                                         r"classes, more than the 60 examples .*\(the labels take 4 distinct "
                                         r"values\)\. Labels must be class indices 0\.\.C-1"):
        FeatureFiles(**files)


def test_a_num_classes_beyond_the_examples_is_refused_naming_it(tmp_path):
    tf, tl, _, _ = write_split(tmp_path, "train")
    with pytest.raises(ValueError, match=r"dataset\.num_classes=1000000000 is more than the 60 examples"):
        FeatureFiles(train_features=tf, train_labels=tl, test_features=tf, test_labels=tl, num_classes=10**9)
    assert FeatureFiles(train_features=tf, train_labels=tl, test_features=tf, test_labels=tl,
                        num_classes=5).num_classes == 5  # classes without examples, if few, are allowed


def test_single_class_training_data_is_refused(tmp_path):
    # It scored 100%: one class predicted everywhere.
    tf, tl, _, _ = write_split(tmp_path, "train", c=1)
    sf, sl, _, _ = write_split(tmp_path, "test", c=1)
    with pytest.raises(ValueError, match=r"dataset 'features': the train split holds only class 0 \(.*train_y\.pt\): "
                                         r"a classifier needs examples of at least two classes"):
        FeatureFiles(train_features=tf, train_labels=tl, test_features=sf, test_labels=sl)


def test_a_bad_setting_is_refused_by_its_rule_before_any_file_is_read(tmp_path):
    missing = str(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"dataset 'features': dataset\.val_fraction='abc': must be a number in "
                                         r"\(0, 1\); dataset\.seed=-1: must be an integer"):
        FeatureFiles(train_features=missing, test_features=missing, val_fraction="abc", seed=-1)


@pytest.mark.parametrize("top, accepted", [(7, True), (8, False)])
def test_labels_may_imply_as_many_classes_as_there_are_examples_and_no_more(tmp_path, top, accepted):
    files = {}
    for split, labels in (("train", [0, 1] * 3), ("test", [0, top])):  # 8 examples in all
        files[f"{split}_features"] = tmp_path / f"{split}_x.pt"
        files[f"{split}_labels"] = tmp_path / f"{split}_y.pt"
        torch.save(torch.randn(len(labels), 4), files[f"{split}_features"])
        torch.save(torch.tensor(labels), files[f"{split}_labels"])
    if accepted:
        assert FeatureFiles(**files).num_classes == 8
        assert FeatureFiles(**files, num_classes=8).num_classes == 8
    else:
        with pytest.raises(ValueError, match=r"test_y\.pt holds the label 8, which makes 9 classes, more than the 8"):
            FeatureFiles(**files)
        with pytest.raises(ValueError, match=r"dataset\.num_classes=9 is more than the 8 examples"):
            FeatureFiles(**files, num_classes=9)
