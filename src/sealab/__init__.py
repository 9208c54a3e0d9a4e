"""sealab: classifiers on frozen features of pre-trained vision models."""

__version__ = "0.1.0"

# The scikit-learn estimators (sealab.estimators), loaded on first use: they bring torch and
# Lightning, and `import sealab` (every sealab-train start, --help included) must stay light.
# tests/test_estimators.py checks this list is sealab.estimators.__all__.
__all__ = [
    "LinearProbeClassifier", "SeAClassifier", "SeANoProjClassifier", "SeARandomClassifier",
    "SeASameClassClassifier", "NoiseClassifier", "MixupClassifier", "PGDClassifier", "ISDAClassifier",
    "LogisticRegressionClassifier", "KNNClassifier", "NCMClassifier", "GDAClassifier",
]


def __getattr__(name: str):
    if name in __all__:
        from sealab import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module 'sealab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
