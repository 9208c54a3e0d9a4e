"""VOC2007: devkit labels with difficult-only images ignored, 11-point mAP checked by hand and
against scikit-learn, and a short sealab-train run that reports it."""

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from fabricate import VOC_CLASSES, voc2007
from helpers import compose_train, metrics_files, read_metrics, run_train
from hydra.utils import instantiate
from sklearn.metrics import precision_recall_curve

from sealab.data.base import SPLITS
from sealab.metrics import voc11_average_precision
from sealab.task import MultiLabel


def load_voc(root, tmp_path):
    return instantiate(compose_train(["dataset=voc2007", f"dataset.root={root}"], output_dir=tmp_path).dataset)


def targets_from_xml(root, split):
    """The devkit's rule applied to the XML annotations (the loader reads the ImageSets lists
    instead): 1 if a non-difficult instance, -1 (ignore) if only difficult ones, else 0."""
    base = root / "VOCdevkit" / "VOC2007"
    rows = []
    for name in (base / "ImageSets" / "Main" / f"{split}.txt").read_text().split():
        objects = ET.parse(base / "Annotations" / f"{name}.xml").findall("object")
        row = []
        for cls in VOC_CLASSES:
            difficult = [o.findtext("difficult") == "1" for o in objects if o.findtext("name") == cls]
            row.append(0.0 if not difficult else (-1.0 if all(difficult) else 1.0))
        rows.append(row)
    return np.array(rows, dtype=np.float32)


def test_targets_follow_the_devkit_rule_on_the_xml_annotations(tmp_path):
    fab = voc2007(tmp_path / "voc")
    dataset = load_voc(fab.root, tmp_path)
    for split in SPLITS:
        expected = targets_from_xml(fab.root, split)
        np.testing.assert_array_equal(dataset.targets(split), expected)
        # the fabricator's first image per split: a difficult cat (ignored) and a plain dog
        _, target = dataset.split(split)[0]
        assert target.dtype == torch.float32
        assert target[VOC_CLASSES.index("cat")] == -1 and target[VOC_CLASSES.index("dog")] == 1
    assert (dataset.targets("train") == -1).any() and (dataset.targets("train") == 0).any()


def test_map11_on_a_hand_worked_example():
    # Class 0, five images by score: 0.9 (+), 0.85 (difficult: ignored), 0.8 (-), 0.7 (+), 0.5 (-).
    # Without the ignored image the ranking is + - + - with 2 positives:
    #   rank 1: precision 1/1 recall 1/2 | rank 2: 1/2, 1/2 | rank 3: 2/3, 2/2 | rank 4: 2/4, 2/2.
    # Recall thresholds 0, .1, ..., .5 (6 of them): best precision at recall >= t is 1;
    # thresholds .6, ..., 1 (5): best is 2/3.  AP = (6 * 1 + 5 * 2/3) / 11 = 28/33.
    # (Counting the difficult image as a negative would give (6 + 5 * 2/4) / 11 = 17/22.)
    # Class 1: scores 0.1 .. 0.6 with one positive ranked third (after 0.6, 0.4):
    #   rank 3 has precision 1/3 at recall 1, ranks 1-2 precision 0: every threshold gives 1/3.
    # Class 2 has no positive: AP undefined (NaN), left out of the mean.
    # mAP = (28/33 + 1/3) / 2 = (28 + 11) / 66 = 13/22.
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.85, 0.2, 0.4], [0.8, 0.3, 0.3], [0.7, 0.4, 0.2], [0.5, 0.6, 0.1]])
    targets = torch.tensor([[1, 0, 0], [-1, 0, -1], [0, 1, 0], [1, 0, 0], [0, 0, -1]], dtype=torch.float32)
    ap = voc11_average_precision(scores, targets)
    assert ap[0].item() == pytest.approx(28 / 33) and ap[1].item() == pytest.approx(1 / 3)
    assert math.isnan(ap[2].item())
    assert MultiLabel(3).metrics(scores, targets)["map11"] == pytest.approx(13 / 22)


def sklearn_voc11(scores: np.ndarray, targets: np.ndarray) -> float:
    """11-point AP from scikit-learn's precision-recall curve, ignored (-1) entries dropped."""
    keep = targets >= 0
    precision, recall, _ = precision_recall_curve(targets[keep], scores[keep])
    # sklearn closes the curve with (recall 0, precision 1), a point no ranking reaches
    precision, recall = precision[:-1], recall[:-1]
    return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                          for t in [k / 10 for k in range(11)]]))


def test_map11_matches_an_independent_computation():
    gen = np.random.default_rng(0)
    n = 60
    # Positive counts that are not multiples of 2 or 5, so no recall but 0 and 1 sits exactly on a
    # tenth, where conventions for the 0:0.1:1 thresholds round differently.
    positives = [3, 7, 9, 11, 13, 17]
    targets = np.zeros((n, len(positives)), dtype=np.float32)
    for c, k in enumerate(positives):
        rows = gen.permutation(n)
        targets[rows[:k], c] = 1
        targets[rows[k:k + 6], c] = -1  # difficult-only images, ignored
    scores = gen.standard_normal((n, len(positives))) + targets  # informative, no ties
    ours = voc11_average_precision(torch.from_numpy(scores), torch.from_numpy(targets)).numpy()
    reference = [sklearn_voc11(scores[:, c], targets[:, c]) for c in range(len(positives))]
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-12)
    assert len(set(np.round(reference, 6))) > 1  # the classes are not trivially alike


def test_sealab_train_on_voc_reports_map11_as_the_primary_metric(tmp_path):
    fab = voc2007(tmp_path / "voc")
    run_train(tmp_path, "dataset=voc2007", f"dataset.root={fab.root}", "backbone=resnet10t_random_init",
              "method=sea", "method.epochs=2")
    (path,) = metrics_files(tmp_path)
    record = read_metrics(path)
    assert record["primary_metric"] == "test/map11"
    assert 0.0 <= record["metrics"]["test/map11"] <= 1.0 and 0.0 <= record["metrics"]["val/map11"] <= 1.0
    assert "test/top1" not in record["metrics"]
