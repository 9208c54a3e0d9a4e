"""Training a head on images through a backbone (``method=finetune``, ``method=linear_aug``).

What both share: a loader whose order and augmentations depend only on (seed, epoch, position),
so a job resumed from a checkpoint sees exactly the batches the killed one would have seen; the
checkpoint and resume set-up; precision; and the Lightning module with its param groups.
"""

from __future__ import annotations

import math
import warnings
from abc import abstractmethod
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from sealab.backbones.base import Backbone
from sealab.backbones.timm_backbone import TimmBackbone
from sealab.features.extract import image_loader, resolve_workers
from sealab.fileio import atomic_write_bytes
from sealab.heads.linear import LinearHead
from sealab.methods.base import (
    METHOD,
    OPTIMIZER_RULES,
    FitContext,
    FitResult,
    HeadModule,
    ImageMethod,
    settings_of,
)
from sealab.rules import COUNT, WORKERS, component, integer, one_of, problem, text, validate

# Lightning's precisions (auto: see resolve_precision); YAML reads `precision: 32` as a number.
PRECISION = one_of("auto", "32", "bf16-mixed", "16-mixed", also=(32,))
CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"


def resolve_precision(precision: str | int, device: torch.device) -> str:
    """``auto``: bf16 mixed precision on a CUDA device that supports it, else full 32-bit."""
    if (refused := problem("method.precision", precision, PRECISION)) is not None:
        raise ValueError(refused)
    if precision != "auto":
        return str(precision)
    return "bf16-mixed" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "32"


def augmented_transform(backbone: Backbone, image_size: tuple[int, int]) -> v2.Compose:
    """The protocol's training augmentation, random-resized crop and horizontal flip.

    A timm model: cropped to its input size and normalised with its own mean/std. Any other
    backbone: cropped back to the image's own size (height, width), then its own transform."""
    if not isinstance(backbone, TimmBackbone):
        return v2.Compose([v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip(),
                           backbone.transform])
    config = backbone.data_config
    return v2.Compose([
        v2.PILToTensor(),
        v2.RGB(),
        v2.RandomResizedCrop(backbone.img_size, interpolation=v2.InterpolationMode(config["interpolation"]),
                             antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(config["mean"]), std=list(config["std"])),
    ])


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochSampler(Sampler):
    """Draws ``(index, augmentation seed)``: every epoch a permutation of the ``n`` examples and
    one seed per draw, both from ``(seed, epoch)`` alone. The stream is the same whatever the
    number of loader workers and whether the job was restarted, so a resumed job continues it.

    Under DDP (Lightning's distributed sampler switched off) each rank takes every
    ``world``-th draw of the permutation, padded by wrapping to a multiple of ``world`` as
    DistributedSampler does: together the ranks see the epoch once, and one rank's batches
    are the same as a single device's when ``world`` is 1.
    """

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch, self.skip = n, seed, 0, 0

    def __len__(self) -> int:
        return math.ceil(self.n / _rank_and_world()[1])

    def draws(self, epoch: int) -> list[tuple[int, int]]:
        """This rank's draws of ``epoch``, in order."""
        rank, world = _rank_and_world()
        rng = np.random.default_rng([self.seed, epoch])
        total = len(self) * world
        order, seeds = rng.permutation(self.n), rng.integers(0, 2**63 - 1, size=self.n)
        wrapped = np.arange(total) % self.n  # a padded draw repeats an earlier one, seed included
        return [(int(order[i]), int(seeds[i])) for i in wrapped[rank::world]]

    def __iter__(self):
        draws = self.draws(self.epoch)[self.skip:]
        self.skip = 0  # only the first pass after a resume starts part-way
        return iter(draws)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        if epoch != self.epoch:
            self.epoch, self.skip = epoch, 0

    def resume_at(self, epoch: int, skip: int) -> None:
        """The next pass is ``epoch`` without its first ``skip`` draws (already trained on)."""
        self.epoch, self.skip = epoch, skip


class SeededAugment(Dataset):
    """``(transform(image), target)`` for an ``(index, seed)`` draw: the transform's random
    choices come from the draw's seed only (the global generator is left as it was)."""

    def __init__(self, dataset: Dataset, transform: Callable[[Any], torch.Tensor]):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, draw: tuple[int, int]):
        index, seed = draw
        image, target = self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # CPU only: torch.manual_seed costs ms (CUDA bookkeeping)
            return self.transform(image), target


class SamplerPosition(L.Callback):
    """Stores in every checkpoint where the sampler stands after the last trained batch, and
    puts it back there on resume (before Lightning draws the first batch). ``settings`` are
    stored too: a checkpoint of a job with other settings (e.g. a sweep job's dir reused for
    another lr) is refused rather than continued."""

    def __init__(self, sampler: EpochSampler, batch_size: int, settings: dict[str, str]):
        self.sampler, self.batch_size, self.settings = sampler, batch_size, settings
        self.position = (0, 0)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        # Runs before ModelCheckpoint's hook (Lightning calls checkpoint callbacks last).
        done = batch_idx + 1
        self.position = ((trainer.current_epoch + 1, 0) if done >= trainer.num_training_batches
                         else (trainer.current_epoch, done * self.batch_size))

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.position[0], "skip": self.position[1], "settings": self.settings}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("settings", {})
        differ = sorted(k for k in saved.keys() | self.settings.keys() if saved.get(k) != self.settings.get(k))
        if differ:
            raise ValueError(
                "the checkpoint to resume from was written with other settings: "
                + "; ".join(f"{k}: {saved.get(k)} there, {self.settings.get(k)} here" for k in differ)
                + ". Resume with the killed job's settings, or start in a new run dir (a checkpoint in"
                " the run dir is resumed unless method.resume_from points elsewhere).")
        self.position = (state["epoch"], state["skip"])
        self.sampler.resume_at(*self.position)


class AtomicCheckpointIO(TorchCheckpointIO):
    """A job killed while writing a checkpoint leaves the previous one intact."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, lambda tmp: super(AtomicCheckpointIO, self).save_checkpoint(
            checkpoint, tmp, storage_options))


def checkpoint_to_resume(resume_from: str | None, run_dir: Path | None) -> Path | None:
    """``null``: the run dir's last checkpoint when there is one (a killed job started again in
    its own run dir continues), else none; ``last``: that checkpoint, which must exist; otherwise
    a checkpoint file, or another run's dir holding ``checkpoints/last.ckpt``."""
    own = run_dir / CHECKPOINT_DIR / LAST if run_dir else None
    if resume_from is None:
        return own if own and own.is_file() else None
    path = own if resume_from == "last" else Path(resume_from).expanduser()
    if path is not None and path.is_dir():
        path = path / CHECKPOINT_DIR / LAST
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"method.resume_from={resume_from}: no checkpoint at {path or '(this call has no run dir)'}; "
            f"give a .ckpt file or the run dir of the killed job (it holds {CHECKPOINT_DIR}/{LAST})")
    return path


class ImageModule(HeadModule):
    """A linear head on the (normalised) features of a backbone, trained on image batches.
    A frozen backbone runs without gradients (linear probing); an unfrozen one trains with the
    head (fine-tuning). ``param_groups`` are the optimiser's, each with its own lr;
    ``scheduler(optimizer, steps)`` gives Lightning's scheduler config for a run of ``steps``
    optimiser steps (None: constant lr)."""

    def __init__(self, backbone: Backbone, normalize: nn.Module, head: LinearHead,
                 optimizer: Callable[..., torch.optim.Optimizer], param_groups: list[dict[str, Any]],
                 scheduler: Callable[[torch.optim.Optimizer, int], Any] | None = None):
        super().__init__([head])
        self.backbone, self.normalize = backbone, normalize
        self.optimizer_factory, self.param_groups, self.scheduler = optimizer, param_groups, scheduler

    @property
    def head(self) -> LinearHead:
        return self.heads[0]

    def scorer(self) -> nn.Sequential:
        return nn.Sequential(OrderedDict(backbone=self.backbone, normalize=self.normalize, head=self.head))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.backbone.frozen):
            return self.normalize(self.backbone(images))

    def head_scores(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images)).unsqueeze(1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, y = batch
        loss = self.head.loss(self.head(self.features(images)), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.param_groups)
        if self.scheduler is None:
            return optimizer
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler(optimizer, steps)}


def cosine_per_step(optimizer: torch.optim.Optimizer, steps: int) -> dict[str, Any]:
    """Every lr on a cosine to 0, stepped every optimiser step as the fine-tuning reference
    does: the decay ends at 0 however short the run."""
    return {"scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps), "interval": "step"}


class ImageTraining(ImageMethod):
    """What ``finetune`` and ``linear_aug`` share: augmented training images, checkpoints in the
    run dir, resume, precision and gradient accumulation. A subclass builds the module.

    ``steps``, when set, replaces ``epochs`` (optimiser steps; with ``accumulate_grad_batches``
    = k each step sees k batches). ``checkpoint_every_n_steps``: null saves ``last.ckpt`` at the
    end of every epoch, N every N optimiser steps. ``resume_from``: see ``checkpoint_to_resume``.

    Each setting is kept in the attribute of its name (``head``: the head's factory).
    """

    RULES = {**ImageMethod.RULES, "head": component(), **OPTIMIZER_RULES, "epochs": COUNT,
             "steps": integer(1, nullable=True), "batch_size": COUNT, "num_workers": WORKERS,
             "precision": PRECISION, "accumulate_grad_batches": COUNT,
             "checkpoint_every_n_steps": integer(1, nullable=True), "resume_from": text(nullable=True)}

    def __init__(self, name: str, head: Callable[..., LinearHead],
                 optimizer: Callable[..., torch.optim.Optimizer], epochs: int = 50,
                 steps: int | None = None, batch_size: int = 64, num_workers: int | str = 0,
                 precision: str = "auto", accumulate_grad_batches: int = 1,
                 checkpoint_every_n_steps: int | None = None, resume_from: str | None = None):
        validate(type(self).__name__, ImageTraining.RULES, prefix=METHOD, name=name, head=head,
                 optimizer=settings_of(optimizer), epochs=epochs, steps=steps, batch_size=batch_size,
                 num_workers=num_workers, precision=precision, accumulate_grad_batches=accumulate_grad_batches,
                 checkpoint_every_n_steps=checkpoint_every_n_steps, resume_from=resume_from)
        super().__init__(name)
        self.head, self.optimizer = head, optimizer
        self.epochs, self.steps, self.batch_size, self.num_workers = epochs, steps, batch_size, num_workers
        self.precision, self.accumulate_grad_batches = precision, accumulate_grad_batches
        self.checkpoint_every_n_steps, self.resume_from = checkpoint_every_n_steps, resume_from

    @abstractmethod
    def build(self, train: Dataset, backbone: Backbone, ctx: FitContext) -> ImageModule: ...

    # What may change between a killed job and its resumption (where it saves, how it loads, how
    # it computes); every other declared setting must be the same.
    RESUMABLE_CHANGES = ("checkpoint_every_n_steps", "resume_from", "num_workers", "precision")

    @classmethod
    def checkpoint_identity(cls) -> list[str]:
        """The settings a checkpoint must match to be continued: the declared ones (``RULES``;
        ``optimizer.lr`` counts as ``optimizer``) but those a resumption may change. Derived from
        the declaration, never from ``vars(self)``: a helper attribute changes nothing."""
        return sorted({key.partition(".")[0] for key in cls.RULES} - set(cls.RESUMABLE_CHANGES))

    def settings(self, train: Dataset, ctx: FitContext) -> dict[str, str]:
        kept = {key: getattr(self, key) for key in self.checkpoint_identity()}
        return {k: repr(v) for k, v in {**kept, "seed": ctx.seed, "train_size": len(train)}.items()}

    def fit_images(self, train: Dataset, val: Dataset | None, backbone: Backbone,
                   ctx: FitContext) -> FitResult:
        precision = resolve_precision(self.precision, ctx.device)
        resume = checkpoint_to_resume(self.resume_from, ctx.run_dir)
        module = self.build(train, backbone, ctx)
        workers = resolve_workers(self.num_workers, ctx.device)
        sampler = EpochSampler(len(train), ctx.seed)
        # A last batch of one image would make BatchNorm (in train mode) fail: drop only that one.
        batches = BatchSampler(sampler, self.batch_size, drop_last=len(sampler) % self.batch_size == 1)
        image_size = train[0][0].size[::-1]  # PIL's (width, height)
        train_loader = DataLoader(SeededAugment(train, augmented_transform(backbone, image_size)),
                                  batch_sampler=batches, num_workers=workers, persistent_workers=workers > 0)
        val_loader = None if val is None else image_loader(val, backbone.transform, self.batch_size, workers)
        callbacks: list[L.Callback] = [SamplerPosition(sampler, self.batch_size, self.settings(train, ctx))]
        saving: dict[str, Any] = {}
        if ctx.run_dir is not None:
            callbacks.append(ModelCheckpoint(
                # One file, overwritten at every save (save_last would skip epoch ends here).
                dirpath=ctx.run_dir / CHECKPOINT_DIR, filename=Path(LAST).stem, enable_version_counter=False,
                every_n_train_steps=self.checkpoint_every_n_steps, save_on_train_epoch_end=True))
            saving = {"enable_checkpointing": True, "plugins": [AtomicCheckpointIO()]}
        trainer = ctx.make_trainer(
            max_epochs=-1 if self.steps else self.epochs, max_steps=self.steps or -1,
            limit_val_batches=0 if val is None else 1.0, precision=precision,
            accumulate_grad_batches=self.accumulate_grad_batches,
            # The sampler shards the epoch across ranks itself (Lightning's would lose its order).
            use_distributed_sampler=False, callbacks=callbacks, **saving)
        with warnings.catch_warnings():
            # Both untrue here: SamplerPosition resumes the loader mid-epoch; a frozen backbone is meant
            # to be in eval mode.
            warnings.filterwarnings("ignore", "You're resuming from a checkpoint that ended before the epoch ended")
            warnings.filterwarnings("ignore", r"Found \d+ module\(s\) in eval mode")
            trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader, ckpt_path=resume)
        scorer = module.scorer()
        scorer.backbone.freeze()  # a fine-tuned copy too is a fixed model from here on
        return FitResult(scorer.cpu().eval())
