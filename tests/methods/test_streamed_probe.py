"""The SGD probe on a training split streamed from a .npy file: the same weights as in memory
given the same order, and resident memory bounded by the block, not the file."""

import json
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import torch
from helpers import fit_context

from sealab.augment.sea import SeA
from sealab.features.ondisk import NpyRows, StreamedFeatures
from sealab.heads.linear import LinearHead
from sealab.heads.normalize import FeatureNormalizer
from sealab.methods.probe import LinearProbe


def sea_probe(epochs=3):
    return LinearProbe("sea", head=partial(LinearHead), epochs=epochs, batch_size=16,
                       optimizer=partial(torch.optim.SGD, lr=0.5, momentum=0.9), augmenter=SeA(eta=0.3))


def blob_file(path, n=150, d=12, classes=4, seed=0):
    gen = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = (gen.normal(size=(classes, d))[y] * 2 + gen.normal(size=(n, d)) + 1).astype(np.float16)
    np.save(path, x)
    return torch.from_numpy(y)


def fit(train, val):
    L.seed_everything(0)
    return sea_probe().fit(train, val, fit_context(num_classes=4)).scorer.weight


def test_one_block_streamed_equals_in_memory(tmp_path):
    """block_rows >= n: the streamed order is the in-memory permutation (randperm), so SeA training gives
    bit-identical weights; smaller blocks change only the order (and still learn)."""
    y = blob_file(tmp_path / "train.npy")
    rows = NpyRows(tmp_path / "train.npy")
    x = torch.from_numpy(np.load(tmp_path / "train.npy")).float()
    norm = FeatureNormalizer("center_l2").fit(x)
    x = norm(x)
    in_memory = fit((x, y), (x, y))
    streamed = fit(StreamedFeatures(rows, y, block_rows=len(y), transform=norm.normalize_), (x, y))
    assert torch.equal(streamed, in_memory)
    blocks = fit(StreamedFeatures(rows, y, block_rows=32, transform=norm.normalize_), (x, y))
    assert not torch.equal(blocks, in_memory)
    assert ((x @ blocks.T).argmax(1) == y).float().mean() > 0.9


RSS_SCRIPT = textwrap.dedent("""
    import json, sys
    from functools import partial
    from pathlib import Path
    import numpy as np, torch
    torch.set_num_threads(1)  # tiny steps: other threads only wait for each other
    sys.path.insert(0, sys.argv[2])
    from helpers import fit_context
    from sealab.features.ondisk import NpyRows, StreamedFeatures
    from sealab.heads.linear import LinearHead
    from sealab.heads.normalize import FeatureNormalizer
    from sealab.methods.probe import LinearProbe

    def peak_mib():
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024

    def reset_peak():  # VmHWM back to the current resident size (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
        return peak_mib()

    def fit(train):
        probe = LinearProbe("linear", head=partial(LinearHead), epochs=1, batch_size=1024,
                            optimizer=partial(torch.optim.SGD, lr=0.5))
        probe.fit(train, None, fit_context(num_classes=10))

    path = Path(sys.argv[1])
    y = torch.from_numpy(np.load(path.with_name("labels.npy")))
    warm = path.with_name("warm.npy")  # a first fit makes Lightning's and torch's one-off allocations
    np.save(warm, np.load(path, mmap_mode="r")[:512])
    fit(StreamedFeatures(NpyRows(warm), y[:512], block_rows=256))
    rows = NpyRows(path)
    norm = FeatureNormalizer("center_l2").fit_rows(rows, block_rows=2048)
    streamed = StreamedFeatures(rows, y, block_rows=2048, transform=norm.normalize_)
    base = reset_peak()
    fit(streamed)
    stream_growth = peak_mib() - base
    base = reset_peak()
    loaded = norm(torch.from_numpy(np.load(path)).float())  # what in-memory training starts from
    print(json.dumps({"streamed": stream_growth, "loaded": peak_mib() - base}))
""")


def test_streaming_a_file_larger_than_the_budget_keeps_memory_bounded(tmp_path):
    """64k x 256 float16 rows: 32 MiB on disk, 64 MiB as float32 in memory. Streamed by blocks
    of 2048 rows (3 MiB of buffers), one epoch must grow the peak resident memory by less
    than the 16 MiB budget; loading the same file does not (so the measurement can fail)."""
    budget_mib, n, d = 16, 64_000, 256
    gen = np.random.default_rng(0)
    np.save(tmp_path / "features.npy", gen.normal(size=(n, d)).astype(np.float16))
    np.save(tmp_path / "labels.npy", gen.integers(10, size=n))
    assert n * d * 4 / 2**20 > 3 * budget_mib
    proc = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(tmp_path / "features.npy"),
                           str(Path(__file__).resolve().parents[1])],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    growth = json.loads(proc.stdout.strip().splitlines()[-1])
    assert growth["streamed"] < budget_mib, growth
    assert growth["loaded"] > n * d * 4 / 2**20, growth
