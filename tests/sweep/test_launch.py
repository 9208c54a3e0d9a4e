"""Launcher configs compose with their plugin's schema; parallel jobs split the cores."""

import importlib.util

import pytest
from helpers import compose_train
from omegaconf import OmegaConf

from sealab.sweep.launch import threads_per_job

# sealab-train silences it too: sealab's launcher configs share their plugin's name on purpose.
pytestmark = pytest.mark.filterwarnings(r"ignore:\s*'hydra/launcher/\w+' is validated:UserWarning")

LAUNCHERS = {"joblib": "hydra_plugins.hydra_joblib_launcher",
             "submitit_local": "hydra_plugins.hydra_submitit_launcher",
             "submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
             "ray": "hydra_plugins.hydra_ray_launcher"}


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_config_is_completed_by_its_plugin(name, tmp_path):
    if importlib.util.find_spec(LAUNCHERS[name]) is None:
        pytest.skip(f"{LAUNCHERS[name]} not installed (pip install 'sealab[launchers]')")
    launcher = compose_train([f"hydra/launcher={name}"], output_dir=tmp_path).hydra.launcher
    assert launcher._target_.startswith(LAUNCHERS[name])
    # sealab's values, with every other setting from the plugin's schema
    expected = {"joblib": {"n_jobs": -1, "prefer": "processes"},
                "submitit_local": {"cpus_per_task": 1, "tasks_per_node": 1},
                "submitit_slurm": {"gpus_per_node": 1, "partition": None, "array_parallelism": 32,
                                   "signal_delay_s": 120},
                "ray": {}}[name]
    assert {k: launcher[k] for k in expected} == expected
    if name == "ray":
        assert launcher.ray.remote.num_cpus == 1


@pytest.mark.parametrize("launcher, cores, threads", [
    ({"n_jobs": 2}, 2, 1), ({"n_jobs": 2}, 8, 4), ({"n_jobs": 3}, 2, 1), ({"n_jobs": -1}, 8, 1),
    ({"cpus_per_task": 6}, 64, 6), ({"ray": {"remote": {"num_cpus": 2}}}, 8, 2),
    ({"cpus_per_task": None}, 8, None), ({}, 8, None)])
def test_threads_per_job_share_the_cores(launcher, cores, threads):
    assert threads_per_job(OmegaConf.create(launcher), cores) == threads
