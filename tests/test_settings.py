"""One declaration per setting: every key of every shipped config has a rule or a role; each
component's rules are for its constructor's arguments, and the constructor refuses a bad value
with the very line the pre-run check prints; the run-level choices are what their owners accept."""

from __future__ import annotations

import copy
import functools
import inspect

import numpy as np
import pytest
import torch
from helpers import CONF_DIR, compose_train
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from sealab import settings
from sealab.augment.mixup import Mixup
from sealab.augment.sea import SeA
from sealab.checks import _components, check_run_config, declared_rules, rule_violations, undeclared_keys
from sealab.features.cache import FeatureCache
from sealab.features.extract import AUTOCAST_DTYPES, extract_features
from sealab.features.ondisk import STREAMABLE_DTYPES
from sealab.heads.normalize import FeatureNormalizer
from sealab.rules import Rule, number
from sealab.task import MultiClass


def choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


COMPONENT_GROUPS = ("method", "dataset", "backbone")
# every option of every config group: the component groups, and those that set run-level keys
EVERY_OPTION = [f"{p.parent.name}={p.stem}" for p in sorted(CONF_DIR.glob("*/*.yaml")) if p.parent.name != "hydra"]
EVERY_OPTION += [f"hydra/launcher={p.stem}" for p in sorted(CONF_DIR.glob("hydra/launcher/*.yaml"))]
# One option per class is enough for the constructor test; all of them are cheap (a bad value is
# refused before any model or file is touched), so every method and backbone is taken.
CONSTRUCTED = [f"{group}={option}" for group in ("method", "backbone") for option in choices(group)]
# ``???`` values a constructor needs before it gets to its checks.
FILLED = {"backbone.members": ["random_features", "random_features"], "backbone.checkpoint": "/nonexistent.pth"}


@pytest.mark.parametrize("override", EVERY_OPTION)
def test_every_key_of_a_shipped_config_has_a_rule_or_a_role(override, tmp_path):
    assert undeclared_keys(compose_train([override], tmp_path)) == []


def test_an_undeclared_key_is_found_wherever_it_is(tmp_path):
    """The walk can fail: a key no class declares, at each level a config holds keys."""
    cfg = compose_train(["method=sea"], tmp_path)
    with open_dict(cfg):
        cfg.my_root_key = 1
        cfg.method.epochz = 3  # the probe's own keys
        cfg.method.augmenter.etta = 0.3  # a sub-component's (SeA's)
        cfg.method.optimizer.dampening = 0.1  # a sub-node the probe declares key by key (SGD's)
        cfg.backbone.colour = "red"
        cfg.dataset.sized = 3
    assert undeclared_keys(cfg) == ["backbone.colour", "dataset.sized", "method.augmenter.etta",
                                    "method.epochz", "method.optimizer.dampening", "my_root_key"]


def shipped_classes() -> dict[str, DictConfig]:
    """A shipped config node of every sealab class a ``_target_`` names, by class path."""
    found = {}
    for group in COMPONENT_GROUPS:
        for option in choices(group):
            cfg = compose_train([f"{group}={option}"])
            for _, node in _components(cfg[group], group):
                if node._target_.startswith("sealab."):
                    found.setdefault(node._target_, node)
    return found


def constructor_arguments(cls: type) -> set[str]:
    """The named arguments of ``cls(...)``, following ``**kwargs`` passed on to a base class."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - {"self"}
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            return names
    return names


# Constructor arguments no config sets: the owner passes them when it calls the partial.
PASSED_AT_RUN_TIME = {"sealab.heads.linear.LinearHead": {"in_features", "task"}}


def test_each_class_declares_a_rule_for_each_constructor_argument_and_no_other():
    classes = shipped_classes()
    assert {"sealab.methods.probe.LinearProbe", "sealab.augment.sea.SeA", "sealab.heads.linear.LinearHead",
            "sealab.backbones.timm_backbone.TimmBackbone", "sealab.methods.finetune.FineTune"} <= classes.keys()
    for target, node in classes.items():
        cls = get_object(target)
        assert getattr(cls, "RULES", None), f"{target} declares no RULES"
        arguments = constructor_arguments(cls)
        assert arguments - {key.partition(".")[0] for key in cls.RULES} == PASSED_AT_RUN_TIME.get(target, set()), \
            f"{target}: a constructor argument without a rule"
        for key in cls.RULES:
            head, _, rest = key.partition(".")
            assert head in arguments, f"{target}.RULES[{key!r}] is no argument of its constructor"
            if rest:  # a sub-node built by a class that is not sealab's: an argument of that class
                sub = get_object(node[head]._target_)
                assert rest in inspect.signature(sub).parameters, f"{target}.RULES[{key!r}]: {sub} has no {rest}"


def bad_value(rule: Rule):
    """A value ``rule`` refuses."""
    if rule.kind in ("int", "number"):
        if rule.low is not None:
            return rule.low - 1
        return "abc" if rule.high is None else rule.high + 1
    return {"bool": "yes", "str": "not-a-choice", "text": 5, "list": "abc", "mapping": "abc", "component": 5}[rule.kind]


def refusal(node: DictConfig) -> str:
    """The message of the ValueError building ``node`` raises (a partial is called as its owner would)."""
    try:
        built = instantiate(node)
        if isinstance(built, functools.partial):
            built(in_features=4, task=MultiClass(3))
    except (ValueError, InstantiationException) as err:
        while not isinstance(err, ValueError) and err.__cause__ is not None:
            err = err.__cause__
        return str(err)
    raise AssertionError(f"{node._target_} accepted it")


@pytest.mark.parametrize("override", CONSTRUCTED)
def test_the_constructor_refuses_a_bad_value_with_the_pre_run_checks_line(override, tmp_path):
    """One rule, two users: for every rule of every component of the config, the pre-run check
    prints one line for a bad value, and building the component refuses it with that same line."""
    group = override.partition("=")[0]
    cfg = compose_train([override], tmp_path)
    for key, value in FILLED.items():
        parent, _, leaf = key.rpartition(".")
        if leaf in cfg[parent].keys() and OmegaConf.is_missing(cfg[parent], leaf):
            cfg[parent][leaf] = value
    assert rule_violations(cfg) == []
    tested = 0
    for path, node in list(_components(cfg[group], group)):
        for key, rule in declared_rules(node).items():
            bad = copy.deepcopy(cfg)
            with open_dict(bad):
                OmegaConf.update(bad, f"{path}.{key}", bad_value(rule), merge=False)
            (line,) = rule_violations(bad)
            assert line.startswith(f"{path}.{key}=") and line.endswith(f"must be {rule.describe()}")
            assert line in refusal(OmegaConf.select(bad, path)), (path, key)
            tested += 1
    assert tested  # the loop ran


def test_each_alpha_is_its_own_classs_rule(tmp_path, monkeypatch):
    """SeA's alpha (a softmax temperature) and mixup's (a Beta parameter) are two settings: the
    check reads the rule of the class the config names, so tightening one leaves the other."""
    assert SeA.RULES["alpha"] is not Mixup.RULES["alpha"]
    monkeypatch.setattr(Mixup, "RULES", {**Mixup.RULES, "alpha": number(0.5)})
    check_run_config(compose_train(["method=sea", "method.augmenter.alpha=0.3"], tmp_path), "sea")
    with pytest.raises(ValueError, match=r"method.augmenter.alpha=0.3: must be a number >= 0.5"):
        check_run_config(compose_train(["method=mixup", "method.augmenter.alpha=0.3"], tmp_path), "mixup")
    with pytest.raises(ValueError, match=r"method.augmenter.alpha=0.3: must be a number >= 0.5"):
        Mixup(alpha=0.3)


def test_every_norm_choice_is_a_normalisation_the_head_applies():
    x = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    out = {norm: FeatureNormalizer(norm).fit(x)(x) for norm in settings.NORMS}
    assert set(out) == {"l2", "center_l2", "none"}
    torch.testing.assert_close(out["none"], x)
    torch.testing.assert_close(out["l2"], x / x.norm(dim=1, keepdim=True))
    centred = x - x.mean(0)
    torch.testing.assert_close(out["center_l2"], centred / centred.norm(dim=1, keepdim=True))
    with pytest.raises(ValueError, match="norm='l1'"):
        FeatureNormalizer("l1")


def test_every_precision_choice_extracts():
    """Each extract.precision has an autocast dtype, and a model runs under it on the CPU."""
    assert set(AUTOCAST_DTYPES) == set(settings.PRECISIONS)

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.full((3,), float(i)), i

    class Linear(torch.nn.Linear):
        name, transform = "linear", staticmethod(lambda image: image)

        def freeze(self):
            return self

    model = Linear(3, 2)
    for precision in settings.PRECISIONS:
        x, y = extract_features(model, Images(), torch.device("cpu"), precision=precision)
        assert x.shape == (4, 2) and x.dtype == torch.float32 and y.tolist() == [0, 1, 2, 3]


def test_every_cache_dtype_is_stored_as_itself_and_streams(tmp_path):
    x, y = torch.randn(6, 3), torch.arange(6)
    for dtype in settings.CACHE_DTYPES:
        assert np.dtype(dtype) in STREAMABLE_DTYPES
        entry, hit = FeatureCache(tmp_path).get_or_compute(
            {"dtype": dtype}, lambda partial: partial.extend([(x.to(getattr(torch, dtype)), y)]), 6, dtype, 4)
        assert not hit and entry.dtype == np.dtype(dtype)
        torch.testing.assert_close(entry.load()[0], x.to(getattr(torch, dtype)).float())
