"""dataset=features: precomputed features from .pt / .npy / .npz, with clear errors."""

import numpy as np
import pytest
import torch

from sealab.data.feature_files import FeatureFiles, load_feature_file


def write_split(tmp_path, name, n=30, d=6, c=3, fmt="pt", labels_as_list=False):
    x = torch.randn(n, d)
    y = torch.arange(n) % c
    if fmt == "pt":
        torch.save(x, tmp_path / f"{name}_x.pt")
        torch.save(y.tolist() if labels_as_list else y, tmp_path / f"{name}_y.pt")
        return str(tmp_path / f"{name}_x.pt"), str(tmp_path / f"{name}_y.pt"), x, y
    if fmt == "npy":
        np.save(tmp_path / f"{name}_x.npy", x.numpy())
        np.save(tmp_path / f"{name}_y.npy", y.numpy())
        return str(tmp_path / f"{name}_x.npy"), str(tmp_path / f"{name}_y.npy"), x, y
    np.savez(tmp_path / f"{name}.npz", features=x.numpy(), labels=y.numpy())
    return str(tmp_path / f"{name}.npz"), None, x, y


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
