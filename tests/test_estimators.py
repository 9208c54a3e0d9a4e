"""sealab's scikit-learn estimators: scikit-learn's own checks, the method configs they mirror,
the same classifier as sealab-train on the same features, and their use in scikit-learn tools."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import REPO, compose_train
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf, open_dict
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import sealab
from sealab import estimators
from sealab.augment.sea import SeA
from sealab.estimators import (
    GDAClassifier,
    ISDAClassifier,
    KNNClassifier,
    LinearProbeClassifier,
    LogisticRegressionClassifier,
    MixupClassifier,
    NCMClassifier,
    NoiseClassifier,
    PGDClassifier,
    SeAClassifier,
    SeANoProjClassifier,
    SeARandomClassifier,
    SeASameClassClassifier,
)
from sealab.experiment import run
from sealab.train import CONFIG_MODULE

# Few epochs of small batches (scikit-learn's checks fit a few hundred times on tiny data), with
# the published lr for batch 256 scaled to batch 32: at lr 1.6 the last SGD iterate on the checks'
# 2-d blobs scores 82-93% on train, around the checks' 83%; at 0.2, 90-93%.
QUICK = {"epochs": 5, "batch_size": 32, "lr": 0.2, "device": "cpu"}
CHECKED = [
    SeAClassifier(eta=0.3, **QUICK), LinearProbeClassifier(**QUICK),
    LogisticRegressionClassifier(weight_decay=1.0, max_iter=30, device="cpu"),  # strong: converges in few steps
    KNNClassifier(k=3, device="cpu"), NCMClassifier(device="cpu"), GDAClassifier(device="cpu"),
]
# The same checks, slower in total (mark slow): the other augmenters and logreg's selection.
CHECKED_SLOW = [
    *(cls(eta=0.3, **QUICK) for cls in (SeANoProjClassifier, SeARandomClassifier, SeASameClassClassifier)),
    *(cls(**QUICK) for cls in (NoiseClassifier, MixupClassifier, PGDClassifier, ISDAClassifier)),
    LogisticRegressionClassifier(grid_size=3, max_iter=30, device="cpu"),
]


def expected_failed_checks(estimator) -> dict[str, str]:
    """Checks that do not apply, with the reason (scikit-learn marks them xfail, strictly)."""
    return {
        GDAClassifier: {"check_fit2d_1feature": (
            "one feature L2-normalised is constant (+-1), so GDA's within-class covariance is 0 and it "
            "refuses the singular solve, naming method.shrinkage; the check accepts only a message about "
            "the feature count")},
        LogisticRegressionClassifier: {"check_non_transformer_estimators_n_iter": (
            "sealab's logreg (the method sealab-train runs) does not report its L-BFGS iteration counts "
            "(one solve per grid value), so there is no n_iter_ to expose")},
    }.get(type(estimator), {})


@parametrize_with_checks(CHECKED, expected_failed_checks=expected_failed_checks, xfail_strict=True)
def test_scikit_learn_checks(estimator, check):
    check(estimator)


@pytest.mark.slow
@parametrize_with_checks(CHECKED_SLOW, expected_failed_checks=expected_failed_checks, xfail_strict=True)
def test_scikit_learn_checks_of_the_other_methods(estimator, check):
    check(estimator)


# Which method config each estimator mirrors.
MIRRORS = {
    "linear": LinearProbeClassifier, "sea": SeAClassifier, "sea_noproj": SeANoProjClassifier,
    "sea_random": SeARandomClassifier, "sea_sameclass": SeASameClassClassifier, "noise": NoiseClassifier,
    "mixup": MixupClassifier, "pgd": PGDClassifier, "isda": ISDAClassifier,
    "logreg": LogisticRegressionClassifier, "knn": KNNClassifier, "ncm": NCMClassifier, "gda": GDAClassifier,
}
# Set by the estimator (the probe's name and sub-nodes), or no setting of a single fit (an
# estimator trains no control head, and runs its steps as the probe's default compile does).
BUILT = {"_target_", "_partial_", "_recursive_", "name", "scheduler", "grid", "control", "compile"}
# Run-level settings (with sealab-train's name) and the estimators' own parameters.
RUN_LEVEL = {"norm": "norm", "device": "device", "random_state": "seed"}
OWN = {"validation_fraction", "temperature", "nesterov"}


def flat_settings(node) -> dict:
    """A method config's scalar settings by their last key (``augmenter.eta`` -> ``eta``)."""
    found = {}
    for key, value in node.items():
        if key in BUILT or (key == "augmenter" and value is None):  # the estimator class is the augmenter
            continue
        if OmegaConf.is_dict(value):
            found.update(flat_settings(value))
        else:
            found[key] = value
    return found


def test_every_feature_method_has_an_estimator_and_every_estimator_is_exported():
    feature_methods = {p.stem for p in (REPO / "conf" / "method").glob("*.yaml")} - {
        "finetune", "linear_aug",  # train on images through the backbone
        "sea_faithful"}  # SeAClassifier(mode="faithful")
    assert feature_methods == set(MIRRORS)
    assert {cls.__name__ for cls in MIRRORS.values()} == set(estimators.__all__) == set(sealab.__all__)
    for name in estimators.__all__:
        assert getattr(sealab, name) is getattr(estimators, name)


def method_config(method: str):
    """conf/method/<method>.yaml with its defaults list, as no experiment or tuned file changes it."""
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(f"method/{method}").method


@pytest.mark.parametrize("method", sorted(MIRRORS))
def test_the_parameters_are_the_method_configs_settings_with_its_defaults(method):
    config, run_defaults = method_config(method), OmegaConf.load(REPO / "conf" / "train.yaml")
    estimator = MIRRORS[method]()
    assert estimator.method == config.name
    params = estimator.get_params()
    settings = flat_settings(config)
    assert {key: params[key] for key in settings} == settings
    assert {key: params[key] for key in RUN_LEVEL} == {key: run_defaults[run] for key, run in RUN_LEVEL.items()}
    assert set(params) - set(settings) - set(RUN_LEVEL) <= OWN


def test_an_estimator_trains_no_control_head_where_the_method_config_does():
    assert method_config("sea").control is True
    assert SeAClassifier().build().controls == [] and NoiseClassifier().build().controls == []


def test_sea_faithful_is_seas_mode():
    mode = method_config("sea_faithful").augmenter.mode
    assert SeAClassifier(mode=mode).build().specs[0].augmenter.mode == mode == "faithful"


def test_the_parameters_are_checked_by_the_classes_declared_rules():
    x, y = digits(60)
    with pytest.raises(ValueError) as raised:
        SeAClassifier(eta=-1).fit(x, y)
    with pytest.raises(ValueError, match=f"^{re.escape(str(raised.value))}$"):
        SeA(eta=-1)  # the class's own constructor, with the rule it declares
    for estimator, message in [(LinearProbeClassifier(lr=0), "LinearProbe: method.optimizer.lr=0: must be"),
                               (KNNClassifier(k=0), "KNearestNeighbours: method.k=0: must be"),
                               (SeAClassifier(norm="l3"), "SeAClassifier: norm='l3': must be one of"),
                               (SeAClassifier(random_state=-1), "SeAClassifier: random_state=-1: must be")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            estimator.fit(x, y)


def digits(n: int, start: int = 0, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    order = np.random.RandomState(0).permutation(len(y))  # the file is in writer order
    x, y = x[order], y[order]
    keep = y < classes
    return x[keep][start:start + n].astype(np.float32), y[keep][start:start + n]


def write_split(path, x, y):
    np.save(path.with_suffix(".x.npy"), x)
    np.save(path.with_suffix(".y.npy"), y)
    return path.with_suffix(".x.npy"), path.with_suffix(".y.npy")


def run_on_files(tmp_path, overrides, splits) -> tuple[dict, dict]:
    """``sealab-train dataset=features`` on the given splits, in process: its record and saved classifier."""
    files = {name: write_split(tmp_path / name, *data) for name, data in splits.items()}
    paths = [f"dataset.{split}_{kind}={path}" for split, pair in files.items()
             for kind, path in zip(("features", "labels"), pair)]
    cfg = compose_train(["dataset=features", *paths, *overrides, "device=cpu", "num_threads=1", "~logger",
                         "trainer.enable_progress_bar=false"], output_dir=tmp_path / "run")
    with open_dict(cfg):
        cfg.paths.cache_dir = str(tmp_path / "cache")
    record = run(cfg)
    return record, torch.load(tmp_path / "run" / "classifier.pt")


def assert_same_classifier(estimator, record, saved, x_test, y_test):
    fitted = {key: value.float() for key, value in estimator.classifier_.state_dict().items()}
    assert fitted.keys() == saved.keys()
    for key in saved:
        torch.testing.assert_close(fitted[key], saved[key], rtol=0, atol=0)  # bit for bit
    assert estimator.score(x_test, y_test) == record["metrics"]["test/top1"]
    assert balanced_accuracy_score(y_test, estimator.predict(x_test)) == \
        pytest.approx(record["metrics"]["test/mean_per_class"], abs=1e-6)


def test_sea_estimator_trains_the_classifier_sealab_train_trains(tmp_path):
    train, val, test = digits(300), digits(100, 300), digits(200, 400)
    settings = {"eta": 0.3, "epochs": 10, "batch_size": 64, "lr": 0.8}
    record, saved = run_on_files(tmp_path, [
        "method=sea", "method.augmenter.eta=0.3", "method.epochs=10", "method.batch_size=64",
        "method.optimizer.lr=0.8", "norm=center_l2", "seed=3"], {"train": train, "val": val, "test": test})
    estimator = SeAClassifier(**settings, norm="center_l2", random_state=3, device="cpu").fit(*train)
    assert_same_classifier(estimator, record, saved, *test)
    assert record["metrics"]["test/top1"] > 0.85
    # the seed matters: another one trains another head
    other = SeAClassifier(**settings, norm="center_l2", random_state=4, device="cpu").fit(*train)
    assert not torch.equal(other.classifier_[1].weight, estimator.classifier_[1].weight)


def test_logreg_estimator_selects_and_refits_as_sealab_train_does(tmp_path):
    train, test = digits(300), digits(200, 300)
    record, saved = run_on_files(tmp_path, ["method=logreg", "method.grid_size=4", "method.max_iter=50",
                                            "seed=2", "dataset.seed=2"], {"train": train, "test": test})
    estimator = LogisticRegressionClassifier(grid_size=4, max_iter=50, random_state=2, device="cpu").fit(*train)
    assert estimator.selected_ == record["selected"]
    assert_same_classifier(estimator, record, saved, *test)


def test_string_labels_probabilities_and_decision_function():
    x, y = digits(200, classes=3)
    names = np.array(["zero", "one", "two"])[y]
    probe = SeAClassifier(eta=0.3, epochs=10, batch_size=32, lamda=0.2, device="cpu").fit(x[:150], names[:150])
    assert list(probe.classes_) == ["one", "two", "zero"]
    # The head's probability model, computed here from its weights: softmax(W x / lamda) of unit rows.
    weight = probe.classifier_[1].weight.detach().numpy()
    scores = F.normalize(torch.tensor(x[150:], dtype=torch.float64), dim=1).numpy() @ weight.T / 0.2
    expected = np.exp(scores - scores.max(1, keepdims=True))
    np.testing.assert_allclose(probe.predict_proba(x[150:]), expected / expected.sum(1, keepdims=True), rtol=1e-6)
    assert (probe.predict(x[150:]) == probe.classes_[scores.argmax(1)]).all()
    assert probe.score(x[150:], names[150:]) > 0.9
    # Two classes: one score per row, positive for the second class.
    binary = NCMClassifier().fit(x[y < 2], names[y < 2])
    decision = binary.decision_function(x[y < 2])
    assert decision.shape == ((y < 2).sum(),)
    assert (binary.predict(x[y < 2]) == np.where(decision > 0, binary.classes_[1], binary.classes_[0])).all()


def test_the_closed_form_probabilities_are_the_models_posteriors():
    x, y = digits(400, classes=5)
    # Pixels in [0, 1] (exact in float32, what the estimators compute in), in float64 for the
    # references; norm="none" keeps them as scikit-learn's models see them.
    x = x.astype(np.float64) / 16
    # GDA is scikit-learn's LinearDiscriminantAnalysis(solver="lsqr") at the same shrinkage.
    ours = GDAClassifier(shrinkage=0.1, norm="none", device="cpu").fit(x[:300], y[:300])
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=0.1).fit(x[:300], y[:300])
    np.testing.assert_allclose(ours.predict_proba(x[300:]), lda.predict_proba(x[300:]), atol=1e-5)
    # logreg's weight decay is scikit-learn's 1 / C.
    ours = LogisticRegressionClassifier(weight_decay=0.5, norm="none", dtype="float64", tol=1e-9, max_iter=500,
                                        device="cpu").fit(x[:300], y[:300])
    reference = LogisticRegression(C=1 / 0.5, tol=1e-10, max_iter=5000).fit(x[:300], y[:300])
    np.testing.assert_allclose(ours.predict_proba(x[300:]), reference.predict_proba(x[300:]), atol=1e-4)
    # knn: the weighted vote of the k nearest (cosine) training rows, computed here directly.
    knn = KNNClassifier(k=5, temperature=0.1, norm="none", device="cpu").fit(x[:300], y[:300])
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = unit[300:] @ unit[:300].T
    nearest = np.argsort(-sims, axis=1)[:, :5]
    weights = np.exp(np.take_along_axis(sims, nearest, 1) / 0.1)
    votes = np.zeros((100, 5))
    for row in range(100):
        np.add.at(votes[row], y[:300][nearest[row]], weights[row] / weights[row].sum())
    np.testing.assert_allclose(knn.predict_proba(x[300:]), votes, atol=1e-5)


def test_a_fit_leaves_the_callers_random_state_and_environment_as_they_were():
    x, y = digits(100, classes=3)
    env = {key: os.environ.get(key) for key in estimators.SEED_ENV}
    torch.manual_seed(123)
    np.random.seed(123)
    SeARandomClassifier(eta=0.3, epochs=2, device="cpu").fit(x, y)
    after = torch.rand(3), np.random.rand(3)
    torch.manual_seed(123)
    np.random.seed(123)
    assert torch.equal(after[0], torch.rand(3)) and np.array_equal(after[1], np.random.rand(3))
    assert {key: os.environ.get(key) for key in estimators.SEED_ENV} == env


def test_pickled_and_cloned_estimators():
    x, y = digits(150, classes=3)
    fitted = SeAClassifier(eta=0.3, epochs=3, device="cpu").fit(x, y)
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.predict_proba(x), fitted.predict_proba(x))
    copy = clone(fitted).set_params(eta=0.1)
    assert not hasattr(copy, "classifier_") and copy.get_params() == {**fitted.get_params(), "eta": 0.1}
    assert copy.build().specs[0].augmenter.eta == 0.1


def test_in_a_pipeline_a_grid_search_over_eta_and_cross_validation():
    x, y = digits(240, classes=4)
    folds = StratifiedKFold(3, shuffle=True, random_state=0)
    quick = {"epochs": 5, "batch_size": 32, "device": "cpu"}
    pipeline = make_pipeline(StandardScaler(), SeAClassifier(**quick))
    search = GridSearchCV(pipeline, {"seaclassifier__eta": [0.1, 0.8]}, cv=folds).fit(x, y)
    # Each candidate's mean score is cross_val_score's for that eta: the estimator set by the search.
    for eta, score in zip(search.cv_results_["param_seaclassifier__eta"], search.cv_results_["mean_test_score"]):
        alone = make_pipeline(StandardScaler(), SeAClassifier(eta=eta, **quick))
        assert cross_val_score(alone, x, y, cv=folds).mean() == pytest.approx(score, abs=1e-12)
    assert search.best_params_["seaclassifier__eta"] in (0.1, 0.8) and search.best_score_ > 0.8
    assert cross_val_score(LinearProbeClassifier(**quick), x, y, cv=folds).min() > 0.8


def test_importing_sealab_stays_light_and_the_estimators_load_on_first_use():
    code = ("import sys, sealab; heavy = [m for m in ('torch', 'lightning', 'sklearn') if m in sys.modules]\n"
            "from sealab import SeAClassifier\n"
            "print(heavy, 'torch' in sys.modules, SeAClassifier.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["[]", "True", "sealab.estimators"]
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        sealab.Nope  # noqa: B018


def readme_examples() -> list[str]:
    """The Python blocks of README.md's scikit-learn section."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## scikit-learn estimators"):]
    section = section[:section.find("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


def test_the_readme_examples_run():
    examples = readme_examples()
    assert len(examples) == 2
    short, loop = examples
    assert len(short.strip().splitlines()) <= 10
    namespace: dict = {}
    exec(compile(short, "README.md (scikit-learn example)", "exec"), namespace)
    assert namespace["search"].best_params_["eta"] in (0.1, 0.3, 0.8)
    assert namespace["search"].score(namespace["X_test"], namespace["y_test"]) > 0.9
    exec(compile(loop, "README.md (training loop example)", "exec"), namespace)
    assert namespace["accuracy"] > 0.9
