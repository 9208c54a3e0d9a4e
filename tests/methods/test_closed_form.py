"""Closed-form methods (logreg, knn, ncm, gda) against scikit-learn, numpy and brute force."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import compose_train
from hydra.utils import instantiate
from sklearn.covariance import ledoit_wolf_shrinkage as sk_ledoit_wolf_shrinkage
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression as SkLogisticRegression

from sealab.experiment import run
from sealab.methods.base import FitContext, Method
from sealab.methods.gda import GaussianDiscriminant, ledoit_wolf_shrinkage
from sealab.methods.knn import KNearestNeighbours, KNNScorer
from sealab.methods.logreg import LogisticRegression
from sealab.methods.ncm import NearestClassMean
from sealab.task import MultiClass, make_task

METHODS = ("logreg", "knn", "ncm", "gda")
C, D = 4, 16


def ctx(multilabel: bool = False, primary_metric: str | None = None) -> FitContext:
    return FitContext(task=make_task(C, multilabel, primary_metric), seed=0, device=torch.device("cpu"),
                      make_trainer=None)


def blobs(n: int, seed: int, spread: float = 0.6, dim: int = D):
    """L2-normalised Gaussian clusters around fixed class centres (centres shared by seeds)."""
    centres = torch.randn(C, dim, generator=torch.Generator().manual_seed(123))
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % C
    x = centres[y] + spread * torch.randn(n, dim, generator=g) * centres.norm(dim=1).mean() / dim**0.5
    return F.normalize(x, dim=1), y


def multilabel_blobs(n: int, seed: int):
    """Each example holds 1-2 labels; its feature is the normalised sum of their centres + noise."""
    centres = torch.randn(C, D, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(seed)
    y = F.one_hot(torch.randint(0, C, (n,), generator=g), C).float()
    second = torch.rand(n, generator=g) < 0.5
    y[second, torch.randint(0, C, (int(second.sum()),), generator=g)] = 1.0
    x = y @ centres + 0.5 * torch.randn(n, D, generator=g)
    return F.normalize(x, dim=1), y


# A short weight-decay grid keeps logreg's selection fast in tests.
QUICK = {"logreg": ["method.grid_size=5"]}


def from_config(name: str, *overrides: str) -> Method:
    return instantiate(compose_train([f"method={name}", *QUICK.get(name, []), *overrides]).method)


@pytest.fixture(scope="module")
def data():
    return blobs(200, 0), blobs(100, 1), blobs(200, 2)


@pytest.mark.parametrize("name", METHODS)
def test_config_composes_and_instantiates(name):
    method = instantiate(compose_train([f"method={name}"]).method)
    assert isinstance(method, Method) and method.name == name


@pytest.mark.parametrize("name", METHODS)
def test_beats_chance_by_wide_margin(name, data):
    train, val, (x, y) = data
    scorer = from_config(name).fit(train, val, ctx()).scorer
    assert (scorer(x).argmax(1) == y).float().mean() > 0.85  # chance is 0.25


@pytest.mark.parametrize("name", ["logreg", "knn", "ncm"])
def test_multilabel_beats_chance(name):
    train, val, (x, y) = multilabel_blobs(300, 0), multilabel_blobs(100, 1), multilabel_blobs(300, 2)
    scores = from_config(name).fit(train, val, ctx(multilabel=True)).scorer(x)
    # The top-scored class is a true label far more often than the ~37% of a random class.
    assert y.gather(1, scores.argmax(1, keepdim=True)).mean() > 0.8


@pytest.mark.parametrize("name", METHODS)
def test_deterministic(name, data):
    train, val, (x, _) = data
    outputs = []
    for _ in range(2):
        torch.manual_seed(0)
        outputs.append(from_config(name).fit(train, val, ctx()).scorer(x))
    assert torch.equal(*outputs)


# ---------------------------------------------------------------- logreg


def sklearn_logreg(x: torch.Tensor, y: torch.Tensor, weight_decay: float) -> SkLogisticRegression:
    """scikit-learn's solution for our weight decay (C = 1 / weight_decay), tightly converged."""
    return SkLogisticRegression(C=1 / weight_decay, tol=1e-10, max_iter=10_000).fit(x.double().numpy(), y.numpy())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("weight_decay", [0.01, 1.0, 30.0])
def test_logreg_matches_sklearn(data, dtype, weight_decay):
    (xt, yt), _, (x, _) = data
    ours = LogisticRegression("logreg", weight_decay=weight_decay, dtype=dtype, max_iter=2000, tol=1e-8)
    probs = torch.softmax(ours.fit((xt, yt), None, ctx()).scorer(x).double(), 1).numpy()
    expected = sklearn_logreg(xt, yt, weight_decay).predict_proba(x.double().numpy())
    assert np.array_equal(probs.argmax(1), expected.argmax(1))
    assert np.abs(probs - expected).max() < 1e-3


def test_logreg_multilabel_is_one_vs_rest_sklearn_without_ignored_entries():
    (xt, yt), (x, _) = multilabel_blobs(200, 0), multilabel_blobs(100, 1)
    yt[torch.rand(yt.shape, generator=torch.Generator().manual_seed(0)) < 0.2] = -1  # VOC "difficult"
    ours = LogisticRegression("logreg", weight_decay=0.5, dtype="float64", max_iter=2000, tol=1e-9)
    probs = torch.sigmoid(ours.fit((xt, yt), None, ctx(multilabel=True)).scorer(x)).numpy()
    for c in range(C):
        keep = yt[:, c] >= 0
        sk = sklearn_logreg(xt[keep], yt[keep, c], 0.5)
        assert np.abs(probs[:, c] - sk.predict_proba(x.double().numpy())[:, 1]).max() < 1e-4


# spread 2: few noisy examples, the best weight decay is inside the grid;
# spread 0.8: validation accuracy plateaus at its maximum, so the tie rule (smallest) decides.
@pytest.mark.parametrize("spread", [2.0, 0.8])
def test_logreg_selects_best_val_weight_decay_and_refits_on_trainval(spread):
    train, val = blobs(40, 0, spread=spread), blobs(200, 1, spread=spread)
    grid = np.logspace(-3, 3, 7)
    method = LogisticRegression("logreg", grid_min=grid[0], grid_max=grid[-1], grid_size=len(grid),
                                dtype="float64", max_iter=2000, tol=1e-9)
    result = method.fit(train, val, ctx())
    scorer = result.scorer

    # The direct loop, with scikit-learn.
    val_acc = [sklearn_logreg(*train, wd).score(val[0].double().numpy(), val[1].numpy()) for wd in grid]
    assert len(set(val_acc)) > 2, "the check needs a validation curve that is not flat"
    best = max(val_acc)
    # Neither the first value nor (for the plateau) a unique maximum would make the check moot.
    assert val_acc[0] != best and (spread > 1 or val_acc.count(best) > 1)
    expected = min(wd for wd, acc in zip(grid, val_acc) if acc == best)
    assert result.selected["weight_decay"] == pytest.approx(expected)
    assert result.val_metrics["val/top1"] == pytest.approx(best)

    refit = sklearn_logreg(torch.cat([train[0], val[0]]), torch.cat([train[1], val[1]]), expected)
    probs = torch.softmax(scorer(val[0]).double(), 1).numpy()
    assert np.abs(probs - refit.predict_proba(val[0].double().numpy())).max() < 1e-4


def test_logreg_without_val_needs_fixed_weight_decay(data):
    with pytest.raises(ValueError, match="method.weight_decay"):
        LogisticRegression("logreg").fit(data[0], None, ctx())


def test_logreg_selects_on_the_datasets_primary_metric(data):
    method = LogisticRegression("logreg", grid_size=3)
    result = method.fit(data[0], data[1], ctx(primary_metric="mean_per_class"))
    assert result.selected["selection_metric"] == "val/mean_per_class"
    assert set(result.val_metrics) == {"val/top1", "val/mean_per_class"}


def test_logreg_rejects_a_selection_metric_of_the_other_task(data):
    with pytest.raises(ValueError, match="selection_metric='map11'"):
        LogisticRegression("logreg", selection_metric="map11").fit(data[0], data[1], ctx())


def test_selected_weight_decay_lands_in_metrics_json(tmp_path, monkeypatch):
    monkeypatch.setenv("SEALAB_ROOT", str(tmp_path))
    cfg = compose_train(["method=logreg", "method.grid_size=3", "~logger",
                         "backbone.feature_dim=64"], output_dir=tmp_path / "run")
    record = run(cfg)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["selected"] == record["selected"]
    assert np.isclose(written["selected"]["weight_decay"], np.logspace(-6, 5, 3)).any()
    # selected on the dataset's primary metric; val scores are those measured before the refit
    assert written["selected"]["selection_metric"] == "val/top1"
    assert {"val/top1", "val/mean_per_class", "test/top1"} <= written["metrics"].keys()


# ---------------------------------------------------------------- knn


def brute_force_knn(bank, labels, queries, k, temperature, num_classes):
    """Full similarity matrix, top-k, exp(sim / T) weights, weighted average of label vectors."""
    sims = F.normalize(queries.double(), dim=1) @ F.normalize(bank.double(), dim=1).T
    values, idx = sims.topk(k, dim=1)
    weights = torch.exp(values / temperature)
    onehot = labels.double() if labels.ndim == 2 else F.one_hot(labels, num_classes).double()
    votes = (weights[:, :, None] * onehot[idx]).sum(1)
    return votes / weights.sum(1, keepdim=True)


@pytest.mark.parametrize("multilabel", [False, True])
@pytest.mark.parametrize("query_chunk,bank_chunk", [(1000, 10_000), (7, 13), (64, 5)])
def test_knn_equals_brute_force_for_any_chunking(multilabel, query_chunk, bank_chunk):
    make = multilabel_blobs if multilabel else blobs
    (bank, labels), (queries, _) = make(150, 0), make(60, 1)
    method = KNearestNeighbours("knn", k=20, temperature=0.07, query_chunk=query_chunk,
                                bank_chunk=bank_chunk)
    scores = method.fit((bank, labels), None, ctx(multilabel)).scorer(queries)
    expected = brute_force_knn(bank, labels, queries, 20, 0.07, C)
    torch.testing.assert_close(scores.double(), expected, rtol=1e-5, atol=1e-6)


def test_knn_refuses_k_above_the_training_rows_naming_both():
    """k=20 on 8 rows would report k=8's numbers under k=20: refused, with the largest valid k."""
    (bank, labels), (queries, _) = blobs(8, 0), blobs(5, 1)
    with pytest.raises(ValueError, match=r"method.k=20: knn is fitted on 8 rows.*set method.k=8 or lower"):
        KNearestNeighbours("knn", k=20).fit((bank, labels), None, ctx())
    # k equal to the rows is kNN over the whole bank, as asked
    scores = KNearestNeighbours("knn", k=8).fit((bank, labels), None, ctx()).scorer(queries)
    torch.testing.assert_close(scores.double(), brute_force_knn(bank, labels, queries, 8, 0.07, C))


def test_the_knn_scorer_uses_every_example_when_k_exceeds_its_bank():
    (bank, labels), (queries, _) = blobs(8, 0), blobs(5, 1)
    scores = KNNScorer(bank, labels, MultiClass(C), k=20)(queries)
    torch.testing.assert_close(scores.double(), brute_force_knn(bank, labels, queries, 8, 0.07, C))


def test_knn_is_invariant_to_feature_scale():
    # Cosine similarity: scaling queries or the bank must not change the scores.
    (bank, labels), (queries, _) = blobs(50, 0), blobs(10, 1)
    a = KNNScorer(bank, labels, MultiClass(C), k=5)(queries)
    b = KNNScorer(3 * bank, labels, MultiClass(C), k=5)(0.2 * queries)
    torch.testing.assert_close(a, b)


# ---------------------------------------------------------------- ncm


@pytest.mark.parametrize("multilabel", [False, True])
def test_ncm_equals_numpy(multilabel):
    make = multilabel_blobs if multilabel else blobs
    (x, y), (q, _) = make(120, 0), make(30, 1)
    scores = NearestClassMean("ncm").fit((3 * x, y), None, ctx(multilabel)).scorer(2 * q).numpy()
    xn = x.double().numpy() / np.linalg.norm(x.double().numpy(), axis=1, keepdims=True)
    qn = q.double().numpy() / np.linalg.norm(q.double().numpy(), axis=1, keepdims=True)
    members = [(y[:, c] > 0).numpy() if multilabel else (y == c).numpy() for c in range(C)]
    means = np.stack([xn[m].mean(0) for m in members])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    np.testing.assert_allclose(scores, qn @ means.T, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [NearestClassMean, GaussianDiscriminant])
def test_class_mean_methods_name_a_missing_class(cls):
    x, y = blobs(40, 0)
    with pytest.raises(ValueError, match=r"classes \[3\]"):
        cls("m").fit((x[y != 3], y[y != 3]), None, ctx())


# ---------------------------------------------------------------- gda


@pytest.mark.parametrize("shrinkage", [0.05, 0.3, 1.0])
def test_gda_equals_sklearn_lda(shrinkage):
    (x, y), (q, _) = blobs(200, 0, spread=1.5), blobs(100, 1, spread=1.5)
    scores = GaussianDiscriminant("gda", shrinkage=shrinkage).fit((x, y), None, ctx()).scorer(q).numpy()
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage).fit(x.double().numpy(), y.numpy())
    expected = lda.decision_function(q.double().numpy())
    assert np.array_equal(scores.argmax(1), lda.predict(q.double().numpy()))
    np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


def test_gda_auto_uses_ledoit_wolf_of_class_centred_features():
    x, y = blobs(200, 0, spread=1.5)
    method = GaussianDiscriminant("gda", shrinkage="auto")
    result = method.fit((x, y), None, ctx())
    means = torch.stack([x[y == c].double().mean(0) for c in range(C)])
    centred = (x.double() - means[y]).numpy()
    expected = sk_ledoit_wolf_shrinkage(centred, assume_centered=True)
    assert result.selected["shrinkage"] == pytest.approx(expected)


@pytest.mark.parametrize("n,d", [(50, 8), (30, 60), (500, 3)])
def test_ledoit_wolf_shrinkage_equals_sklearn(n, d):
    xc = np.random.default_rng(n).standard_normal((n, d)) * np.linspace(0.5, 3, d)
    ours = ledoit_wolf_shrinkage(torch.from_numpy(xc))
    assert ours == pytest.approx(sk_ledoit_wolf_shrinkage(xc, assume_centered=True), rel=1e-9)


def test_gda_singular_covariance_asks_for_shrinkage():
    x, y = blobs(20, 0, dim=64)  # fewer examples than dimensions: the covariance is singular
    with pytest.raises(ValueError, match="shrinkage"):
        GaussianDiscriminant("gda", shrinkage=0.0).fit((x, y), None, ctx())


def test_gda_rejects_multilabel():
    with pytest.raises(ValueError, match="multi-label"):
        GaussianDiscriminant("gda").fit(multilabel_blobs(20, 0), None, ctx(multilabel=True))


# ---------------------------------------------------------------- shared input checks


@pytest.mark.parametrize("name", METHODS)
def test_bad_targets_are_named(name, data):
    x, y = data[0]
    with pytest.raises(ValueError, match="num_classes"):
        from_config(name).fit((x, y + 1), None, ctx())
    with pytest.raises(ValueError, match="multi-hot"):
        from_config(name).fit((x, y), None, ctx(multilabel=True))
