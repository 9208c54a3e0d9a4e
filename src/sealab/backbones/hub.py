"""timm's hub weights without the network: a cached copy is used, a missing one fails at once.

Without a network, timm's download spent about 53 s in Hugging Face's retries and ended with
``ConnectError: Name or service not known``. Here one connection attempt with a short timeout
(or ``HF_HUB_OFFLINE=1``) tells whether the hub can be reached; if not, the cached copy timm
would have downloaded is read directly, and without one the run stops with what to do."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from sealab.backbones.base import BACKBONE

CONNECT_TIMEOUT = 5.0  # seconds for the one connection attempt
HF_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm reads from a hub repository, in order


class HubWeightsUnavailable(ConnectionError):
    """Pretrained weights that are neither cached nor downloadable (no network)."""


@dataclass(frozen=True)
class HubSource:
    """Where timm downloads a model's weights from: a Hugging Face repository, else a URL."""

    model_name: str
    repo_id: str | None
    revision: str | None
    filenames: tuple[str, ...]
    url: str | None

    @classmethod
    def of(cls, model_name: str, pretrained_cfg) -> HubSource:
        hub_id = pretrained_cfg.hf_hub_id
        repo_id, _, revision = hub_id.partition("@") if hub_id else (None, "", "")
        filenames = (pretrained_cfg.hf_hub_filename,) if pretrained_cfg.hf_hub_filename else HF_FILES
        return cls(model_name, repo_id, revision or None, filenames, pretrained_cfg.url)

    def host(self) -> tuple[str, int]:
        """The host a download connects to first: the HTTPS proxy when one is set."""
        proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
        if self.repo_id:
            from huggingface_hub import constants

            address = proxy or constants.ENDPOINT
        else:
            address = proxy or self.url
        parsed = urlparse(address if "//" in address else f"http://{address}")
        return parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80)

    def cache_dir(self) -> Path:
        """Where timm keeps these weights once downloaded."""
        if self.repo_id:
            from huggingface_hub import constants

            return Path(constants.HF_HUB_CACHE)
        return Path(torch.hub.get_dir()) / "checkpoints"

    def cached_file(self) -> Path | None:
        if self.repo_id:
            from huggingface_hub import try_to_load_from_cache

            for filename in self.filenames:
                found = try_to_load_from_cache(self.repo_id, filename, cache_dir=self.cache_dir(),
                                               revision=self.revision)
                if isinstance(found, str):
                    return Path(found)
            return None
        path = self.cache_dir() / Path(urlparse(self.url).path).name
        return path if path.is_file() else None

    def how_to_get(self, why: str) -> str:
        where = f"{self.repo_id}: {' or '.join(self.filenames)}" if self.repo_id else self.url
        download = (f"huggingface-cli download {self.repo_id} {self.filenames[0]} --local-dir DIR"
                    if self.repo_id else f"curl -L -o FILE {self.url}")
        return (
            f"{BACKBONE}model_name={self.model_name}: its pretrained weights ({where}) are not in timm's cache "
            f"({self.cache_dir()}) and cannot be downloaded: {why}.\n"
            f"  - run once where the network is reachable: timm keeps the file in that cache; or\n"
            f"  - on a machine with network, download the file ({download}), bring it here and run with\n"
            f"    {BACKBONE}checkpoint=/path/to/file (read as these hub weights, never from the network).")


def hf_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def unreachable(host: tuple[str, int], timeout: float = CONNECT_TIMEOUT) -> str | None:
    """Why ``host`` cannot be reached (one attempt, ``timeout`` seconds), or None."""
    try:
        socket.create_connection(host, timeout=timeout).close()
    except OSError as err:
        return f"{host[0]}:{host[1]} cannot be reached ({err})"
    return None


def offline_weights(model_name: str, pretrained_cfg) -> Path | None:
    """Before timm downloads ``model_name``'s pretrained weights: None when the hub can be reached
    (timm goes ahead as usual); otherwise the cached copy to read instead. Raises
    ``HubWeightsUnavailable`` naming the model, the cache, ``backbone.checkpoint`` and how to
    download the file, when there is neither."""
    if pretrained_cfg is None:
        return None  # not a timm model: timm says so
    source = HubSource.of(model_name, pretrained_cfg)
    if not source.repo_id and not source.url:
        return None  # nothing to download: timm says what is missing
    why = ("HF_HUB_OFFLINE is set" if source.repo_id and hf_offline() else unreachable(source.host()))
    if why is None:
        return None
    cached = source.cached_file()
    if cached is None:
        raise HubWeightsUnavailable(source.how_to_get(why))
    return cached
