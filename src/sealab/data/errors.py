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


class DatasetChecksumError(ValueError):
    """A dataset's files are all present, but some fail the checksum of the official release
    (torchvision's integrity check: CIFAR, Flowers-102): corrupted, truncated or another version."""

    def __init__(self, name: str, root: Path, corrupted: Sequence[tuple[str, str]], how_to_get: str):
        self.name, self.root, self.corrupted = name, Path(root), list(corrupted)
        listed = ", ".join(f"{rel} (expected md5 {md5})" for rel, md5 in self.corrupted[:MAX_LISTED])
        if len(self.corrupted) > MAX_LISTED:
            listed += f" and {len(self.corrupted) - MAX_LISTED} more"
        lines = [(f"dataset {name!r} at {self.root}: the files are present but their checksum does not match "
                  "the official release (corrupted, truncated by an interrupted download, or another version)."),
                 f"Failing files (relative to that root): {listed}.",
                 ("To fix: delete those files and rerun with dataset.download=true to download them again, "
                  f"or replace them with a good copy. How to get it: {how_to_get}"),
                 "Or point dataset.root=/path/to/copy at an intact copy."]
        super().__init__("\n".join(lines))

    def __repr__(self) -> str:
        return f"{type(self).__name__}: {self}"
