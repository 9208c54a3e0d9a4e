"""The one error a missing or incomplete dataset gives: where we looked, what was missing, the fix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

MAX_LISTED = 8  # a VOC copy without its ImageSets misses 80 files; name a few, count the rest


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are absent, incomplete or rejected by torchvision's checks."""

    def __init__(self, name: str, root: Path, missing: Sequence[str], layout: str, how_to_get: str,
                 problem: str | None = None):
        self.name, self.root, self.missing = name, Path(root), list(missing)
        listed = ", ".join(self.missing[:MAX_LISTED])
        if len(self.missing) > MAX_LISTED:
            listed += f" and {len(self.missing) - MAX_LISTED} more"
        lines = [f"dataset {name!r} not found or incomplete at {self.root}."]
        if self.missing:
            lines.append(f"Missing (relative to that root): {listed}.")
        if problem:
            lines.append(f"Problem: {problem}")
        lines += [f"Expected layout: {layout}", f"How to get it: {how_to_get}",
                  "Or point dataset.root=/path/to/copy at an existing copy."]
        super().__init__("\n".join(lines))

    def __repr__(self) -> str:
        # Hydra reports a failed instantiate with repr(error): keep the lines readable there.
        return f"{type(self).__name__}: {self}"


def missing_paths(root: Path, expected: Sequence[str]) -> list[str]:
    """Those of ``expected`` (paths relative to ``root``; a trailing / means a folder) that are absent."""
    missing = []
    for rel in expected:
        path = root / rel
        ok = path.is_dir() if rel.endswith("/") else path.is_file()
        if not ok:
            missing.append(rel)
    return missing
