"""resume=true: the config hash sees what changes results only; finished jobs are found, failed
ones are not."""

import json
import os
import subprocess
import sys

from helpers import compose_train

from sealab.sweep.outcome import FAILED, RESUMED
from sealab.sweep.resume import config_hash, finished_record, nothing_to_resume


def digest(tmp_path, *overrides, out="run"):
    return config_hash(compose_train(["method=sea", *overrides], output_dir=tmp_path / out))


def test_hash_ignores_where_and_how_a_run_is_logged_threaded_or_resumed(tmp_path):
    base = digest(tmp_path)
    assert base == digest(tmp_path, out="elsewhere")  # trainer.default_root_dir follows the run dir
    assert base == digest(tmp_path, "paths.cache_dir=/else", "paths.root_dir=/x", "logger=wandb", "num_threads=1",
                          "resume=true", "optimized_metric=val/top1", "trainer.enable_progress_bar=false")
    changed = {digest(tmp_path, o) for o in ("seed=1", "method.augmenter.eta=0.3", "norm=center_l2", "method=linear")}
    assert base not in changed and len(changed) == 4


def write_record(run_dir, config_hash, failed=False):
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"config_hash": config_hash, "metrics": {"val/top1": 0.5}}))
    if failed:
        (run_dir / FAILED).write_text("{}")


def test_finished_record_found_anywhere_in_the_sweep_failed_ones_rerun(tmp_path):
    write_record(tmp_path / "0_a", "aaa")
    write_record(tmp_path / "1_b", "bbb", failed=True)
    own = tmp_path / "0_a"
    assert finished_record("aaa", tmp_path, own)["config_hash"] == "aaa"
    assert not (own / RESUMED).exists()  # its own result: nothing to point to
    moved = tmp_path / "5_a"  # the same job numbered differently in a grown sweep
    moved.mkdir()
    assert finished_record("aaa", tmp_path, moved)["config_hash"] == "aaa"
    assert json.loads((moved / RESUMED).read_text())["metrics"] == str(own / "metrics.json")
    assert finished_record("bbb", tmp_path, tmp_path / "1_b") is None  # its last attempt failed
    assert finished_record("ccc", tmp_path, tmp_path / "2_c") is None


def test_a_finished_job_is_skipped_before_torch_is_imported(tmp_path):
    overrides = ["method=linear", "seed=3"]
    sweep = tmp_path / "sweep"
    run_dir = sweep / "0_digits_random_features_linear"
    write_record(run_dir, config_hash(compose_train(overrides, output_dir=tmp_path)))
    record = json.loads((run_dir / "metrics.json").read_text())
    record.update(dataset="digits", backbone="random_features", method="linear", seed=3, fit_seconds=1.0,
                  primary_metric="test/top1", metrics={"val/top1": 0.5, "test/top1": 0.25})
    (run_dir / "metrics.json").write_text(json.dumps(record))
    probe = ("import atexit, sys; atexit.register(lambda: print('torch imported:', 'torch' in sys.modules)); "
             f"sys.argv = ['sealab-train', '-m', *{overrides!r}, 'resume=true', 'hydra.sweep.dir={sweep}']; "
             "from sealab.train import main; main()")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "SEALAB_ROOT": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not run again" in proc.stdout + proc.stderr
    assert "| linear | 25.00 |" in (sweep / "summary.md").read_text()
    assert proc.stdout.strip().endswith("torch imported: False")


def test_resume_without_the_sweep_folder_says_how_to_name_it():
    assert "hydra.sweep.dir=" in nothing_to_resume(["hydra.launcher.n_jobs=2"])
    assert nothing_to_resume(["hydra.sweep.dir=multirun/2026-11-26/10-00-00-000000"]) is None
