"""The loader of image training: an order and augmentations drawn from (seed, epoch, position)
alone, shared out between ranks, resumable part-way through an epoch."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from sealab.methods import image_training
from sealab.methods.image_training import EpochSampler, SeededAugment


def test_each_epoch_is_one_seeded_permutation():
    sampler = EpochSampler(11, seed=3)
    first = sampler.draws(0)
    assert sorted(i for i, _ in first) == list(range(11)) and len(sampler) == 11
    assert len({s for _, s in first}) == 11  # one augmentation seed per draw
    assert first != sampler.draws(1)  # a new order every epoch ...
    assert EpochSampler(11, seed=3).draws(1) == sampler.draws(1)  # ... from (seed, epoch) alone
    assert EpochSampler(11, seed=4).draws(0) != first


def test_ranks_take_turns_in_the_single_device_order(monkeypatch):
    single = EpochSampler(11, seed=3).draws(2)
    padded = single + single[:1]  # 11 draws wrapped to 12, as DistributedSampler pads
    for rank in range(2):
        monkeypatch.setattr(image_training, "_rank_and_world", lambda rank=rank: (rank, 2))
        sampler = EpochSampler(11, seed=3)
        assert len(sampler) == 6
        assert sampler.draws(2) == padded[rank::2]


def test_a_resumed_pass_skips_what_was_trained_then_epochs_run_whole():
    sampler = EpochSampler(10, seed=0)
    sampler.resume_at(3, 4)
    sampler.set_epoch(3)  # Lightning's call at the start of the resumed epoch keeps the skip
    assert list(sampler) == sampler.draws(3)[4:]
    assert list(sampler) == sampler.draws(3)  # once only
    sampler.set_epoch(4)
    assert list(sampler) == sampler.draws(4)


def test_an_image_is_augmented_by_its_draw_seed_alone():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    data = SeededAugment([(image, 1)], v2.Compose([v2.PILToTensor(), v2.RandomResizedCrop(8),
                                                   v2.RandomHorizontalFlip()]))
    state = torch.get_rng_state()
    a, target = data[(0, 12345)]
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left alone
    torch.manual_seed(99)  # whatever state it is in
    assert torch.equal(data[(0, 12345)][0], a) and target == 1
    assert not all(torch.equal(data[(0, s)][0], a) for s in range(5))


@pytest.mark.parametrize("workers", [0, 2])
def test_the_batches_do_not_depend_on_the_number_of_workers(workers):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    data = SeededAugment([(image, i) for i in range(6)], v2.Compose([v2.PILToTensor(), v2.RandomResizedCrop(8)]))
    sampler = EpochSampler(6, seed=1)
    expected = torch.stack([data[d][0] for d in sampler.draws(0)])
    loader = torch.utils.data.DataLoader(data, batch_sampler=torch.utils.data.BatchSampler(sampler, 3, False),
                                         num_workers=workers)
    assert torch.equal(torch.cat([images for images, _ in loader]), expected)


@pytest.mark.parametrize("method", ["finetune", "linear_aug"])
def test_a_checkpoints_identity_is_the_declared_settings_not_the_objects_attributes(method, tmp_path):
    """What a checkpoint must match to be continued: every declared setting that changes the
    numbers (and the seed and train size), whatever else the object holds."""
    from helpers import compose_train, fit_context
    from hydra.utils import instantiate

    def identity(*overrides, extra=None):
        built = instantiate(compose_train([f"method={method}", *overrides], tmp_path).method)
        if extra:
            setattr(built, *extra)  # e.g. a cache a later version keeps on the method
        return built.settings(range(10), fit_context(3))

    base = identity()
    kind = type(instantiate(compose_train([f"method={method}"], tmp_path).method))
    assert base.keys() == {*kind.checkpoint_identity(), "seed", "train_size"}
    assert {"name", "head", "optimizer", "epochs", "steps", "batch_size", "accumulate_grad_batches"} <= base.keys()
    assert not base.keys() & set(kind.RESUMABLE_CHANGES)
    assert identity(extra=("helper_cache", object())) == base
    for resumable in ("method.num_workers=2", "method.checkpoint_every_n_steps=5", "method.precision=32"):
        assert identity(resumable) == base, resumable
    for changed, key in [("method.epochs=7", "epochs"), ("method.optimizer.lr=0.123", "optimizer"),
                         ("method.head.lamda=0.5", "head"), ("method.accumulate_grad_batches=2",
                                                            "accumulate_grad_batches")]:
        other = identity(changed)
        assert {k for k in base if other[k] != base[k]} == {key}, changed
