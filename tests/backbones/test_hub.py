"""timm's hub weights with no network (sockets blocked, never touching the network): a cached
copy is read, a missing one fails at once with what to do."""

import socket
import time

import huggingface_hub.constants
import pytest
import timm
import torch
from safetensors.torch import save_file

from sealab.backbones.hub import HubWeightsUnavailable
from sealab.backbones.timm_backbone import TimmBackbone
from sealab.console import written_for_the_user

MODEL = "resnet10t.c3_in1k"  # small; its hub repository is timm/resnet10t.c3_in1k
LIMIT = 30  # seconds; timm's own download retried for about 53 s before failing


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Name resolution and connections fail; timm's caches (Hugging Face's, torch hub's) empty."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the tests' conftest sets it
    hub_dir = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch"))
    yield attempts
    torch.hub.set_dir(hub_dir)


def test_hub_weights_without_network_or_cache_fail_fast_saying_what_to_do(no_network, tmp_path):
    start = time.monotonic()
    with pytest.raises(HubWeightsUnavailable) as raised:
        TimmBackbone(MODEL, pretrained=True)
    assert time.monotonic() - start < LIMIT
    message = str(raised.value)
    assert f"backbone.model_name={MODEL}" in message  # the model tag
    assert str(tmp_path / "hf") in message  # where timm caches hub weights
    assert "backbone.checkpoint=/path/to/file" in message
    assert f"huggingface-cli download timm/{MODEL} model.safetensors" in message  # how to download elsewhere
    assert "Name or service not known" in message
    assert len(no_network) == 1  # one attempt, no retries
    assert written_for_the_user(raised.value)  # the console shows the message alone


def test_hf_hub_offline_fails_without_trying_the_network(no_network, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubWeightsUnavailable, match="HF_HUB_OFFLINE is set"):
        TimmBackbone(MODEL, pretrained=True)
    assert no_network == []


def test_a_cached_copy_is_read_without_the_network(no_network, tmp_path):
    # timm's cache as a download leaves it: models--<org>--<name>/snapshots/<rev>/, refs/main -> rev
    repo = tmp_path / "hf" / f"models--timm--{MODEL}"
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    torch.manual_seed(1)
    hub_model = timm.create_model("resnet10t", num_classes=1000)  # with its classifier, as on the hub
    save_file(hub_model.state_dict(), repo / "snapshots" / "abc123" / "model.safetensors")
    backbone = TimmBackbone(MODEL, pretrained=True)
    loaded = backbone.model.state_dict()
    expected = {k: v for k, v in hub_model.state_dict().items() if not k.startswith("fc.")}
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    assert backbone.identity()["weights"] == {"pretrained": "c3_in1k"}  # the hub weights' identity, as online
