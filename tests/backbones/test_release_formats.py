"""Self-supervised ResNet-50 checkpoints in each method's release format, written by the test
(heads, momentum encoders and queues included) and loaded through the backbone configs."""

import pytest
import timm
import torch
from helpers import compose_train
from hydra.errors import InstantiationException
from hydra.utils import instantiate

LoadError = (RuntimeError, InstantiationException)  # hydra wraps what the backbone raises
SMALL = "resnet18"  # same key names as torchvision's (and timm's) resnet50; the configs keep resnet50


def source_model(name=SMALL, seed=0):
    """A torchvision-style ResNet (with its 1000-class fc) whose BatchNorm statistics are not
    the defaults, so loading them is checked too."""
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def prefixed(prefix, state):
    return {prefix + k: v for k, v in state.items()}


def mlp(prefix, dims, bn=()):
    """Random weights of an MLP head as the release files hold them (Linear at even indices,
    BatchNorm after the layers listed in ``bn``)."""
    out = {}
    for i, (d_in, d_out) in enumerate(zip(dims, dims[1:])):
        out[f"{prefix}{3 * i}.weight"] = torch.randn(d_out, d_in)
        out[f"{prefix}{3 * i}.bias"] = torch.randn(d_out)
        if i in bn:
            out.update({f"{prefix}{3 * i + 1}.weight": torch.ones(d_out), f"{prefix}{3 * i + 1}.bias": torch.zeros(d_out),
                        f"{prefix}{3 * i + 1}.running_mean": torch.zeros(d_out),
                        f"{prefix}{3 * i + 1}.running_var": torch.ones(d_out),
                        f"{prefix}{3 * i + 1}.num_batches_tracked": torch.tensor(7)})
    return out


def training_state():
    return {"epoch": 200, "arch": "resnet50",
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.03, "momentum": 0.9, "params": [0, 1]}]}}


def release_file(fmt, full):
    """The object the method's release file holds, around ``full`` (a torchvision state dict with fc)."""
    backbone = {k: v for k, v in full.items() if not k.startswith("fc.")}
    dim = full["fc.weight"].shape[1]
    if fmt in ("resnet50_mocov1", "resnet50_mocov2"):
        head = ({"fc.weight": torch.randn(128, dim), "fc.bias": torch.randn(128)} if fmt.endswith("v1")
                else {"fc.0.weight": torch.randn(dim, dim), "fc.0.bias": torch.randn(dim),
                      "fc.2.weight": torch.randn(128, dim), "fc.2.bias": torch.randn(128)})
        momentum = {k: v + 1 for k, v in {**backbone, **head}.items()}
        state = {**prefixed("module.encoder_q.", {**backbone, **head}),
                 **prefixed("module.encoder_k.", momentum),
                 "module.queue": torch.randn(128, 64), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
        return {**training_state(), "state_dict": state}
    if fmt == "resnet50_mocov3":
        proj = mlp("fc.", [dim, 64, 32], bn=(0,))
        state = {**prefixed("module.base_encoder.", {**backbone, **proj}),
                 **prefixed("module.momentum_encoder.", {k: v + 1 for k, v in {**backbone, **proj}.items()}),
                 **mlp("module.predictor.", [32, 64, 32], bn=(0,))}
        return {**training_state(), "state_dict": state, "scaler": {"scale": 1024.0}}
    if fmt == "resnet50_swav":
        return {**prefixed("module.", backbone), **mlp("module.projection_head.", [dim, 64, 16], bn=(0,)),
                "module.prototypes.weight": torch.randn(30, 16)}
    if fmt == "resnet50_deepclusterv2":
        return {**prefixed("module.", backbone), **mlp("module.projection_head.", [dim, 64, 16], bn=(0,)),
                **{f"module.prototypes.prototypes{i}.weight": torch.randn(30, 16) for i in range(3)}}
    if fmt in ("resnet50_dino", "resnet50_barlowtwins"):
        return backbone
    if fmt in ("resnet50_byol", "resnet50_simclr"):
        return full
    raise AssertionError(fmt)


FORMATS = ["resnet50_mocov1", "resnet50_mocov2", "resnet50_mocov3", "resnet50_swav", "resnet50_deepclusterv2",
           "resnet50_dino", "resnet50_barlowtwins", "resnet50_byol", "resnet50_simclr"]


def load_through_config(name, path, tmp_path, *overrides):
    cfg = compose_train([f"backbone={name}", f"backbone.checkpoint={path}", "backbone.img_size=32", *overrides],
                        tmp_path)
    return instantiate(cfg.backbone)


@pytest.mark.parametrize("fmt", FORMATS)
def test_release_format_gives_the_features_of_the_saved_model(fmt, tmp_path):
    source = source_model()
    path = tmp_path / f"{fmt}.pth"
    torch.save(release_file(fmt, source.state_dict()), path)
    backbone = load_through_config(fmt, path, tmp_path, f"backbone.model_name={SMALL}")
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(backbone(images), source.forward_head(source.forward_features(images), pre_logits=True))
    assert backbone.feature_dim == source.num_features
    assert backbone.identity()["weights"]["sha256"]


def test_release_format_loads_into_the_configured_resnet50(tmp_path):
    source = source_model("resnet50")
    torch.save(release_file("resnet50_mocov3", source.state_dict()), tmp_path / "r-50-1000ep.pth.tar")
    backbone = load_through_config("resnet50_mocov3", tmp_path / "r-50-1000ep.pth.tar", tmp_path)
    assert backbone.model_name == "resnet50" and backbone.feature_dim == 2048
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(backbone(images), source.forward_head(source.forward_features(images), pre_logits=True))


def test_wrong_architecture_fails_naming_the_keys(tmp_path):
    torch.save(release_file("resnet50_mocov2", source_model("resnet10t").state_dict()), tmp_path / "moco.pth")
    with pytest.raises(LoadError) as err:
        load_through_config("resnet50_mocov2", tmp_path / "moco.pth", tmp_path, f"backbone.model_name={SMALL}")
    message = str(err.value)
    assert "missing: ['conv1.weight'" in message  # resnet18's stem, absent from resnet10t's deep stem
    assert "unexpected: ['conv1.0.weight'" in message  # after mapping: module.encoder_q. removed
    assert "backbone.key_map" in message and "backbone.checkpoint_key" in message


def test_resnet18_checkpoint_into_resnet50_names_missing_and_mismatched_keys(tmp_path):
    torch.save(release_file("resnet50_dino", source_model().state_dict()), tmp_path / "dino.pth")
    with pytest.raises(LoadError, match=r"missing: \['layer1.0.conv3.weight'.*another shape"):
        load_through_config("resnet50_dino", tmp_path / "dino.pth", tmp_path)


def test_undropped_head_is_unexpected_and_checkpoint_key_is_named(tmp_path):
    full = source_model().state_dict()
    torch.save(full, tmp_path / "byol.pth")
    # the DINO config drops nothing: a file with fc weights names them
    with pytest.raises(LoadError, match=r"unexpected: \['fc.weight', 'fc.bias'\]"):
        load_through_config("resnet50_dino", tmp_path / "byol.pth", tmp_path, f"backbone.model_name={SMALL}")
    torch.save({"state_dict": full}, tmp_path / "wrapped.pth")
    with pytest.raises(LoadError, match=r"unexpected: \['state_dict'\].*backbone.checkpoint_key"):
        load_through_config("resnet50_simclr", tmp_path / "wrapped.pth", tmp_path, f"backbone.model_name={SMALL}")
    backbone = load_through_config("resnet50_simclr", tmp_path / "wrapped.pth", tmp_path,
                                   f"backbone.model_name={SMALL}", "backbone.checkpoint_key=state_dict")
    assert backbone.identity()["weights"]["checkpoint_key"] == "state_dict"


def test_a_wrong_architecture_is_a_few_short_lines_that_name_what_the_file_looks_like(tmp_path):
    torch.save(source_model("resnet18").state_dict(), tmp_path / "dino.pth")  # a resnet18 into resnet50
    with pytest.raises(LoadError) as err:
        load_through_config("resnet50_dino", tmp_path / "dino.pth", tmp_path)
    message = str(err.value.__cause__ or err.value)
    lines = message.splitlines()
    assert len(lines) <= 4 and all(len(line) < 700 for line in lines), message  # was one 1,500-character line
    assert "weights of resnet50 are missing" in lines[0] and "... and " in lines[0]  # a count, the first few
    assert "The file looks like timm's resnet18: try backbone.model_name=resnet18." in message


def test_the_architecture_guess_needs_most_weights_to_match():
    from sealab.backbones.checkpoint import looks_like

    resnet = source_model("resnet34").state_dict()
    assert looks_like(resnet) == "resnet34"
    assert looks_like({k: v for i, (k, v) in enumerate(resnet.items()) if i % 3}) is None  # a third missing
    assert looks_like({"encoder." + k: v for k, v in resnet.items()}) is None  # unmapped prefixes
