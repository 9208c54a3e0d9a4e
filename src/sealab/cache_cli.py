"""``sealab-cache``: what the feature cache holds, and its safe clean-up.

    sealab-cache list                      entries: dataset/backbone split, status, size, last used
    sealab-cache clean                     lock files no process holds, leftovers of dead extractions
    sealab-cache remove KEY...             entries by key (or a unique start of one)
    sealab-cache remove --older-than 30    entries last used more than 30 days ago
    sealab-cache remove --unused           entries no run reads again (old format, damaged)

The cache folder is sealab-train's (``paths.cache_dir``: ``$SEALAB_ROOT/cache/features``, or
what ``local=<name>`` sets), composed from the same configs; ``--root DIR`` names another, and
``key=value`` arguments are sealab-train overrides (``local=me``, ``paths.cache_dir=/x``).
Nothing another process is writing is touched: each key is cleaned or removed while holding
its lock."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

GiB, MiB, KiB = 2**30, 2**20, 2**10


def size(n: int) -> str:
    for unit, name in ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if n >= unit:
            return f"{n / unit:.1f} {name}"
    return f"{n} B"


def cache_folder(root: str | None, overrides: list[str]) -> Path:
    """``--root``, else sealab-train's ``paths.cache_dir`` under these overrides; a folder that is
    not there stops the command with how it was found and how to name another."""
    if root is not None:
        folder, found = Path(root).expanduser(), "--root"
    else:
        from hydra import compose, initialize_config_module

        from sealab.train import CONFIG_MODULE

        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            cfg = compose("train", overrides=overrides)
        folder = Path(cfg.paths.cache_dir).expanduser()
        found = f"sealab-train's paths.cache_dir{' with ' + ' '.join(overrides) if overrides else ''}"
    if not folder.is_dir():
        raise SystemExit(f"sealab-cache: no feature cache at {folder.resolve()} ({found}, from {Path.cwd()}). "
                         "Name the folder with --root DIR, or set it as for sealab-train: SEALAB_ROOT=DIR "
                         "(the cache is DIR/cache/features), paths.cache_dir=DIR or local=<name>.")
    return folder


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)


def list_entries(folder: Path) -> int:
    from sealab.features.inventory import inventory

    entries = inventory(folder)
    locks = sorted(folder.glob("*.lock"))
    print(f"feature cache {folder.resolve()}: {len(entries)} entries, {size(sum(e.bytes for e in entries))} on disk"
          + (f", {len(locks)} lock files (`sealab-cache clean` removes those no process holds)" if locks else ""))
    if not entries:
        return 0
    rows = [["KEY", "DATASET/BACKBONE SPLIT", "STATUS", "ROWS x DIM", "DTYPE", "SIZE", "LAST USED"]]
    for e in entries:
        shape = " x ".join(map(str, e.shape)) if e.shape else "-"
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used)) if e.last_used else "-"
        rows.append([e.key, e.describe(), e.status, shape, e.dtype or "-", size(e.bytes), used])
    print(_table(rows))
    for e in entries:
        if e.detail:
            print(f"{e.key}: {e.status}: {e.detail}")
    return 0


def _report(outcome, dry_run: bool, what: str) -> int:
    verb = "would remove" if dry_run else "removed"
    for path in outcome.removed:
        print(f"{verb} {path}")
    for key, who in outcome.busy.items():
        print(f"left {key}: its lock is held by {who}, which is writing it; run again once it is done"
              + (" (or give --wait SECONDS)" if what == "remove" else ""))
    if not outcome.removed and not outcome.busy:
        print(f"nothing to {what}")
    return 1 if outcome.busy else 0


def _chosen(folder: Path, args: argparse.Namespace, keys: list[str]) -> list[str]:
    """The keys ``remove`` was asked for: by key or a unique start of one, or by age, or unused."""
    from sealab.features import inventory

    if bool(keys) + (args.older_than is not None) + args.unused != 1:
        raise SystemExit("sealab-cache remove: give entry keys, or --older-than DAYS, or --unused (one of them); "
                         "`sealab-cache list` shows the keys")
    if args.older_than is not None:
        return inventory.older_than(inventory.inventory(folder), args.older_than)
    if args.unused:
        return inventory.unused(inventory.inventory(folder))
    present, chosen = inventory.keys(folder), []
    for start in keys:
        matches = [k for k in present if k.startswith(start)]
        if len(matches) != 1:
            raise SystemExit(f"sealab-cache remove: {start!r} is the start of {len(matches)} keys in {folder} "
                             f"({', '.join(matches[:5]) or 'none'}); `sealab-cache list` shows them")
        chosen += matches
    return chosen


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", metavar="DIR", help="the feature cache folder (default: sealab-train's "
                        "paths.cache_dir, $SEALAB_ROOT/cache/features)")
    common.add_argument("args", nargs="*", metavar="key=value",
                        help="sealab-train overrides that place the cache (local=me, paths.cache_dir=DIR)")
    doc = __doc__.replace("``", "")
    top = argparse.ArgumentParser(prog="sealab-cache", description=doc.split("\n\n")[0],
                                  formatter_class=argparse.RawDescriptionHelpFormatter,
                                  epilog="\n\n".join(doc.split("\n\n")[1:]))
    commands = top.add_subparsers(dest="command", required=True, metavar="{list,clean,remove}")
    commands.add_parser("list", parents=[common], help="entries with dataset/backbone, split, status, size on "
                        "disk and last use")
    clean = commands.add_parser("clean", parents=[common], help="remove lock files no process holds and what "
                                "dead extractions left (holder records, temp files, partial shards)")
    clean.add_argument("--keep-partial", action="store_true", help="keep the shards of killed extractions (the "
                       "same sealab-train command resumes from them)")
    clean.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    remove = commands.add_parser("remove", parents=[common], help="remove entries (key arguments: keys, or "
                                 "unique starts of keys)")
    remove.add_argument("--older-than", type=float, metavar="DAYS", help="entries last used more than DAYS ago")
    remove.add_argument("--unused", action="store_true", help="entries no run reads again: an older cache "
                        "format, or damaged")
    remove.add_argument("--wait", type=float, default=0.0, metavar="SECONDS", help="wait this long for an "
                        "entry another process is writing (default: leave it)")
    remove.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    overrides = [a for a in args.args if "=" in a]
    others = [a for a in args.args if "=" not in a]
    if others and args.command != "remove":
        raise SystemExit(f"sealab-cache {args.command}: unexpected {' '.join(others)} (overrides are key=value)")
    folder = cache_folder(args.root, overrides)
    if args.command == "list":
        return list_entries(folder)
    from sealab.features import inventory

    try:
        if args.command == "clean":
            return _report(inventory.clean(folder, args.keep_partial, args.dry_run), args.dry_run, "clean")
        chosen = _chosen(folder, args, others)
        return _report(inventory.remove(folder, chosen, args.wait, args.dry_run), args.dry_run, "remove")
    except PermissionError as err:
        raise SystemExit(f"sealab-cache {args.command}: {err}. Taking a key's lock and removing files need write "
                         f"access to {folder}: run it as a user who may write there.") from None


if __name__ == "__main__":
    sys.exit(main())
