"""Cost against n: one clean-SeA epoch streamed from a float16 ``.npy`` of n synthetic features
for growing n, its seconds and peak resident memory, how close time is to linear in n, and how
far each epoch is from the arithmetic floor (its multiply-adds at this device's matmul rate)."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.lib import format as npy_format

from sealab.bench.measure import Setup, floor_macs
from sealab.bench.sealab_runs import sealab_epoch_seconds
from sealab.features.ondisk import NpyRows, StreamedFeatures
from sealab.heads.normalize import FeatureNormalizer

log = logging.getLogger(__name__)

PROC_STATUS = Path("/proc/self/status")


@dataclass(frozen=True)
class ScalingSetup:
    sizes: tuple[int, ...] = (20_000, 80_000, 320_000)
    d: int = 2048
    num_classes: int = 1000
    batch_size: int = 256
    block_rows: int = 16384  # conf/train.yaml's features.block_rows and chunk_rows
    chunk_rows: int = 256
    seed: int = 0


SCALING_QUICK = ScalingSetup(sizes=(1000, 2000, 4000), d=64, num_classes=10, block_rows=512, chunk_rows=128)


def write_features(path: Path, n: int, d: int, seed: int, chunk_rows: int = 16384) -> Path:
    """An n x d float16 ``.npy`` of N(0, 1) rows, written chunk by chunk (never n x d in memory)."""
    gen = np.random.default_rng(seed)
    with path.open("wb") as f:
        npy_format.write_array_header_1_0(f, {"descr": npy_format.dtype_to_descr(np.dtype(np.float16)),
                                              "fortran_order": False, "shape": (n, d)})
        for start in range(0, n, chunk_rows):
            f.write(gen.standard_normal((min(chunk_rows, n - start), d), dtype=np.float32)
                    .astype(np.float16).tobytes())
    return path


def peak_rss_mib() -> float | None:
    """This process's peak resident memory (VmHWM), or None where /proc is missing."""
    try:
        status = PROC_STATUS.read_text()
    except OSError:
        return None
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def reset_peak_rss() -> float | None:
    """Sets the peak back to the current resident size (Linux >= 4.0) and returns it; None when
    the kernel refuses (then peaks include everything before)."""
    try:
        PROC_STATUS.with_name("clear_refs").write_text("5")
    except OSError:
        return None
    return peak_rss_mib()


def matmul_flops(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a square float32 matmul on ``device``, the fastest of ``repeats`` (a busy spell
    only slows some): the rate the floor is counted at."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def linearity(sizes: list[int], seconds: list[float]) -> dict[str, float]:
    """Least-squares line of seconds against n (slope as seconds per 10k rows), its R^2, and the
    per-row time at the largest n over that at the smallest (1 for a cost proportional to n)."""
    n, s = np.asarray(sizes, dtype=float), np.asarray(seconds, dtype=float)
    slope, intercept = np.polyfit(n, s, 1)
    residual = float(((s - (slope * n + intercept)) ** 2).sum())
    total = float(((s - s.mean()) ** 2).sum())
    return {"seconds_per_10k_rows": float(slope * 1e4), "intercept_seconds": float(intercept),
            "r2": 1.0 - residual / total if total > 0 else 1.0,
            "per_row_largest_over_smallest": float((s[-1] / n[-1]) / (s[0] / n[0]))}


def _epoch(data: StreamedFeatures, setup: ScalingSetup, device: torch.device) -> float:
    # SeA's heads alone, as its floor counts them (no control head)
    return sealab_epoch_seconds(["method=sea", "method.control=false"], data, setup.num_classes, setup.batch_size,
                                epochs=1, device=device)[0]


def measure_scaling(setup: ScalingSetup) -> dict:
    """Per n: the CPU epoch's seconds, its floor and the peak resident memory (absolute, and its
    growth during the epoch); with CUDA, the GPU epoch and its floor too. The files live in a
    temporary directory, each deleted once measured."""
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rates = {d.type: matmul_flops(d) for d in devices}
    runs = []
    with tempfile.TemporaryDirectory(prefix="sealab-scaling-") as root:
        # A first, small epoch absorbs one-off start-up costs; it is not reported.
        for i, n in enumerate((2 * setup.batch_size, *setup.sizes)):
            path = write_features(Path(root) / f"features_{n}.npy", n, setup.d, setup.seed + n)
            rows = NpyRows(path)
            targets = torch.from_numpy(np.random.default_rng(setup.seed).integers(setup.num_classes, size=n))
            data = StreamedFeatures(rows, targets, setup.block_rows, setup.chunk_rows,
                                    FeatureNormalizer("l2").fit_rows(rows, setup.block_rows).normalize_)
            start_rss = reset_peak_rss()
            run = {"n": n, "file_gib": path.stat().st_size / 2**30}
            floor = 2 * floor_macs(Setup(n=n, d=setup.d, num_classes=setup.num_classes,
                                         batch_size=setup.batch_size))["sea_clean"] * -(-n // setup.batch_size)
            for device in devices:
                seconds = _epoch(data, setup, device)
                run[f"{device.type}_epoch_seconds"] = seconds
                run[f"{device.type}_floor_seconds"] = floor / rates[device.type]
                run[f"{device.type}_over_floor"] = seconds * rates[device.type] / floor
                log.info("scaling: n=%d on %s: %.1f s an epoch", n, device.type, seconds)
                if device.type == "cpu":
                    peak = peak_rss_mib()
                    run["peak_rss_mib"] = peak
                    run["rss_growth_mib"] = None if start_rss is None or peak is None else peak - start_rss
            path.unlink()
            if i:
                runs.append(run)
    sizes = [r["n"] for r in runs]
    return {"setup": asdict(setup), "matmul_flops": rates, "runs": runs,
            **{device.type: linearity(sizes, [r[f"{device.type}_epoch_seconds"] for r in runs])
               for device in devices}}
