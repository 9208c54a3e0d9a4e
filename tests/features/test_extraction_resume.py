"""A killed extraction resumes after its last finished shard: only the remaining images go through
the backbone, and the entry equals an uninterrupted extraction bit for bit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import tiny_digits

from sealab.backbones.random_features import RandomReLUFeatures
from sealab.data.base import SPLITS
from sealab.features.extract import extract_features
from sealab.features.store import load_split_features

CPU = torch.device("cpu")
SETTINGS = {"batch_size": 4, "shard_size": 7}  # shards of 8 images (rounded up to whole batches)


class Counting(RandomReLUFeatures):
    """Random ReLU features (same identity, so same cache key) that count the images they see
    and fail at batch ``fail_at``, as a crash or a kill would stop an extraction."""

    def __init__(self, fail_at: int | None = None):
        super().__init__(feature_dim=32, seed=0)
        self.fail_at, self.batches, self.images = fail_at, 0, 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.batches == self.fail_at:
            raise RuntimeError("extraction stopped")
        self.batches, self.images = self.batches + 1, self.images + len(images)
        return super().forward(images)


def finished_shards(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.glob("*.partial/shard-*.json"))


def check_resumed_equals_uninterrupted(cache: Path, tmp_path: Path, already_done: int) -> None:
    dataset, resumed = tiny_digits(), Counting()
    features = load_split_features(dataset, resumed, cache, CPU, **SETTINGS)
    assert resumed.images == 3 * 40 - already_done  # the finished shards were not extracted again
    assert not list(cache.glob("*.partial"))
    whole = load_split_features(dataset, Counting(), tmp_path / "uninterrupted", CPU, **SETTINGS)
    for split in SPLITS:
        x, y = features.splits[split]
        assert torch.equal(x, whole.splits[split][0]) and torch.equal(y, whole.splits[split][1])
        # and both equal the plain in-memory extraction, rounded to the cache's float16
        plain, targets = extract_features(Counting(), dataset.split(split), CPU, batch_size=4)
        assert torch.equal(x, plain.half().float()) and torch.equal(y, targets)


def test_an_extraction_stopped_by_an_error_resumes_after_its_last_finished_shard(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="extraction stopped"):
        load_split_features(tiny_digits(), Counting(fail_at=5), cache, CPU, **SETTINGS)
    # 5 batches of 4 = 20 train images went through: shards 0-1 (16 rows) are finished, 4 rows were lost
    assert finished_shards(cache) == ["shard-00000.json", "shard-00001.json"]
    check_resumed_equals_uninterrupted(cache, tmp_path, already_done=16)


# The child imports this module by its file name (it broke once when the file was renamed).
KILLED = """
import sys, time
sys.path.insert(0, sys.argv[2])
import torch
from helpers import tiny_digits
from {module} import SETTINGS, Counting
from sealab.features.store import load_split_features

# Extracts 5 batches (shards 0-1 written, 4 rows of shard 2 in memory), then hangs until killed:
# where the kill lands does not depend on how fast the machine is.
class Stuck(Counting):
    def forward(self, images):
        if self.batches == 5:
            time.sleep(3600)
        return super().forward(images)

load_split_features(tiny_digits(), Stuck(), sys.argv[1], torch.device("cpu"), **SETTINGS)
"""


@pytest.mark.slow  # a second Python process importing torch: ~5 s idle, much more on a busy machine
def test_an_extraction_killed_with_sigkill_resumes_after_its_last_finished_shard(tmp_path):
    cache = tmp_path / "cache"
    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent), str(here)])}
    child = KILLED.format(module=Path(__file__).stem)
    errors = tmp_path / "child.stderr"
    with errors.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", child, str(cache), str(here.parent)], env=env,
                                stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 120
    while len(finished_shards(cache)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = finished_shards(cache)
    assert proc.returncode == -signal.SIGKILL, errors.read_text()  # killed, not dead of its own error
    assert done == ["shard-00000.json", "shard-00001.json"]  # killed inside the train split
    check_resumed_equals_uninterrupted(cache, tmp_path, already_done=16)
