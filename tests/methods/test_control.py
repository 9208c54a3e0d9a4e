"""The control head: the probe's head trained without augmentation beside the augmented ones, from
the same initialisation on the same batches. The augmented heads' numbers do not move because it
trains beside them; it is the plain probe's own run; one control per combination of a grid's
values that are not the augmenter's."""

from __future__ import annotations

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from helpers import compose_train, fit_context, metrics_files, read_metrics, run_train
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from sealab.experiment import COLLAPSE_POINTS, collapse_warning, mean_pairwise_cosine, run, training_sample
from sealab.features.ondisk import NpyRows, StreamedFeatures
from sealab.methods.probe import LinearProbe, control_grid
from sealab.report import result_line

C, D = 4, 24
GRID = {"augmenter.eta": [0.1, 0.5], "optimizer.lr": [0.4, 1.6]}

pytestmark = pytest.mark.usefixtures("one_thread")


def blobs(n: int, seed: int, classes: int = C, dim: int = D):
    means = torch.randn(classes, dim, generator=torch.Generator().manual_seed(7))
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    return F.normalize(means[y] + 1.2 * torch.randn(n, dim, generator=gen), dim=1), y


def method(name: str, *overrides: str, grid: dict | None = None) -> LinearProbe:
    cfg = compose_train([f"method={name}", "method.epochs=4", "method.batch_size=32", *overrides])
    cfg.method.grid = OmegaConf.create(grid) if grid else None
    return instantiate(cfg.method)


class LoggedKeys(L.Callback):
    def __init__(self):
        self.keys: set[str] = set()

    def on_fit_end(self, trainer, pl_module):
        self.keys = set(trainer.callback_metrics)


def fit(name: str, *overrides: str, grid: dict | None = None, callbacks=(), classes: int = C, dim: int = D):
    L.seed_everything(0, verbose=False)
    probe = method(name, *overrides, grid=grid)
    return probe.fit(blobs(150, 1, classes, dim), blobs(60, 2, classes, dim), fit_context(classes, callbacks=callbacks))


def weights(result) -> list[torch.Tensor]:
    return [c.scorer.weight for c in result.candidates] or [result.scorer.weight]


# Clean and faithful SeA, a grid, and two augmenters that draw random numbers every step (a
# control that drew any, or changed the order of the draws, would move them); and products large
# enough (d=2048, C=100) that stacking the control's weights with the head's would change the
# head's rounding.
CASES = {"sea": ("sea", None, C, D), "sea_faithful": ("sea_faithful", None, C, D), "sea_grid": ("sea", GRID, C, D),
         "sea_random": ("sea_random", None, C, D), "noise": ("noise", None, C, D), "mixup": ("mixup", None, C, D),
         "sea_wide": ("sea", None, 100, 2048)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_augmented_heads_are_bit_for_bit_those_of_a_run_without_control(case):
    name, grid, classes, dim = CASES[case]
    with_control = fit(name, "method.control=true", grid=grid, classes=classes, dim=dim)
    alone = fit(name, "method.control=false", grid=grid, classes=classes, dim=dim)
    assert with_control.controls and not alone.controls
    for a, b in zip(weights(with_control), weights(alone), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(with_control.controls[0].scorer.weight, weights(alone)[0])  # the augmentation moved it


@pytest.mark.parametrize("name", ["sea", "sea_random"])
def test_the_control_is_the_plain_probe_trained_alone(name):
    control = fit(name).controls
    assert [c.values for c in control] == [{}]
    assert torch.equal(control[0].scorer.weight, fit("linear").scorer.weight)


def test_a_grid_gets_one_control_per_combination_of_its_values_other_than_the_augmenters():
    result = fit("sea", grid=GRID)
    assert [c.values for c in result.controls] == [{"optimizer.lr": 0.4}, {"optimizer.lr": 1.6}]
    for control in result.controls:
        single = fit("linear", f"method.optimizer.lr={control.values['optimizer.lr']}").scorer
        torch.testing.assert_close(control.scorer.weight, single.weight, rtol=1e-4, atol=1e-5)
    # each augmented head's control is the one whose values are a subset of its own
    for head in result.candidates:
        assert [c.values.items() <= head.values.items() for c in result.controls].count(True) == 1


def test_control_grid_keeps_each_distinct_value_of_the_keys_other_than_the_augmenters():
    grid = {"augmenter.eta": [0.1, 0.3], "optimizer.lr": [0.4, 1.6, 0.4], "head.lamda": [0.1]}
    assert control_grid(grid) == {"optimizer.lr": [0.4, 1.6], "head.lamda": [0.1]}
    assert control_grid({"augmenter.eta": [0.1, 0.3]}) == {} == control_grid(None)


def test_the_control_logs_under_its_own_keys_and_the_heads_keep_theirs():
    keys = LoggedKeys()
    fit("sea", callbacks=[keys])
    assert {"val/top1", "val/top1[control]", "train/loss", "train/loss[control]"} <= keys.keys
    fit("sea", grid=GRID, callbacks=[keys])
    assert {"val/top1[0]", "val/top1[3]", "val/top1[control 0]", "val/top1[control 1]"} <= keys.keys


def test_control_is_a_declared_bool_off_for_the_plain_probe_on_for_every_augmenter():
    assert fit("sea", "method.control=false").controls == []
    assert method("linear").controls == []
    for name in ("sea", "sea_faithful", "sea_noproj", "sea_random", "sea_sameclass", "noise", "mixup", "pgd",
                 "isda"):
        assert compose_train([f"method={name}"]).method.control is True, name
    with pytest.raises((ValueError, InstantiationException), match="method.control=false"):
        method("linear", "method.control=true")  # the plain probe is its own control
    with pytest.raises((ValueError, InstantiationException), match="method.control='yes'"):
        method("sea", "method.control=yes")


# ---- the run: metrics.json, the console, the warnings ----

FAST = ["num_threads=1", "~logger", "trainer.enable_progress_bar=false"]


def run_in_process(root, *overrides: str, name: str = "run") -> dict:
    cfg = compose_train([*FAST, *overrides], output_dir=root / name)
    with open_dict(cfg):
        cfg.paths.cache_dir = str(root / "cache")
    return run(cfg)


def test_a_sweep_records_each_jobs_control_prints_one_line_a_job_and_warns_of_a_collapse(tmp_path):
    proc = run_train(tmp_path, "method.augmenter.eta=0.3,20", "method.epochs=8", *FAST, multirun=True)
    records = {r["config"]["method"]["augmenter"]["eta"]: r for r in map(read_metrics, metrics_files(tmp_path))}
    for record in records.values():
        assert record["control"].keys() == record["metrics"].keys() == {
            "val/top1", "val/mean_per_class", "test/top1", "test/mean_per_class"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("digits / random_features / sea (")]
    assert len(lines) == 2 and "┏" not in proc.stdout  # one line a job, no table
    assert lines[1].startswith("digits / random_features / sea (method.augmenter.eta=20) seed 0: test/top1 ")
    collapsed, fine = records[20], records[0.3]
    gain = 100 * (collapsed["metrics"]["val/top1"] - collapsed["control"]["val/top1"])
    assert gain < -COLLAPSE_POINTS and f"gain over control: val {gain:+.2f} pt, test " in "\n".join(lines)
    (warning,) = collapsed["warnings"]
    assert all(fix in warning for fix in ("hparams_search=sea_eta", "method.grid=", "norm=center_l2"))
    assert warning in proc.stdout + proc.stderr and "warnings" not in fine


def test_a_single_run_shows_the_gain_in_its_table_and_control_false_records_none(tmp_path, capsys):
    on = run_in_process(tmp_path, "method.epochs=3", name="on")
    assert "val/top1 gain over control" in capsys.readouterr().out
    off = run_in_process(tmp_path, "method.epochs=3", "method.control=false", name="off")
    assert "control" in on and "control" not in off and "gain over control" not in capsys.readouterr().out
    assert on["metrics"] == off["metrics"]  # exactly: the control changes none of SeA's numbers
    assert read_metrics(tmp_path / "on" / "metrics.json")["control"] == on["control"]


def test_the_logger_gets_the_controls_metrics_under_its_training_keys(tmp_path):
    cfg = compose_train(["num_threads=1", "trainer.enable_progress_bar=false", "logger=csv", "method.epochs=2"],
                        output_dir=tmp_path / "run")
    with open_dict(cfg):
        cfg.paths.cache_dir = str(tmp_path / "cache")
    record = run(cfg)
    (logged,) = (tmp_path / "run").rglob("metrics.csv")
    last = pd.read_csv(logged).ffill().iloc[-1]
    assert last["test/top1[control]"] == pytest.approx(record["control"]["test/top1"])
    assert last["test/top1"] == pytest.approx(record["metrics"]["test/top1"])


def collinear_files(root, n=120, d=16, classes=3):
    """Features along one direction (a constant offset) plus a little class signal and noise."""
    gen = np.random.default_rng(0)
    paths = []
    for split, rows in (("train", n), ("test", n // 2)):
        y = np.arange(rows) % classes
        x = 5.0 + 0.3 * np.eye(classes, d)[y] + 0.1 * gen.normal(size=(rows, d))
        np.save(root / f"{split}.x.npy", x.astype(np.float32))
        np.save(root / f"{split}.y.npy", y)
        paths += [f"dataset.{split}_features={root / f'{split}.x.npy'}", f"dataset.{split}_labels={root / f'{split}.y.npy'}"]
    return paths


def test_nearly_collinear_features_under_l2_warn_and_name_center_l2(tmp_path, caplog):
    files = ["dataset=features", *collinear_files(tmp_path), "method=ncm"]
    record = run_in_process(tmp_path, *files, "norm=l2", name="l2")
    (warning,) = record["warnings"]
    assert "nearly collinear" in warning and "norm=center_l2" in warning and warning in caplog.text
    assert "warnings" not in run_in_process(tmp_path, *files, "norm=center_l2", name="centred")


def test_mean_pairwise_cosine_is_the_mean_off_diagonal_cosine():
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(0)) + torch.tensor([2.0] + [0.0] * 7)
    x[3] = 0  # a zero row: zero cosine with every other
    unit = F.normalize(x.double(), dim=1)
    gram = unit @ unit.T
    expected = (gram.sum() - gram.diagonal().sum()) / (50 * 49)
    assert mean_pairwise_cosine(x) == pytest.approx(float(expected), abs=1e-12)
    assert mean_pairwise_cosine(torch.ones(10, 4)) == pytest.approx(1.0)


def test_the_cosine_sample_is_bounded_reads_a_streamed_splits_first_block_and_draws_nothing(tmp_path):
    x = torch.arange(30 * 4, dtype=torch.float32).reshape(30, 4)
    np.save(tmp_path / "x.npy", x.numpy())
    streamed = StreamedFeatures(NpyRows(tmp_path / "x.npy"), torch.zeros(30), block_rows=8)
    state = torch.get_rng_state()
    sample = training_sample(streamed, rows=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert len(sample) == 5 and all(any(torch.equal(row, x[i]) for i in range(8)) for row in sample)
    assert len(training_sample((x, torch.zeros(30)), rows=40)) == 30


def test_the_collapse_warning_starts_at_its_threshold_and_names_the_fixes_of_the_method():
    sea = compose_train(["method=sea"]).method
    control = {"val/top1": 0.90, "test/top1": 0.90}
    assert collapse_warning(sea, "top1", {"val/top1": 0.90 - (COLLAPSE_POINTS - 0.1) / 100}, control) is None
    warning = collapse_warning(sea, "top1", {"val/top1": 0.90 - (COLLAPSE_POINTS + 0.1) / 100}, control)
    assert f"{COLLAPSE_POINTS + 0.1:.1f} pt below" in warning and "hparams_search=sea_eta (" in warning
    random = collapse_warning(compose_train(["method=sea_random"]).method, "top1", {"val/top1": 0.5}, control)
    assert "hparams_search=sea_eta method=sea_random" in random
    noise = collapse_warning(compose_train(["method=noise"]).method, "top1", {"val/top1": 0.5}, control)
    assert "hparams_search" not in noise and "method.grid='{augmenter.sigma:[...]}'" in noise
    assert collapse_warning(sea, "top1", {"val/top1": 0.5}, None) is None
    assert collapse_warning(sea, "top1", {"test/top1": 0.5}, control) is None  # fit_on=trainval: no val score


def test_with_fit_on_trainval_the_control_is_refit_beside_the_head(tmp_path):
    grid = run_in_process(tmp_path, "method.epochs=3", "fit_on=trainval", "method.grid={augmenter.eta:[0.8,0.3]}",
                          name="grid")
    chosen = next(head for head in grid["grid"] if head["values"] == grid["selected"])
    assert grid["control"].keys() == grid["metrics"].keys()
    assert grid["control"]["val/top1"] == chosen["control"]["val/top1"]  # measured before val was trained on
    assert grid["control"]["test/top1"] != chosen["control"]["test/top1"]  # the refit control's
    single = run_in_process(tmp_path, "method.epochs=3", "fit_on=trainval", name="single")
    assert set(single["control"]) == set(single["metrics"]) == {"test/top1", "test/mean_per_class"}


def test_a_jobs_line_names_its_variant_and_a_grids_selection_and_its_gains_in_points():
    record = {"dataset": "dtd", "backbone": "rn50", "method": "sea", "seed": 2, "primary_metric": "test/top1",
              "metrics": {"val/top1": 0.70, "test/top1": 0.715}, "control": {"val/top1": 0.69, "test/top1": 0.72},
              "selected": {"augmenter.eta": 0.3}}
    assert result_line(record, ["norm=center_l2"]) == (
        "dtd / rn50 / sea (norm=center_l2, augmenter.eta=0.3) seed 2: test/top1 71.50% "
        "(gain over control: val +1.00 pt, test -0.50 pt)")
    plain = {**record, "method": "linear", "selected": {}, "control": None}
    assert result_line(plain) == "dtd / rn50 / linear seed 2: test/top1 71.50%"
