"""Every file under conf/ composes, and everything it describes instantiates."""

from pathlib import Path

import pytest
import torch
from helpers import CONF_DIR, compose_train
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sealab.device import trainer_placement
from sealab.methods.base import ImageMethod, Method

GROUP_FILES = sorted(p for p in CONF_DIR.glob("*/*.yaml"))
# Built by their own tests, which fabricate the data they need on disk.
NEEDS_DATA_ON_DISK = {"features"}


def group_and_option(path: Path) -> tuple[str, str]:
    return path.parent.name, path.stem


def overrides_for(group: str, option: str) -> list[str]:
    if group == "hydra":  # the hydra group is composed as part of every config
        return []
    return [f"{group}={option}"]


@pytest.mark.parametrize("path", GROUP_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_composes_and_resolves(path, tmp_path):
    group, option = group_and_option(path)
    cfg = compose_train(overrides_for(group, option), output_dir=tmp_path)
    container = OmegaConf.to_container(cfg, resolve=False)
    assert {"dataset", "backbone", "method", "trainer", "paths"} <= container.keys()
    # Everything except values the user must supply resolves.
    OmegaConf.resolve(OmegaConf.masked_copy(cfg, [k for k in cfg if k not in ("dataset", "hydra")]))


@pytest.mark.parametrize("path", sorted(CONF_DIR.glob("method/*.yaml")), ids=lambda p: p.stem)
def test_method_instantiates_with_its_own_name(path, tmp_path):
    cfg = compose_train([f"method={path.stem}"], output_dir=tmp_path)
    method = instantiate(cfg.method)
    assert isinstance(method, (Method, ImageMethod)) and method.name == path.stem


def offline_backbone_overrides(path: Path, tmp_path: Path) -> list[str]:
    """Hub weights become random ones; a required checkpoint is fabricated in its own key layout."""
    spec = OmegaConf.load(path)
    overrides = [f"backbone={path.stem}"]
    if spec.get("pretrained"):
        overrides.append("backbone.pretrained=false")
    if "members" in spec.keys() and OmegaConf.is_missing(spec, "members"):  # an ensemble of offline backbones
        overrides.append("backbone.members=[random_features,resnet10t_random_init]")
    if "checkpoint" in spec.keys() and OmegaConf.is_missing(spec, "checkpoint"):
        import timm

        prefix = next(iter(spec.key_map), "") if spec.get("key_map") else ""
        state = {prefix + k: v for k, v in timm.create_model(spec.model_name, num_classes=0).state_dict().items()}
        if spec.get("checkpoint_key"):
            state = {spec.checkpoint_key: state}
        torch.save(state, tmp_path / "checkpoint.pth")
        overrides.append(f"backbone.checkpoint={tmp_path / 'checkpoint.pth'}")
    return overrides


@pytest.mark.parametrize("path", sorted(CONF_DIR.glob("backbone/*.yaml")), ids=lambda p: p.stem)
def test_backbone_instantiates_offline(path, tmp_path):
    cfg = compose_train(offline_backbone_overrides(path, tmp_path), tmp_path)
    backbone = instantiate(cfg.backbone)
    from PIL import Image

    image = Image.new("RGB", (40, 30), color=(120, 30, 200))
    members = getattr(backbone, "members", None)  # an ensemble: each member preprocesses its own way
    with torch.no_grad():
        if members is None:
            out = backbone(backbone.transform(image).unsqueeze(0))
        else:
            out = backbone.combine([m(m.transform(image).unsqueeze(0)) for m in members])
    assert out.shape == (1, backbone.feature_dim)


@pytest.mark.parametrize("path", sorted(CONF_DIR.glob("trainer/*.yaml")), ids=lambda p: p.stem)
def test_trainer_instantiates_on_the_run_device(path, tmp_path):
    cfg = compose_train([f"trainer={path.stem}"], output_dir=tmp_path)
    trainer = instantiate(cfg.trainer, logger=False, max_epochs=1, **trainer_placement(torch.device("cpu")))
    assert trainer.max_epochs == 1 and trainer.strategy.root_device == torch.device("cpu")


@pytest.mark.parametrize("path", sorted(CONF_DIR.glob("logger/*.yaml")), ids=lambda p: p.stem)
def test_logger_instantiates_offline(path, tmp_path):
    cfg = compose_train([f"logger={path.stem}"], output_dir=tmp_path)
    logger = instantiate(cfg.logger)
    assert logger.save_dir is not None
    if path.stem == "wandb":
        assert cfg.logger.offline is True


def test_hydra_callbacks_instantiate(tmp_path):
    cfg = compose_train([], output_dir=tmp_path)
    for callback in cfg.hydra.callbacks.values():
        assert instantiate(callback) is not None


def test_digits_dataset_instantiates(tmp_path):
    dataset = instantiate(compose_train(["dataset=digits"], tmp_path).dataset)
    sizes = {s: len(dataset.split(s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 819, "val": 205, "test": 773}
    indices = [set(dataset.indices[s].tolist()) for s in ("train", "val", "test")]
    assert not (indices[0] & indices[1] or indices[0] & indices[2] or indices[1] & indices[2])


def test_unknown_choice_lists_the_options(tmp_path):
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="linear"):
        compose_train(["method=does_not_exist"], tmp_path)
