"""Atomic writes: all or nothing, and files a group can share (the process umask, not 0600)."""

import os
import stat

import pytest
import torch

from sealab.features.cache import FeatureCache
from sealab.fileio import atomic_write_bytes, atomic_write_json


@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)

    old = os.umask(0o022)
    yield set_mask
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o002, 0o664), (0o022, 0o644), (0o077, 0o600)])
def test_written_files_follow_the_umask(mask, mode, tmp_path, umask):
    umask(mask)
    atomic_write_json(tmp_path / "metrics.json", {"a": 1})
    FeatureCache(tmp_path / "cache").store("key", (torch.zeros(2, 3), torch.zeros(2)), {})
    for path in (tmp_path / "metrics.json", tmp_path / "cache/key/features.npy", tmp_path / "cache/key/labels.npy",
                 tmp_path / "cache/key/meta.json"):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"old": True})

    def half_then_fail(tmp):
        tmp.write_text('{"new": ')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, half_then_fail)
    assert path.read_text() == '{\n  "old": true\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
