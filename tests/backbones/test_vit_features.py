"""ViT feature options, local copies of hub weights read offline, and every configured timm name
checked against timm's registry of pretrained tags."""

import socket
from pathlib import Path

import pytest
import timm
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from sealab.backbones.timm_backbone import TimmBackbone

CONF_BACKBONES = sorted((Path(__file__).resolve().parents[2] / "conf" / "backbone").glob("*.yaml"))
VIT = "test_vit"  # timm's tiny test ViT: 64-d, 6 blocks; built for 32 px: 2 x 2 patches


def tiny_vit(**kw):
    return TimmBackbone(VIT, pretrained=False, img_size=32, init_seed=1, **kw)


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_vit_feature_options_shapes_and_values(images):
    pooled, cls, mean_patch = tiny_vit(), tiny_vit(features="cls"), tiny_vit(features="mean_patch")
    last4 = tiny_vit(features="last_k_cls")
    last2_mean = tiny_vit(features="last_k_cls", last_k=2, with_mean_patch=True)
    model = pooled.model
    with torch.no_grad():
        tokens = model.forward_features(images)
        # the blocks by hand, each output normed with the final norm (DINO's get_intermediate_layers)
        x = model.norm_pre(model._pos_embed(model.patch_embed(images)))
        outputs = []
        for block in model.blocks:
            x = block(x)
            outputs.append(model.norm(x))
        got = {b: b(images) for b in (pooled, cls, mean_patch, last4, last2_mean)}
    for backbone, dim in ((pooled, 64), (cls, 64), (mean_patch, 64), (last4, 4 * 64), (last2_mean, 3 * 64)):
        assert backbone.feature_dim == dim and got[backbone].shape == (2, dim)
    assert torch.equal(got[cls], tokens[:, 0])
    torch.testing.assert_close(got[pooled], tokens[:, 0])  # timm's ViT pools the normed CLS token
    torch.testing.assert_close(got[mean_patch], tokens[:, 1:].mean(1))
    torch.testing.assert_close(got[last4], torch.cat([o[:, 0] for o in outputs[-4:]], 1))
    torch.testing.assert_close(got[last2_mean],
                               torch.cat([outputs[-2][:, 0], outputs[-1][:, 0], outputs[-1][:, 1:].mean(1)], 1))
    identities = [b.identity() for b in (pooled, cls, mean_patch, last4, last2_mean)]
    assert len({repr(i) for i in identities}) == 5  # the option keys the feature cache
    assert identities[4]["features"] == {"features": "last_k_cls", "last_k": 2, "with_mean_patch": True}


def test_vit_only_options_fail_clearly_elsewhere():
    for features in ("cls", "mean_patch", "last_k_cls"):
        with pytest.raises(ValueError, match="vision transformer.*features=pooled"):
            TimmBackbone("resnet10t", pretrained=False, img_size=32, features=features)
    with pytest.raises(ValueError, match="backbone.features='avg': must be one of 'pooled', 'cls'"):
        tiny_vit(features="avg")
    with pytest.raises(ValueError, match="with_mean_patch"):
        tiny_vit(features="cls", with_mean_patch=True)
    with pytest.raises(ValueError, match="last_k=7"):
        tiny_vit(features="last_k_cls", last_k=7)


@pytest.fixture
def no_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError("network access")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_local_copy_of_hub_weights_is_read_offline(tmp_path, images, no_network):
    torch.manual_seed(3)
    source = timm.create_model(VIT, pretrained=False, img_size=32).eval()  # with its 1000-class head
    save_file(source.state_dict(), tmp_path / "model.safetensors")
    backbone = TimmBackbone(f"{VIT}.r160_in1k", pretrained=True, img_size=32,
                            checkpoint=str(tmp_path / "model.safetensors"), features="cls")
    with torch.no_grad():
        assert torch.equal(backbone(images), source.forward_features(images)[:, 0])
    weights = backbone.identity()["weights"]
    assert weights["pretrained"] == "r160_in1k" and len(weights["sha256"]) == 64
    assert "state_dict" not in backbone.model.pretrained_cfg  # no second copy of the weights kept
    # a hub file at the model's native 160 px: timm's own filter resamples the position embedding
    torch.save(timm.create_model(VIT, pretrained=False).state_dict(), tmp_path / "pytorch_model.bin")
    resized = TimmBackbone(VIT, pretrained=True, img_size=32, checkpoint=str(tmp_path / "pytorch_model.bin"))
    assert resized.model.pos_embed.shape == (1, 5, 64)


def test_wrong_local_hub_file_fails_naming_the_setting(tmp_path, no_network):
    save_file(timm.create_model("resnet10t", pretrained=False).state_dict(), tmp_path / "model.safetensors")
    with pytest.raises(RuntimeError, match="backbone.pretrained=false") as err:
        TimmBackbone(VIT, pretrained=True, img_size=32, checkpoint=str(tmp_path / "model.safetensors"))
    lines = str(err.value).splitlines()  # a few lines, not timm's list of every key
    assert len(lines) <= 5 and all(len(line) < 700 for line in lines), str(err.value)
    assert "The file looks like timm's resnet10t: try backbone.model_name=resnet10t." in str(err.value)


@pytest.mark.parametrize("path", CONF_BACKBONES, ids=lambda p: p.stem)
def test_configured_timm_names_exist_in_timms_registry(path):
    spec = OmegaConf.load(path)
    if spec._target_ != "sealab.backbones.timm_backbone.TimmBackbone":
        pytest.skip("not a timm backbone")
    if spec.get("pretrained"):
        # an explicit tag pins the weights; it must be one timm has (list_pretrained is offline)
        assert "." in spec.model_name, f"{path.name}: give the pretrained tag, e.g. {spec.model_name}.<tag>"
        assert spec.model_name in set(timm.list_pretrained()), f"{path.name}: {spec.model_name} is not a timm tag"
    else:
        assert timm.is_model(spec.model_name), f"{path.name}: {spec.model_name} is not a timm model"
    if OmegaConf.is_missing(spec, "checkpoint") if "checkpoint" in spec else False:
        assert spec.model_name == "resnet50" and "drop_prefixes" in spec and "key_map" in spec
