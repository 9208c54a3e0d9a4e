"""Every dataset class declares the rule of each key of its config node beside its constructor;
the pre-run check of the composed config and the constructor apply that one rule, so a bad value
gives the same message either way, before any data is read."""

import re

import pytest
from fabricate import imagefolder
from helpers import CONF_DIR, compose_train
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import OmegaConf

from sealab.checks import rule_violations, undeclared_keys
from sealab.rules import HYDRA_KEYS

DATASETS = sorted(p.stem for p in CONF_DIR.glob("dataset/*.yaml"))
# One bad value per key kind, with the message its rule gives.
BAD = {
    "val_fraction": ("abc", "dataset.val_fraction='abc': must be a number in (0, 1)"),
    "seed": ("-1", "dataset.seed=-1: must be an integer in [0, 4294967295]"),
    "download": ("maybe", "dataset.download='maybe': must be true or false"),
    "partition": ("11", "dataset.partition=11: must be an integer in [1, 10]"),
    "test_size": ("0", "dataset.test_size=0: must be an integer >= 1"),
    "train_per_class": ("0", "dataset.train_per_class=0: must be an integer >= 1"),
}


def build(cfg):
    try:
        return instantiate(cfg.dataset)
    except InstantiationException as err:  # Hydra wraps what the constructor raised
        raise err.__cause__ from None


@pytest.mark.parametrize("name", DATASETS)
def test_every_key_of_every_dataset_config_has_a_declared_rule(name, tmp_path):
    cfg = compose_train([f"dataset={name}"], output_dir=tmp_path)
    assert [key for key in undeclared_keys(cfg) if key.startswith("dataset.")] == []
    rules = get_object(cfg.dataset._target_).RULES
    assert set(cfg.dataset) - set(HYDRA_KEYS) <= set(rules)


@pytest.mark.parametrize("name, key", [(name, key) for name in DATASETS for key in BAD
                                       if key in OmegaConf.load(CONF_DIR / "dataset" / f"{name}.yaml")])
def test_a_bad_value_gives_its_rules_message_in_the_check_and_the_constructor(name, key, tmp_path):
    value, message = BAD[key]
    missing = tmp_path / "absent"  # were the data read first, this would fail differently
    place = ([f"dataset.train_features={missing}.pt", f"dataset.test_features={missing}.pt"] if name == "features"
             else [f"dataset.root={missing}"] if name != "digits" else [])
    cfg = compose_train([f"dataset={name}", f"dataset.{key}={value}", *place], output_dir=tmp_path)
    assert rule_violations(cfg) == [message]
    with pytest.raises(ValueError, match=f"^dataset '{name}': " + re.escape(message)):
        build(cfg)


def test_an_image_folder_of_a_single_class_is_refused(tmp_path):
    fab = imagefolder(tmp_path / "one", per_class=10)
    for other in ("dog", "zebra"):  # leave only "cat"
        for image in (fab.root / other).iterdir():
            image.unlink()
        (fab.root / other).rmdir()
    cfg = compose_train(["dataset=imagefolder", f"dataset.root={fab.root}"], output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"dataset 'imagefolder': the train split holds only class 0 "
                                         rf"\(under {fab.root}\): a classifier needs examples of at least two"):
        build(cfg)
