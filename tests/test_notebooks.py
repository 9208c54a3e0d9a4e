"""The analysis notebook runs top to bottom on a sweep folder."""

import json

import nbformat
from helpers import REPO
from nbclient import NotebookClient


def test_results_notebook_executes_on_a_sweep(tmp_path, monkeypatch):
    for i, (method, seed, value) in enumerate([("linear", 0, 0.9), ("linear", 1, 0.92), ("sea", 0, 0.95)]):
        run = tmp_path / "sweep" / str(i)
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({
            "dataset": "digits", "backbone": "random_features", "method": method, "seed": seed,
            "metrics": {"test/top1": value, "val/top1": value}, "primary_metric": "test/top1",
            "fit_seconds": 1.0, "overrides": []}))
    monkeypatch.setenv("SEALAB_SWEEP", str(tmp_path / "sweep"))
    notebook = nbformat.read(REPO / "notebooks" / "results.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    outputs = "".join(str(o) for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "3 runs in" in outputs and "91.00" in outputs  # linear: mean of the two seeds
    assert (tmp_path / "sweep" / "results.png").stat().st_size > 0
