"""``make mutants``: mutation testing of sealab's numeric and bookkeeping core, written up as
docs/mutants.md: killed / survived / timeout per module, the score, and every survivor either
explained as equivalent (tools/mutants_equivalent.toml) or listed as still to kill.

mutmut's own configuration (the files it mutates, the tests it runs) is ``[tool.mutmut]`` in
pyproject.toml. Run from the repository root: ``python tools/mutants.py [--report-only]``.
The exit status is 1 when a survivor is neither killed nor explained, or the score is below
``TARGET``, so the target doubles as a check.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import os
import subprocess
import sys
import tomllib
from collections import Counter
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTMUT = Path(sys.executable).with_name("mutmut")
EQUIVALENT = ROOT / "tools" / "mutants_equivalent.toml"
TARGET = 0.90
SEPARATOR = "ǁ"  # mutmut's mark between a class and its method in a mutant's name
# mutmut's verdicts, as `mutmut results` prints them, in the columns of the table, and
# "equivalent": a survivor explained in EQUIVALENT.
COLUMNS = ("killed", "survived", "equivalent", "timeout", "no tests")


@dataclass(frozen=True)
class Mutant:
    name: str  # e.g. sealab.augment.mixup.xǁMixupǁplan__mutmut_48
    status: str

    @property
    def module(self) -> str:
        return self.name.rpartition(".")[0]

    @property
    def function(self) -> str:
        """The mutated function as Python names it: sealab.augment.mixup.Mixup.plan
        (mutmut mangles a function f to x_f, a method C.f to xǁCǁf)."""
        mangled = self.name.rpartition(".")[2].partition("__mutmut_")[0]
        return f"{self.module}.{mangled[2:].replace(SEPARATOR, '.')}"


def mutmut(*args: str) -> str:
    return subprocess.run([str(MUTMUT), *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def results() -> list[Mutant]:
    """Every mutant with mutmut's verdict (lines ``    <name>: <status>``)."""
    mutants = []
    for line in mutmut("results", "--all", "true").splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            mutants.append(Mutant(name, status))
    return mutants


@cache
def generated_functions(module: str) -> dict[str, list[str]]:
    """The source lines of every function mutmut generated for ``module`` (the original copy
    ``<f>__mutmut_orig`` and each mutant ``<f>__mutmut_<n>``), read from its mutants/ copy."""
    source = (ROOT / "mutants" / "src" / (module.replace(".", "/") + ".py")).read_text()
    lines = source.splitlines()
    return {node.name: lines[node.lineno - 1:node.end_lineno]
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef) and "__mutmut_" in node.name}


def mutation(mutant: Mutant) -> tuple[str, str]:
    """The lines the mutant changes, before and after, each joined into one line."""
    generated = mutant.name.rpartition(".")[2]
    original = generated.partition("__mutmut_")[0] + "__mutmut_orig"
    functions, plain = generated_functions(mutant.module), mutant.function.rpartition(".")[2]
    before = [line.replace(original, plain) for line in functions[original]]
    after = [line.replace(generated, plain) for line in functions[generated]]
    diff = list(difflib.unified_diff(before, after, lineterm="", n=0))
    removed = [l[1:].strip() for l in diff if l.startswith("-") and not l.startswith("---")]
    added = [l[1:].strip() for l in diff if l.startswith("+") and not l.startswith("+++")]
    return " ".join(removed), " ".join(added)


def module_path(module: str) -> str:
    return module.removeprefix("sealab.").replace(".", "/") + ".py"


def group(path: str) -> str:
    """The unit the target applies to: augment/ as a whole, every other module alone."""
    return "augment/" if path.startswith("augment/") else path


def killed_share(counts: Counter) -> float:
    return counts["killed"] / max(sum(counts.values()), 1)


def killed_share_of_killable(counts: Counter) -> float:
    """The usual mutation score: equivalent mutants (which no test can kill) left out."""
    return counts["killed"] / max(sum(counts.values()) - counts["equivalent"], 1)


def counts_by(key, mutants: list[Mutant]) -> dict[str, Counter]:
    counted: dict[str, Counter] = {}
    for m in mutants:
        counted.setdefault(key(module_path(m.module)), Counter())[m.status] += 1
    return counted


def table(mutants: list[Mutant]) -> list[str]:
    lines = ["| module | mutants | " + " | ".join(COLUMNS) + " | score | score without equivalents |",
             "|---" * (len(COLUMNS) + 4) + "|"]

    def row(label: str, counts: Counter) -> str:
        cells = [str(counts[c]) for c in COLUMNS]
        scores = f" | {killed_share(counts):.1%} | {killed_share_of_killable(counts):.1%} |"
        return f"| {label} | {sum(counts.values())} | " + " | ".join(cells) + scores

    by_module, by_group = counts_by(lambda p: p, mutants), counts_by(group, mutants)
    for path in sorted(by_module):
        lines.append(row(f"`{path}`", by_module[path]))
        if path.startswith("augment/") and not any(p > path and p.startswith("augment/") for p in by_module):
            lines.append(row("**augment/ (all)**", by_group["augment/"]))
    lines.append(row("**total**", sum(by_module.values(), Counter())))
    return lines


def short_of_target(mutants: list[Mutant]) -> list[str]:
    return [g for g, counts in counts_by(group, mutants).items() if killed_share(counts) < TARGET]


def load_equivalents() -> dict[tuple[str, str], str]:
    """(function, mutated line) -> why the mutant cannot change any result."""
    entries = tomllib.loads(EQUIVALENT.read_text())["equivalent"]
    return {(e["function"], e["mutant"]): e["reason"] for e in entries}


def escape(text: str) -> str:
    return text.replace("|", "\\|")


def report(mutants: list[Mutant]) -> tuple[str, int]:
    """The Markdown report and the number of unexplained survivors. ``mutants`` come back with
    the explained survivors' status set to "equivalent"."""
    equivalents = load_equivalents()
    explained, unexplained = [], []
    for m in sorted((m for m in mutants if m.status in ("survived", "no tests")), key=lambda m: m.name):
        before, after = mutation(m)
        reason = equivalents.get((m.function, after))
        (explained if reason else unexplained).append((m, before, after, reason))
    equivalent = {m.name for m, *_ in explained}
    mutants[:] = [Mutant(m.name, "equivalent") if m.name in equivalent else m for m in mutants]
    lines = [
        "# Mutation testing of the numeric and bookkeeping core",
        "",
        f"Written by `make mutants` (tools/mutants.py) with mutmut {version('mutmut')}; "
        "configuration: `[tool.mutmut]` in pyproject.toml.",
        "mutmut changes one operator, constant or argument at a time inside a function; each mutant runs "
        "the tests that reached that function (recorded in one plain run of the tests listed in "
        "`pytest_add_cli_args_test_selection`) and is **killed** when one of them fails. "
        "**score** = killed / mutants: survivors, equivalent ones included, and timeouts count against it; "
        "**score without equivalents** = killed / (mutants - equivalent), the usual mutation score.",
        "",
        *table(mutants),
        "",
        f"Target: at least {TARGET:.0%} killed in augment/ and in each other module; every survivor "
        "is equivalent (below) or still to kill.",
        "",
        f"## Equivalent survivors ({len(explained)})",
        "",
        "Mutants no test can kill because they compute the same result as the original "
        "(reasons kept in tools/mutants_equivalent.toml).",
        "",
        "| function | original | mutant | why it is equivalent |",
        "|---|---|---|---|",
        *(f"| `{m.function}` | `{escape(b)}` | `{escape(a)}` | {escape(r)} |" for m, b, a, r in explained),
        "",
        f"## Survivors still to kill ({len(unexplained)})",
        "",
    ]
    if unexplained:
        lines += ["| mutant | original | mutant |", "|---|---|---|"]
        lines += [f"| `{m.name}` | `{escape(b)}` | `{escape(a)}` |" for m, b, a, _ in unexplained]
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n", len(unexplained)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "mutants.md")
    parser.add_argument("--report-only", action="store_true", help="write up the last run, run nothing")
    args = parser.parse_args()
    if not args.report_only:
        # One child: the machine's cores are shared. mutmut resumes where it stopped and
        # re-tests only the functions that changed since.
        # One OpenMP thread: mutmut forks a child per mutant from a process that ran torch, and
        # a child forked after OpenMP started its threads can hang (counted as a timeout).
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        subprocess.run([str(MUTMUT), "run", "--max-children", "1"], cwd=ROOT, env=env, check=True)
    mutants = results()
    text, unexplained = report(mutants)
    args.out.write_text(text)
    short = short_of_target(mutants)
    print(f"{args.out}: {unexplained} survivor(s) unexplained; below {TARGET:.0%} killed: {', '.join(short) or 'none'}")
    return 1 if unexplained or short else 0


if __name__ == "__main__":
    sys.exit(main())
