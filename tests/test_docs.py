"""Every test the docs cite as proof (`tests/<file>.py::<test>` in README.md or docs/*.md) runs
in CI: pytest collects it under the project's own options (the ones `make test` uses, so a
deselected slow test counts as missing) and no skip, true skipif or xfail mark stops it."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# A node id in backquotes; a parametrized one may carry any text in its brackets.
CITED = re.compile(r"`(tests/[\w/.-]+\.py::[^`\s]+)`")

# Loaded into the collecting pytest: for each collected test, why it would not run (None: it runs).
PLUGIN = r'''
import inspect, json, os
import pytest

def _stopped(item):
    for mark in item.iter_markers("skip"):
        return "marked skip"
    for mark in item.iter_markers("skipif"):
        conditions = mark.args or (mark.kwargs.get("condition"),)
        if any(isinstance(c, str) or c for c in conditions):
            return f"marked skipif({conditions}), {mark.kwargs.get('reason', '')}"
    for mark in item.iter_markers("xfail"):
        return "marked xfail: a failure would not fail CI"
    try:
        body = inspect.getsource(item.function)
    except (OSError, TypeError):
        return None
    if "pytest.skip(" in body or "importorskip(" in body:
        return "its body may skip"
    return None

@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    with open(os.environ["CITED_TESTS_REPORT"], "w") as out:
        json.dump({item.nodeid: _stopped(item) for item in items}, out)
'''


def cited_tests() -> list[str]:
    return sorted({node for doc in DOCS for node in CITED.findall(doc.read_text())})


def matches(cited: str, collected: str) -> bool:
    """A cited id without parameters stands for all its parametrized cases."""
    return collected == cited or ("[" not in cited and collected.startswith(cited + "["))


def test_the_docs_cite_tests_and_the_parser_sees_parametrized_ids():
    assert len(cited_tests()) > 40  # docs/reliability.md cites one test or more per fault
    assert CITED.findall("`tests/a.py::test_b[x-0.5]` and `tests/c/d.py::TestE::test_f`") == \
        ["tests/a.py::test_b[x-0.5]", "tests/c/d.py::TestE::test_f"]
    assert matches("tests/a.py::test_b", "tests/a.py::test_b[x-0.5]")
    assert not matches("tests/a.py::test_b", "tests/a.py::test_bc")
    assert not matches("tests/a.py::test_b[x]", "tests/a.py::test_b[y]")


def collect(files: list[str], root: Path, work: Path) -> tuple[dict[str, str | None], str]:
    """pytest's collection of ``files`` under ``root``'s config: each test's node id and why it
    would not run (None: it runs), and the collection errors."""
    (work / "cited_tests_plugin.py").write_text(PLUGIN)
    report = work / "report.json"
    env = {**os.environ, "CITED_TESTS_REPORT": str(report),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(work), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "-p", "cited_tests_plugin", "--continue-on-collection-errors", *files],
                          cwd=root, env=env, capture_output=True, text=True)
    errors = proc.stdout[proc.stdout.find("= ERRORS ="):] if "= ERRORS =" in proc.stdout else ""
    return json.loads(report.read_text()), errors


def test_a_skipped_or_xfail_test_is_seen(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.pytest.ini_options]\naddopts = "-m \'not slow\'"\n'
                                             'markers = ["slow: slow"]\n')
    (tmp_path / "test_x.py").write_text("""
import sys
import pytest

def test_runs(): pass
@pytest.mark.skip(reason="no")
def test_skip(): pass
@pytest.mark.skipif(sys.platform != "nowhere", reason="never here")
def test_skipif(): pass
@pytest.mark.skipif(False, reason="not today")
def test_skipif_false(): pass
@pytest.mark.xfail
def test_xfail(): pass
@pytest.mark.parametrize("p", [1, pytest.param(2, marks=pytest.mark.skip)])
def test_param(p): pass
def test_body_skips(): pytest.skip("later")
@pytest.mark.slow
def test_deselected(): pass
""")
    work = tmp_path / "work"
    work.mkdir()
    collected, errors = collect(["test_x.py"], tmp_path, work)
    assert not errors
    runs = {node.split("::")[1]: why is None for node, why in collected.items()}
    assert runs == {"test_runs": True, "test_skip": False, "test_skipif": False, "test_skipif_false": True,
                    "test_xfail": False, "test_param[1]": True, "test_param[2]": False, "test_body_skips": False}


@pytest.mark.slow  # imports every cited test file in a second pytest: ~10 s idle
def test_every_test_the_docs_cite_is_collected_and_not_skipped(tmp_path):
    cited = cited_tests()
    files = sorted({node.split("::")[0] for node in cited})
    assert not [f for f in files if not (REPO / f).is_file()]
    collected, errors = collect(files, REPO, tmp_path)
    problems = {}
    for node in cited:
        cases = [c for c in collected if matches(node, c)]
        if not cases:
            problems[node] = "not collected"
        for case in cases:
            if collected[case]:
                problems[case] = collected[case]
    assert not problems, f"{json.dumps(problems, indent=1)}\n{errors[-3000:]}"
