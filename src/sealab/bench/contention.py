"""How much of the machine other processes used while we measured (Linux: /proc/stat).

Timings from a shared machine mean little: with torch's default one thread per core, a
single competing process can stall every parallel op (threads wait for a descheduled peer).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PROC_STAT = Path("/proc/stat")


def _machine_busy_seconds() -> float | None:
    """CPU seconds spent by all processes since boot (None where /proc/stat is missing)."""
    try:
        fields = PROC_STAT.read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class OtherProcessesShare:
    """Context manager; after the block, ``seconds`` is the CPU time *other* processes used
    during it and ``share`` that time as a fraction of all cores (0 = we had the machine to
    ourselves). Both are None where /proc/stat is missing."""

    def __enter__(self) -> OtherProcessesShare:
        self.seconds: float | None = None
        self.share: float | None = None
        self._start = (_machine_busy_seconds(), time.process_time(), time.perf_counter())
        return self

    def __exit__(self, *exc) -> None:
        busy0, own0, wall0 = self._start
        busy1 = _machine_busy_seconds()
        if busy0 is None or busy1 is None:
            return
        self.seconds = max((busy1 - busy0) - (time.process_time() - own0), 0.0)
        capacity = (time.perf_counter() - wall0) * (os.cpu_count() or 1)
        self.share = min(self.seconds / capacity, 1.0)
