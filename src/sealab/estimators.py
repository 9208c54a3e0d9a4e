"""scikit-learn classifiers for sealab's methods on a feature matrix you already have.

Each estimator builds the objects a ``method=`` config builds (``LinearProbe`` with its head,
optimiser and augmenter; ``LogisticRegression``, ``KNearestNeighbours``, ...), whose
constructors check the parameters against their declared ``RULES``, and fits them through
``sealab.experiment.fit_normalized``, seeded as a run seeds its fit: ``SeAClassifier(eta=0.3)``
and ``sealab-train method=sea method.augmenter.eta=0.3 dataset=features`` on the same features
train the same classifier. Parameters are the method config's keys, flattened
(``method.augmenter.eta`` -> ``eta``, ``method.optimizer.lr`` -> ``lr``), with their defaults,
plus the run's ``norm``, ``device`` and ``seed`` (here ``random_state``, as scikit-learn names it).

Multi-class targets only (any labels: strings included); multi-label datasets go through
``sealab-train``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.seed import isolate_rng
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from sealab.augment.isda import ISDA
from sealab.augment.mixup import Mixup
from sealab.augment.noise import GaussianNoise
from sealab.augment.pgd import PGD
from sealab.augment.sea import RandomSpan, SameClassSeA, SeA
from sealab.augment.step import GradientStep
from sealab.console import quiet_fits
from sealab.data.base import FRACTION
from sealab.data.splits import stratified_holdout
from sealab.device import resolve_device, trainer_placement
from sealab.experiment import class_scores, fit_normalized
from sealab.heads.linear import LinearHead
from sealab.methods.base import OPTIMIZER_RULES, FitContext, Method
from sealab.methods.gda import GaussianDiscriminant
from sealab.methods.knn import KNearestNeighbours
from sealab.methods.logreg import LogisticRegression
from sealab.methods.ncm import NearestClassMean
from sealab.methods.probe import LinearProbe
from sealab.rules import Rule, positive, validate
from sealab.settings import rule
from sealab.task import make_task

__all__ = [
    "LinearProbeClassifier", "SeAClassifier", "SeANoProjClassifier", "SeARandomClassifier",
    "SeASameClassClassifier", "NoiseClassifier", "MixupClassifier", "PGDClassifier", "ISDAClassifier",
    "LogisticRegressionClassifier", "KNNClassifier", "NCMClassifier", "GDAClassifier",
]

# What a run sets that is not a method's: checked by the run-level rules (sealab.settings).
RUN_RULES = {"norm": rule("norm"), "device": rule("device")}
# Lightning's environment keys ``seed_everything`` sets; restored after a fit.
SEED_ENV = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")


# Method settings no estimator takes: its name is the estimator's; an estimator fits the one
# classifier it predicts with, so it trains no control head (the probe's default: off); its
# steps run as the probe's default ``compile`` runs them.
NOT_PARAMETERS = ("name", "control", "compile")


def settings(rules: Mapping[str, Rule], node: str = "") -> list[str]:
    """The scalar settings a class declares rules for (those of its sub-node ``node``: ``lr`` of
    ``optimizer.lr``): the estimator parameters they become. ``NOT_PARAMETERS`` and a method's
    sub-nodes (head, augmenter, grid) are no parameters: the estimator builds them."""
    prefix = f"{node}." if node else ""
    return [key.removeprefix(prefix) for key, r in rules.items()
            if key.startswith(prefix) and "." not in key.removeprefix(prefix)
            and key not in NOT_PARAMETERS and r.kind not in ("component", "mapping")]


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seeded as a run seeds its fit (``L.seed_everything``); the caller's random state and
    environment are as they were afterwards."""
    env = {key: os.environ.get(key) for key in SEED_ENV}
    with isolate_rng():
        L.seed_everything(seed, workers=True, verbose=False)
        try:
            yield
        finally:
            for key, value in env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def quiet_trainer(device: torch.device, **kw: Any) -> L.Trainer:
    """A Lightning trainer on ``device`` that writes and prints nothing (the method passes its
    epochs)."""
    return L.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False,
                     enable_model_summary=False, num_sanity_val_steps=0, **trainer_placement(device), **kw)


def softmax(scores: np.ndarray) -> np.ndarray:
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class FeatureClassifier(ClassifierMixin, BaseEstimator):
    """What every estimator shares: input checks, labels, seeding, the fit through
    ``fit_normalized`` and the scores of the fitted classifier (normaliser + scorer).
    A subclass names the config it mirrors (``method``) and builds its method (``build``)."""

    method: str
    RULES = RUN_RULES  # the estimator's own parameters (the method's are its classes')

    def build(self) -> Method:
        raise NotImplementedError

    def values(self, rules: Mapping[str, Rule], node: str = "") -> dict[str, Any]:
        return {key: getattr(self, key) for key in settings(rules, node)}

    def splits(self, x: torch.Tensor, y: torch.Tensor, seed: int):
        """``(train, val)`` the method is fitted on: all of it, without validation."""
        return (x, y), None

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        return softmax(scores)

    def seed(self) -> int:
        """``random_state`` as a run's seed: an int is the seed itself."""
        if isinstance(self.random_state, (int, np.integer)) and not isinstance(self.random_state, bool):
            validate(type(self).__name__, {"random_state": rule("seed")}, random_state=int(self.random_state))
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def fit(self, X, y) -> "FeatureClassifier":
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        validate(type(self).__name__, self.RULES, **{key: getattr(self, key) for key in self.RULES})
        method = self.build()  # the constructors check the method's settings
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__}: y holds one class ({self.classes_[0]!r}); a classifier "
                             "needs examples of at least two classes")
        device, seed = resolve_device(self.device), self.seed()
        ctx = FitContext(task=make_task(len(self.classes_)), seed=seed, device=device,
                         make_trainer=functools.partial(quiet_trainer, device))
        train, val = self.splits(torch.tensor(X), torch.from_numpy(codes).long(), seed)
        with seeded(seed), quiet_fits():
            normalizer, result, _ = fit_normalized(method, train, val, self.norm, ctx)
        # Scored in float64 (the float32 weights exactly): predictions on a subset of rows equal
        # those on all of them (float32 products differ in the last bits with the row count).
        self.classifier_ = torch.nn.Sequential(normalizer, result.scorer).cpu().eval().double()
        self.selected_ = result.selected  # what the method chose (logreg: weight decay; gda: shrinkage)
        return self

    def scores(self, X) -> np.ndarray:
        """The fitted classifier's class scores (n x C), as a run scores val and test."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)  # rounded as the training rows were
        return class_scores(self.classifier_, torch.tensor(X, dtype=torch.float64)).numpy()

    def decision_function(self, X) -> np.ndarray:
        """Class scores (n x C); with two classes, the second's minus the first's (n)."""
        scores = self.scores(X)
        return scores[:, 1] - scores[:, 0] if len(self.classes_) == 2 else scores

    def predict(self, X) -> np.ndarray:
        scores = self.scores(X)
        return self.classes_[scores.argmax(axis=1)]

    def predict_proba(self, X) -> np.ndarray:
        return self.probabilities(self.scores(X))

    def predict_log_proba(self, X) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))


def _init(estimator: BaseEstimator, values: dict[str, Any]) -> None:
    """Store the constructor's arguments as they are (scikit-learn's convention: checked in fit)."""
    for key, value in values.items():
        if key not in ("self", "__class__"):
            setattr(estimator, key, value)


class ProbeClassifier(FeatureClassifier):
    """The SGD probe (``method=linear``) with the augmenter ``augmenter`` (None: none): a
    bias-free linear head trained with SGD, as ``sealab.methods.probe.LinearProbe`` trains it.
    ``predict_proba`` is ``softmax(scores / lamda)``, the head's own training model."""

    method = "linear"
    augmenter: type | None = None

    def build(self) -> LinearProbe:
        head = functools.partial(LinearHead, **self.values(LinearHead.RULES))
        optimizer = functools.partial(torch.optim.SGD, **self.values(OPTIMIZER_RULES, "optimizer"))
        augmenter = None if self.augmenter is None else self.augmenter(**self.values(self.augmenter.RULES))
        return LinearProbe(self.method, head, optimizer, augmenter, **self.values(LinearProbe.RULES))

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        return softmax(scores / self.lamda)


class LinearProbeClassifier(ProbeClassifier):
    """``method=linear``: the SGD loop of SeA without augmentation."""

    def __init__(self, *, lamda=0.1, delta=0.0, lr=1.6, momentum=0.9, weight_decay=1e-6, nesterov=False,
                 epochs=100, batch_size=256, drop_last=False, norm="l2", random_state=0, device="auto"):
        _init(self, locals())


class SeAClassifier(ProbeClassifier):
    """``method=sea``: SeA (Qian, Xu, Hu, ECCV 2024). ``mode="faithful"`` is ``method=sea_faithful``.
    The published step ``eta=0.8`` was tuned for 2048-d ResNet-50 features and can collapse
    training on others: choose ``eta`` on validation (``GridSearchCV``), or try ``norm="center_l2"``."""

    method, augmenter = "sea", SeA

    def __init__(self, eta=0.8, alpha=0.01, mode="clean", *, lamda=0.1, delta=0.0, lr=1.6, momentum=0.9,
                 weight_decay=1e-6, nesterov=False, epochs=100, batch_size=256, drop_last=False, norm="l2",
                 random_state=0, device="auto"):
        _init(self, locals())


class SeANoProjClassifier(ProbeClassifier):
    """``method=sea_noproj``: SeA's step along the normalised gradient itself (no projection)."""

    method, augmenter = "sea_noproj", GradientStep

    def __init__(self, eta=0.8, *, lamda=0.1, delta=0.0, lr=1.6, momentum=0.9, weight_decay=1e-6,
                 nesterov=False, epochs=100, batch_size=256, drop_last=False, norm="l2", random_state=0,
                 device="auto"):
        _init(self, locals())


class SeARandomClassifier(ProbeClassifier):
    """``method=sea_random``: SeA's step along a random direction in the span of the batch."""

    method, augmenter = "sea_random", RandomSpan

    def __init__(self, eta=0.8, concentration=1.0, *, lamda=0.1, delta=0.0, lr=1.6, momentum=0.9,
                 weight_decay=1e-6, nesterov=False, epochs=100, batch_size=256, drop_last=False, norm="l2",
                 random_state=0, device="auto"):
        _init(self, locals())


class SeASameClassClassifier(ProbeClassifier):
    """``method=sea_sameclass``: SeA projected onto the span of same-class examples only."""

    method, augmenter = "sea_sameclass", SameClassSeA

    def __init__(self, eta=0.8, alpha=0.01, mode="clean", *, lamda=0.1, delta=0.0, lr=1.6, momentum=0.9,
                 weight_decay=1e-6, nesterov=False, epochs=100, batch_size=256, drop_last=False, norm="l2",
                 random_state=0, device="auto"):
        _init(self, locals())


class NoiseClassifier(ProbeClassifier):
    """``method=noise``: isotropic Gaussian noise on the features, back onto the sphere."""

    method, augmenter = "noise", GaussianNoise

    def __init__(self, sigma=0.02, *, lamda=0.1, delta=0.0, lr=1.6, momentum=0.9, weight_decay=1e-6,
                 nesterov=False, epochs=100, batch_size=256, drop_last=False, norm="l2", random_state=0,
                 device="auto"):
        _init(self, locals())


class MixupClassifier(ProbeClassifier):
    """``method=mixup``: feature mixup, ``Beta(alpha, alpha)`` weights and mixed targets."""

    method, augmenter = "mixup", Mixup

    def __init__(self, alpha=1.0, *, lamda=0.1, delta=0.0, lr=1.6, momentum=0.9, weight_decay=1e-6,
                 nesterov=False, epochs=100, batch_size=256, drop_last=False, norm="l2", random_state=0,
                 device="auto"):
        _init(self, locals())


class PGDClassifier(ProbeClassifier):
    """``method=pgd``: k-step projected gradient ascent in feature space."""

    method, augmenter = "pgd", PGD

    def __init__(self, steps=3, step_size=0.02, radius=0.05, *, lamda=0.1, delta=0.0, lr=1.6, momentum=0.9,
                 weight_decay=1e-6, nesterov=False, epochs=100, batch_size=256, drop_last=False, norm="l2",
                 random_state=0, device="auto"):
        _init(self, locals())


class ISDAClassifier(ProbeClassifier):
    """``method=isda``: ISDA's closed-form loss over class-covariance augmentations."""

    method, augmenter = "isda", ISDA

    def __init__(self, lambda0=0.5, *, lamda=0.1, delta=0.0, lr=1.6, momentum=0.9, weight_decay=1e-6,
                 nesterov=False, epochs=100, batch_size=256, drop_last=False, norm="l2", random_state=0,
                 device="auto"):
        _init(self, locals())


class ClosedFormClassifier(FeatureClassifier):
    """A method fitted on the whole matrix at once (``method_class``: its sealab class)."""

    method_class: type[Method]

    def build(self) -> Method:
        return self.method_class(self.method, **self.values(self.method_class.RULES))


class LogisticRegressionClassifier(ClosedFormClassifier):
    """``method=logreg``: multinomial logistic regression by L-BFGS. ``weight_decay`` is
    scikit-learn's ``1 / C``; None selects it on a stratified ``validation_fraction`` of the
    training data held out with ``random_state`` (as ``dataset=features`` holds out its
    ``val_fraction``), then refits on all of it (``refit``)."""

    method, method_class = "logreg", LogisticRegression
    RULES = {**RUN_RULES, "validation_fraction": FRACTION}

    def __init__(self, weight_decay=None, *, grid_min=1e-6, grid_max=1e5, grid_size=45, selection_metric=None,
                 refit=True, max_iter=100, tol=1e-6, history_size=20, dtype="float32", validation_fraction=0.2,
                 norm="l2", random_state=0, device="auto"):
        _init(self, locals())

    def splits(self, x, y, seed):
        if self.weight_decay is not None:
            return (x, y), None
        keep, held = stratified_holdout(y.numpy(), self.validation_fraction, seed, dataset=type(self).__name__,
                                        setting="validation_fraction")
        return (x[keep], y[keep]), (x[held], y[held])


class KNNClassifier(ClosedFormClassifier):
    """``method=knn``: weighted k nearest neighbours on cosine similarity; ``predict_proba`` is
    the neighbours' weighted vote."""

    method, method_class = "knn", KNearestNeighbours

    def __init__(self, k=20, temperature=0.07, *, query_chunk=1024, bank_chunk=16384, norm="l2", random_state=0,
                 device="auto"):
        _init(self, locals())

    def probabilities(self, scores):
        return scores


class NCMClassifier(ClosedFormClassifier):
    """``method=ncm``: cosine similarity to each class's mean feature. It has no probability
    model of its own: ``predict_proba`` is ``softmax(cosine / temperature)``."""

    method, method_class = "ncm", NearestClassMean
    RULES = {**RUN_RULES, "temperature": positive()}

    def __init__(self, *, temperature=0.1, norm="l2", random_state=0, device="auto"):
        _init(self, locals())

    def probabilities(self, scores):
        return softmax(scores / self.temperature)


class GDAClassifier(ClosedFormClassifier):
    """``method=gda``: Gaussian discriminant analysis with a shared, shrunk covariance; its
    posterior is ``predict_proba``."""

    method, method_class = "gda", GaussianDiscriminant

    def __init__(self, shrinkage="auto", *, norm="l2", random_state=0, device="auto"):
        _init(self, locals())
