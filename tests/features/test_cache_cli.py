"""sealab-cache on a cache made by a real extraction: list shows each entry's size on disk, clean
removes lock files no process holds and keeps held ones, remove leaves (or waits for) an entry
another process is writing, and an unknown folder names the fix."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from helpers import tiny_digits

from sealab.backbones.random_features import RandomReLUFeatures
from sealab.cache_cli import main, size
from sealab.features.store import load_split_features

# Another process holding a key's lock as an extraction does, until the file argv[3] exists.
HOLD = """
import sys, time
from pathlib import Path
from sealab.features.locks import key_lock
root, key, release = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
with key_lock(root, key, timeout=10):
    print("holding", flush=True)
    while not release.exists():
        time.sleep(0.05)
"""


@pytest.fixture
def cache(tmp_path) -> Path:
    """A cache folder as a tiny extraction leaves it: three entries (train, val, test), their
    lock files kept."""
    root = tmp_path / "cache"
    load_split_features(tiny_digits(), RandomReLUFeatures(feature_dim=64, seed=0), str(root), torch.device("cpu"))
    return root


def entries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def locks(root: Path) -> list[str]:
    return sorted(p.name.removesuffix(".lock") for p in root.glob("*.lock"))


def cli(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().out


@contextmanager
def held(root: Path, key: str, tmp_path: Path):
    """``key``'s lock held by another process; released when the block ends (or ``release()``)."""
    release = tmp_path / f"release-{key}"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(root), key, str(release)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "holding"
        yield proc, lambda: release.touch()
    finally:
        release.touch()
        proc.wait(timeout=30)


def test_list_shows_every_entry_with_its_split_shape_and_size_on_disk(cache, capsys):
    code, out = cli(capsys, "list", "--root", str(cache))
    assert code == 0
    assert out.splitlines()[0].endswith("3 lock files (`sealab-cache clean` removes those no process holds)")
    lines = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert sorted(lines) == entries(cache)
    for key, line in lines.items():
        allocated = sum(f.stat().st_blocks * 512 for f in (cache / key).iterdir())  # what du counts
        assert size(allocated) in line and "complete" in line and "x 64" in line and "float16" in line
    assert sorted(line.split()[1:3] for line in lines.values()) == [["tiny_digits/random_features", s]
                                                                  for s in ("test", "train", "val")]
    assert size(1536) == "1.5 KiB" and size(3 * 2**30) == "3.0 GiB" and size(12) == "12 B"
    shutil.rmtree(cache / entries(cache)[0])  # by hand: its lock file stays, and is no entry
    code, out = cli(capsys, "list", "--root", str(cache))
    assert ": 2 entries" in out and "3 lock files" in out and len(out.splitlines()) == 4


def test_clean_removes_the_lock_files_no_process_holds_and_keeps_a_held_one(cache, capsys, tmp_path):
    busy, *free = locks(cache)
    with held(cache, busy, tmp_path) as (proc, _):
        code, out = cli(capsys, "clean", "--root", str(cache))
        assert locks(cache) == [busy] and entries(cache) == [busy, *free]  # entries stay
        assert code == 1 and f"left {busy}: its lock is held by pid {proc.pid}" in out
    code, out = cli(capsys, "clean", "--root", str(cache))
    assert code == 0 and locks(cache) == [] and out.strip() == f"removed {cache / (busy + '.lock')}"
    assert cli(capsys, "clean", "--root", str(cache)) == (0, "nothing to clean\n")


def test_clean_removes_what_a_killed_extraction_left_unless_its_shards_are_kept(cache, capsys):
    key = entries(cache)[0]
    (cache / f"{key}.partial").mkdir()
    (cache / f"{key}.partial" / "shard-00000.npy").write_bytes(b"x")
    (cache / f"{key}.holder.json").write_text("{}")  # its holder was killed before removing it
    (cache / key / f".features.npy.{'0' * 32}.tmp").write_bytes(b"x")
    cli(capsys, "clean", "--root", str(cache), "--keep-partial")
    assert (cache / f"{key}.partial").is_dir() and not (cache / f"{key}.holder.json").exists()
    assert sorted(p.name for p in (cache / key).iterdir()) == ["features.npy", "labels.npy", "meta.json"]
    cli(capsys, "clean", "--root", str(cache))
    assert not (cache / f"{key}.partial").exists() and (cache / key / "meta.json").is_file()


def test_remove_leaves_an_entry_being_written_or_waits_for_it(cache, capsys, tmp_path):
    key = entries(cache)[1]
    with held(cache, key, tmp_path) as (proc, release):
        code, out = cli(capsys, "remove", "--root", str(cache), key[:8])
        assert code == 1 and f"left {key}: its lock is held by pid {proc.pid}" in out and "--wait" in out
        assert key in entries(cache)
        released = threading.Event()
        threading.Timer(0.5, lambda: (release(), released.set())).start()
        code, out = cli(capsys, "remove", "--root", str(cache), key, "--wait", "60")
        assert code == 0 and released.is_set()  # it removed the entry once the holder was done
    assert key not in entries(cache) and key not in locks(cache) and not list(cache.glob(f"*{key}*"))
    assert f"removed {cache / key}" in out and len(entries(cache)) == 2


def test_remove_by_age_or_because_no_run_reads_it_again(cache, capsys):
    old, damaged, kept = entries(cache)
    month_ago = time.time() - 40 * 86400
    for f in (cache / old).iterdir():
        os.utime(f, (month_ago, month_ago))
    with (cache / damaged / "features.npy").open("r+b") as f:
        f.truncate(100)
    code, out = cli(capsys, "list", "--root", str(cache))
    assert f"{damaged}: damaged: " in out
    assert time.strftime("%Y-%m-%d", time.localtime(month_ago)) in out  # (listing it read it: no use)
    assert cli(capsys, "remove", "--root", str(cache), "--unused", "--dry-run")[1].startswith(
        f"would remove {cache / damaged}")
    assert entries(cache) == [old, damaged, kept]
    cli(capsys, "remove", "--root", str(cache), "--unused")
    assert entries(cache) == [old, kept]
    cli(capsys, "remove", "--root", str(cache), "--older-than", "30")
    assert entries(cache) == [kept]


def test_the_default_folder_is_sealab_trains_and_an_unknown_one_names_the_fix(cache, capsys, monkeypatch, tmp_path):
    root = tmp_path / "root"
    (root / "cache").mkdir(parents=True)
    cache.rename(root / "cache" / "features")
    monkeypatch.setenv("SEALAB_ROOT", str(root))
    code, out = cli(capsys, "list")
    assert code == 0 and out.startswith(f"feature cache {root / 'cache' / 'features'}: 3 entries")
    assert cli(capsys, "list", f"paths.cache_dir={root / 'cache' / 'features'}")[1] == out
    with pytest.raises(SystemExit, match=r"no feature cache at .*elsewhere.*--root DIR.*SEALAB_ROOT=DIR"):
        main(["list", f"paths.cache_dir={tmp_path / 'elsewhere'}"])
    with pytest.raises(SystemExit, match="is the start of 0 keys"):
        main(["remove", "--root", str(root / "cache" / "features"), "ffff"])


def test_the_command_is_installed_and_explains_itself():
    script = Path(sys.executable).parent / "sealab-cache"
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and all(c in proc.stdout for c in ("list", "clean", "remove", "--root"))
    proc = subprocess.run([str(script), "remove", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and all(o in proc.stdout for o in ("--older-than", "--unused", "--wait"))



def test_a_cache_this_user_may_only_read_is_listed_and_clean_says_what_it_needs(cache, capsys, monkeypatch):
    key = "0" * 24  # an extraction's shards and lock, as a job of another user leaves them
    (cache / f"{key}.partial").mkdir()
    (cache / f"{key}.lock").touch()

    @contextmanager
    def forbidden(root, key, wait=0.0):
        raise PermissionError(13, "Permission denied", str(root / f"{key}.lock"))
        yield

    monkeypatch.setattr("sealab.features.inventory.lock_if_free", forbidden)
    code, out = cli(capsys, "list", "--root", str(cache))
    assert code == 0 and f"{key}: partial: its lock cannot be checked" in out
    with pytest.raises(SystemExit, match=f"Permission denied.*need write access to {cache}"):
        main(["clean", "--root", str(cache)])
