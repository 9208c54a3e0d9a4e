"""Multi-step projected gradient ascent in feature space (the adversarial baseline to SeA)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sealab.augment.base import AUGMENTER, Augmented, FeatureAugmenter
from sealab.augment.step import unit_gradient
from sealab.rules import COUNT, positive, validate


class PGD(FeatureAugmenter):
    """``steps`` times: move ``step_size`` along the normalised loss gradient (closed form,
    ``head.input_grad``), project onto the L2 ball of ``radius`` around the clean ``x``,
    then back onto the unit sphere (where the head is evaluated). The sphere step may
    leave the point slightly outside the ball; with one step and ``radius >= step_size``
    this is exactly ``sea_noproj`` (``GradientStep`` with ``eta = step_size``)."""

    RULES = {"steps": COUNT, "step_size": positive(), "radius": positive()}

    def __init__(self, steps: int = 3, step_size: float = 0.02, radius: float = 0.05):
        validate(type(self).__name__, self.RULES, prefix=AUGMENTER,
                 steps=steps, step_size=step_size, radius=radius)
        super().__init__()
        self.steps, self.step_size, self.radius = steps, step_size, radius

    def plan(self, batch, logits, head):
        x, y = batch.x, batch.y
        x_adv = x
        for step in range(self.steps):
            adv_logits = logits if step == 0 else head(x_adv)
            delta = x_adv + self.step_size * unit_gradient(head, adv_logits, y) - x
            length = delta.norm(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
            shrink = (self.radius / length).clamp(max=1)
            x_adv = F.normalize(x + shrink * delta, dim=1)
        return Augmented(y, features=x_adv)
