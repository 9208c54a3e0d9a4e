"""The baselines written as plainly as possible: no Lightning, no sealab code.

Both use the probe's loss (``lamda * CE(logits / lamda, y)``, delta = 0) and optimiser
(SGD lr 1.6, momentum 0.9, weight decay 1e-6) so that only the training machinery differs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LAMDA, ETA, ALPHA = 0.1, 0.8, 0.01
SGD_ARGS = {"lr": 1.6, "momentum": 0.9, "weight_decay": 1e-6}


def _classifier(d: int, num_classes: int, device: torch.device) -> tuple[nn.Linear, torch.optim.SGD]:
    model = nn.Linear(d, num_classes, bias=False).to(device)
    return model, torch.optim.SGD(model.parameters(), **SGD_ARGS)


def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return LAMDA * F.cross_entropy(logits / LAMDA, y)


def bare_linear(x: torch.Tensor, y: torch.Tensor, num_classes: int, batch_size: int):
    """One plain-linear epoch per call: permute, slice batches, forward, loss, backward, step."""
    model, optimizer = _classifier(x.shape[1], num_classes, x.device)

    def epoch() -> None:
        order = torch.randperm(len(x), device=x.device)
        xs, ys = x[order], y[order]
        for i in range(0, len(ys), batch_size):
            loss = _loss(model(xs[i:i + batch_size]), ys[i:i + batch_size])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    return epoch


def published_direction(batch_x: torch.Tensor, batch_y: torch.Tensor, model: nn.Linear) -> torch.Tensor:
    """The reference code's SeA direction: autograd for d loss / d x, softmax over all j,
    diagonal zeroed and renormalised, projected onto the batch and normalised."""
    batch_x.requires_grad_(True)
    _loss(model(batch_x), batch_y).backward()  # also fills the weight grad, as the reference does
    grad = F.normalize(batch_x.grad, dim=1)
    batch_x.requires_grad_(False)
    batch_x.grad = None
    weights = torch.softmax(grad @ batch_x.T / ALPHA, dim=1)
    weights = weights - torch.diag(torch.diag(weights))
    weights = weights / weights.sum(dim=1, keepdim=True)
    return F.normalize(weights @ batch_x, dim=1)


def published_sea(x: torch.Tensor, y: torch.Tensor, num_classes: int, batch_size: int):
    """One SeA epoch per call, structured like the authors' published training loop."""
    model, optimizer = _classifier(x.shape[1], num_classes, x.device)

    def epoch() -> None:
        order = torch.randperm(len(x), device=x.device)
        xs, ys = x[order], y[order]
        for i in range(0, len(ys), batch_size):
            batch_x, batch_y = xs[i:i + batch_size], ys[i:i + batch_size]
            batch_x = F.normalize(batch_x + ETA * published_direction(batch_x, batch_y, model), dim=1)
            loss = _loss(model(batch_x), batch_y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    return epoch
