"""The config checks: every out-of-range or mistyped value is refused when the run starts,
before any data is read, with the key and its valid range."""

from pathlib import Path

import pytest
from helpers import CONF_DIR, compose_train
from omegaconf import OmegaConf, open_dict

from sealab.checks import check_run_config, declared_rules
from sealab.experiment import run
from sealab.rules import Rule, component, integer, mapping, number, one_of, positive
from sealab.settings import run_rules

METHODS = sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))
BACKBONES = sorted(p.stem for p in (CONF_DIR / "backbone").glob("*.yaml"))


@pytest.mark.parametrize("rule, good, bad", [
    (integer(1), [1, 7], [0, -1, 1.5, 2.0, True, "3", None]),
    (number(0), [0, 0.3, 2], [-1e-9, "abc", float("nan"), float("inf"), False]),
    (positive(), [1e-6], [0, -0.1]),
    (number(0, 1, open_high=True), [0, 0.9], [1, -0.1]),
    (integer(0, also=("auto",)), [0, 4, "auto"], [-1, "AUTO"]),
    (integer(1, nullable=True), [None, 3], [0]),
    (one_of("a", "b"), ["a"], ["c", 1]),
    (Rule("bool"), [True, False], [1, "true"]),
    (mapping(nullable=True), [{"a": [1]}, None], ["abc", [0.1, 0.3]]),
    (component(nullable=True), [{"_target_": "x"}, None, lambda: None], ["abc", 1, [1]]),
])
def test_a_rule_accepts_its_type_and_range_only(rule, good, bad):
    assert all(rule.accepts(v) for v in good)
    assert not any(rule.accepts(v) for v in bad)


def test_a_rule_describes_its_range():
    assert integer(1).describe() == "an integer >= 1"
    assert positive().describe() == "a number > 0"
    assert number(0, 1, open_high=True).describe() == "a number in [0, 1)"
    assert integer(0, also=("auto",)).describe() == "an integer >= 0 or 'auto'"
    assert number(0, nullable=True).describe() == "a number >= 0 or null"
    assert one_of("fp32", "bf16").describe() == "one of 'fp32', 'bf16'"


@pytest.mark.parametrize("overrides, expected", [
    (["method.epochs=0"], "method.epochs=0: must be an integer >= 1"),
    (["method.augmenter.eta=-1"], "method.augmenter.eta=-1: must be a number >= 0"),
    (["method.augmenter.eta=abc"], "method.augmenter.eta='abc': must be a number >= 0"),
    (["method.augmenter.alpha=-0.01"], "method.augmenter.alpha=-0.01: must be a number > 0"),
    (["method=mixup", "method.augmenter.alpha=0"], "method.augmenter.alpha=0: must be a number > 0"),
    (["method=sea_random", "method.augmenter.concentration=0"],
     "method.augmenter.concentration=0: must be a number > 0"),
    (["method=pgd", "method.augmenter.steps=0"], "method.augmenter.steps=0: must be an integer >= 1"),
    (["method=isda", "method.augmenter.lambda0=-1"], "method.augmenter.lambda0=-1: must be a number >= 0"),
    (["method=noise", "method.augmenter.sigma=-0.1"], "method.augmenter.sigma=-0.1: must be a number >= 0"),
    (["method.optimizer.momentum=1"], "method.optimizer.momentum=1: must be a number in [0, 1)"),
    (["method=finetune", "method.layer_decay=0"], "method.layer_decay=0: must be a number in (0, 1] or null"),
    (["method=finetune", "method.precision=fp16"],
     "method.precision='fp16': must be one of 'auto', '32', 'bf16-mixed', '16-mixed' or 32"),
    (["method=linear_aug", "method.norm=l1"], "method.norm='l1': must be one of 'l2', 'center_l2', 'none'"),
    (["method=knn", "method.temperature=0"], "method.temperature=0: must be a number > 0"),
    (["backbone=resnet50", "backbone.features=avg"],
     "backbone.features='avg': must be one of 'pooled', 'cls', 'mean_patch', 'last_k_cls'"),
    (["backbone.feature_dim=0"], "backbone.feature_dim=0: must be an integer >= 1"),
    # a grid that is not a mapping of lists (was an AttributeError / ConfigAttributeError)
    (["method.grid=abc"], "method.grid='abc': must be a mapping or null"),
    (["method.grid=[0.1,0.3]"], "method.grid=[0.1, 0.3]: must be a mapping or null"),
    (["method.head.lamda=0"], "method.head.lamda=0: must be a number > 0"),
    (["method.optimizer.weight_decay=-1e-6"], "method.optimizer.weight_decay=-1e-06: must be a number >= 0"),
    (["method.batch_size=0"], "method.batch_size=0: must be an integer >= 1"),
    (["method.batch_size=-1"], "method.batch_size=-1: must be an integer >= 1"),
    (["method=finetune", "method.steps=0"], "method.steps=0: must be an integer >= 1 or null"),
    (["method=logreg", "method.weight_decay=-1"], "method.weight_decay=-1: must be a number >= 0 or null"),
    (["method=knn", "method.k=0"], "method.k=0: must be an integer >= 1"),
    (["method=gda", "method.shrinkage=1.5"], "method.shrinkage=1.5: must be a number in [0, 1] or 'auto'"),
    (["extract.batch_size=0"], "extract.batch_size=0: must be an integer >= 1"),
    (["extract.lock_timeout=-5"], "extract.lock_timeout=-5: must be a number >= 0"),
    (["devices=0"], "devices=0: must be an integer >= 1"),
    (["extract.precision=fp8"], "extract.precision='fp8': must be one of 'fp32', 'bf16', 'fp16'"),
    (["method.augmenter.mode=exact"], "method.augmenter.mode='exact': must be one of 'clean', 'faithful'"),
    (["method=logreg", "method.dtype=half"], "method.dtype='half': must be one of 'float32', 'float64'"),
    (["norm=l1"], "norm='l1': must be one of 'l2', 'center_l2', 'none'"),
    (["seed=-1"], "seed=-1: must be an integer in [0, 4294967295]"),
    (["fit_on=all"], "fit_on='all': must be one of 'train', 'trainval'"),
    # each value of a grid is held to the rule of the key it varies
    (["method.grid={augmenter.eta:[0.1,-0.2]}"],
     "method.grid.augmenter.eta[1]=-0.2: must be a number >= 0"),
])
def test_a_bad_value_is_named_with_its_valid_range(overrides, expected, tmp_path):
    cfg = compose_train(overrides, output_dir=tmp_path)
    with pytest.raises(ValueError) as raised:
        check_run_config(cfg, "sea")
    assert expected in [line.strip() for line in str(raised.value).splitlines()[1:]]


def test_every_problem_is_listed_at_once(tmp_path):
    cfg = compose_train(["method.epochs=0", "method.augmenter.eta=abc", "+trainer.max_epochs=3"], tmp_path)
    with pytest.raises(ValueError) as raised:
        check_run_config(cfg, "sea")
    lines = str(raised.value).splitlines()
    assert len(lines) == 4 and "trainer.max_epochs is set by sealab itself" in lines[3]


def test_every_rule_is_for_a_key_a_shipped_config_has(tmp_path):
    """Run-level rules by their key; a component's rules at the path of each shipped node of
    its class (``method.augmenter.eta`` for SeA): none is for a key no config has."""
    keys, rules = set(), set(run_rules())
    overrides = [[f"method={m}"] for m in METHODS] + [[f"backbone={b}"] for b in BACKBONES]
    for override in overrides:
        cfg = compose_train(override, tmp_path)
        container = OmegaConf.to_container(cfg, resolve=False)
        container.pop("hydra")
        stack = [("", container, cfg)]
        while stack:
            prefix, node, config = stack.pop()
            if "_target_" in node:
                rules |= {prefix + key for key in declared_rules(config)}
            for key, value in node.items():
                keys.add(prefix + key)
                if isinstance(value, dict):
                    stack.append((f"{prefix}{key}.", value, config[key]))
    assert not rules - keys, "rules for keys no config has"


@pytest.mark.parametrize("override", ["method.augmenter.eta=abc", "method.augmenter.mode=exact"])
def test_bad_settings_stop_the_run_before_any_data_is_read(override, tmp_path):
    missing = tmp_path / "missing.pt"  # were the data read first, this would fail differently
    cfg = compose_train([override, "dataset=features", f"dataset.train_features={missing}",
                         f"dataset.test_features={missing}"], output_dir=tmp_path / "run")
    with open_dict(cfg):
        cfg.paths.cache_dir = str(tmp_path / "cache")
    with pytest.raises(ValueError, match=r"method.augmenter.(eta='abc'|mode='exact'): must be") as raised:
        run(cfg)
    assert not isinstance(raised.value, FileNotFoundError) and not Path(missing).exists()
