"""Frozen backbones: features in dataset order, weights and BatchNorm statistics untouched."""


import pytest
import timm
import torch
from helpers import tiny_digits
from PIL import Image

from sealab.backbones.random_features import RandomReLUFeatures
from sealab.backbones.timm_backbone import TimmBackbone
from sealab.features.extract import extract_features
from sealab.features.store import load_split_features


def tiny_timm(**kw):
    return TimmBackbone("resnet10t", pretrained=False, img_size=32, name="resnet10t_random_init", **kw)


def state_snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_extraction_leaves_backbone_weights_and_batchnorm_untouched(tmp_path):
    backbone = tiny_timm()
    backbone.train()  # a frozen backbone refuses train mode
    assert not backbone.training and not any(m.training for m in backbone.modules())
    before = state_snapshot(backbone)
    assert any("running_mean" in k for k in before)
    features = load_split_features(tiny_digits(), backbone, str(tmp_path / "cache"), torch.device("cpu"), batch_size=16)
    after = state_snapshot(backbone)
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert all(not p.requires_grad for p in backbone.parameters())
    assert features.splits["train"][0].shape[1] == backbone.feature_dim == 512


def test_features_come_in_dataset_order_and_match_a_direct_forward():
    backbone = tiny_timm()
    dataset = tiny_digits().split("test")
    x, y = extract_features(backbone, dataset, torch.device("cpu"), batch_size=7)
    images = torch.stack([backbone.transform(dataset[i][0]) for i in (0, 5, 39)])
    with torch.no_grad():
        direct = backbone(images)
    torch.testing.assert_close(x[[0, 5, 39]], direct, rtol=1e-4, atol=1e-5)
    assert y.tolist() == [dataset[i][1] for i in range(len(dataset))]


def test_random_init_is_reproducible_from_its_seed():
    a, b, c = tiny_timm(init_seed=1), tiny_timm(init_seed=1), tiny_timm(init_seed=2)
    wa, wb, wc = (next(m.model.parameters()) for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert a.identity() != c.identity()


def test_random_relu_features_match_their_formula():
    backbone = RandomReLUFeatures(feature_dim=16, input_size=4, seed=3)
    image = Image.fromarray((torch.arange(16).reshape(4, 4) * 16).to(torch.uint8).numpy(), mode="L")
    pixels = backbone.transform(image)
    expected_pixels = (torch.arange(16).float() * 16 / 255 - 0.5) / 0.5
    torch.testing.assert_close(pixels.flatten(), expected_pixels)
    expected = torch.relu(backbone.weight @ expected_pixels + backbone.bias)
    torch.testing.assert_close(backbone(pixels.unsqueeze(0))[0], expected)


def test_checkpoint_keys_are_remapped(tmp_path):
    source = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    state = {f"module.encoder_q.{k}": v for k, v in source.state_dict().items()}
    state["module.encoder_q.fc.weight"] = torch.zeros(128, 512)  # projection head: dropped
    torch.save({"state_dict": state}, tmp_path / "moco.pth")
    backbone = tiny_timm(checkpoint=str(tmp_path / "moco.pth"), checkpoint_key="state_dict",
                         key_map={"module.encoder_q.": ""}, drop_prefixes=["module.encoder_q.fc."])
    for key, value in source.state_dict().items():
        assert torch.equal(backbone.model.state_dict()[key], value), key
    assert backbone.identity()["weights"]["sha256"]
    # a Path (from Python) is read as its text, as the config's string is
    as_path = tiny_timm(checkpoint=tmp_path / "moco.pth", checkpoint_key="state_dict",
                        key_map={"module.encoder_q.": ""}, drop_prefixes=["module.encoder_q.fc."])
    assert as_path.identity() == backbone.identity()


def test_checkpoint_with_wrong_prefix_fails_clearly(tmp_path):
    source = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    torch.save({f"backbone.{k}": v for k, v in source.state_dict().items()}, tmp_path / "ckpt.pth")
    with pytest.raises(RuntimeError, match="key_map"):
        tiny_timm(checkpoint=str(tmp_path / "ckpt.pth"), key_map={"module.": ""})
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        tiny_timm(checkpoint=str(tmp_path / "missing.pth"))


def test_a_head_that_is_not_dropped_explicitly_is_unexpected(tmp_path):
    source = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    state = {f"module.encoder_q.{k}": v for k, v in source.state_dict().items()}
    state["module.encoder_q.fc.weight"] = torch.zeros(128, 512)
    torch.save({"state_dict": state}, tmp_path / "moco.pth")
    with pytest.raises(RuntimeError, match=r"unexpected: \['fc.weight'\].*drop_prefixes"):
        tiny_timm(checkpoint=str(tmp_path / "moco.pth"), checkpoint_key="state_dict",
                  key_map={"module.encoder_q.": ""})
