"""The analysis notebook runs top to bottom on a sweep folder, and shows the report's table and
figures drawn by the report's own functions."""

import base64
import io
import json

import nbformat
from helpers import REPO
from nbclient import NotebookClient
from PIL import Image


def test_results_notebook_executes_on_a_sweep(tmp_path, monkeypatch):
    for i, (method, seed, value) in enumerate([("linear", 0, 0.9), ("linear", 1, 0.92), ("sea", 0, 0.95),
                                               ("sea", 1, 0.96)]):
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
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(str(o) for o in outputs)
    assert "4 runs in" in text and "91.00" in text  # linear: mean of the two seeds
    # the report's headline: sea minus linear is (5 + 4) / 2 = 4.5 points
    assert "SeA is +4.5 pt over linear on average" in text
    figure = tmp_path / "sweep" / "figure-random-features.png"
    assert figure.stat().st_size > 0
    (shown,) = [o for o in outputs if "image/png" in o.get("data", {})]
    png = base64.b64decode(shown["data"]["image/png"])
    assert png == figure.read_bytes()  # the figure shown is the one saved, at its size
    width, height = Image.open(io.BytesIO(png)).size
    assert width <= 3000 and width <= 4 * height
