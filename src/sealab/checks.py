"""Checks of the composed configuration, run before any data is read. Each failure names the
key at fault and the one to use instead."""

from __future__ import annotations

from omegaconf import DictConfig

FIT_ON = ("train", "trainval")

# Trainer arguments the run sets itself: an override in trainer.* would be silently replaced.
TRAINER_KEYS_SET_ELSEWHERE = {
    "max_epochs": "method.epochs",
    "max_steps": "method.epochs (or method.steps for method=finetune)",
    "accelerator": "device (auto, cpu, cuda, cuda:N)",
    "devices": "device (auto, cpu, cuda, cuda:N)",
    "logger": "logger=<csv|wandb> (or ~logger for none)",
}


def check_run_config(cfg: DictConfig, method_choice: str) -> None:
    if cfg.fit_on not in FIT_ON:
        raise ValueError(f"fit_on={cfg.fit_on!r}: choose one of {FIT_ON}")
    for key, use in TRAINER_KEYS_SET_ELSEWHERE.items():
        if key in cfg.trainer:
            raise ValueError(f"trainer.{key} is set by sealab itself and would be ignored: set {use} instead")
    # A component slot the chosen method leaves empty, filled by settings meant for another
    # method (e.g. an experiment's SeA step landing in the linear probe's augmenter slot).
    for key, node in cfg.method.items():
        # (A grid maps keys to lists; every other mapping in a method config is a component.)
        if key != "grid" and isinstance(node, DictConfig) and "_target_" not in node:
            raise ValueError(
                f"method.{key} holds settings ({', '.join(map(str, node))}) but method={method_choice} has no "
                f"{key}: they come from an override or an experiment meant for another method. Drop them, "
                f"or choose a method that has one.")
