"""Weighted k-nearest neighbours on cosine similarity (the kNN monitor of InstDisc / DINO)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sealab.methods.base import METHOD, Features, FitContext, FitResult, Method
from sealab.methods.closed_form import ClosedFormMethod
from sealab.rules import COUNT, positive, validate
from sealab.task import Task


def topk_cosine(queries: torch.Tensor, bank: torch.Tensor, k: int,
                bank_chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest rows of ``queries @ bank.T`` (values, bank indices), computed over
    ``bank_chunk`` rows of the bank at a time while keeping a running top-k, so memory is
    ``len(queries) x (bank_chunk + k)`` however large the bank is."""
    best_v = queries.new_empty(len(queries), 0)
    best_i = torch.empty(len(queries), 0, dtype=torch.long, device=queries.device)
    for start in range(0, len(bank), bank_chunk):
        sims = queries @ bank[start:start + bank_chunk].T
        v, i = sims.topk(min(k, sims.shape[1]), dim=1)
        cand_v, cand_i = torch.cat([best_v, v], 1), torch.cat([best_i, i + start], 1)
        best_v, pos = cand_v.topk(min(k, cand_v.shape[1]), dim=1)
        best_i = cand_i.gather(1, pos)
    return best_v, best_i


class KNNScorer(nn.Module):
    """Scores of a query = weighted average of its ``k`` nearest training examples' label
    vectors (one-hot, or multi-hot for multi-label), with weights ``exp(cos / temperature)``."""

    def __init__(self, bank: torch.Tensor, labels: torch.Tensor, task: Task, k: int = 20,
                 temperature: float = 0.07, query_chunk: int = 1024, bank_chunk: int = 16384):
        super().__init__()
        self.task, self.k, self.temperature = task, k, temperature
        self.query_chunk, self.bank_chunk = query_chunk, bank_chunk
        self.register_buffer("bank", F.normalize(bank.float(), dim=1))
        self.register_buffer("labels", labels.clone())

    def _vote(self, sims: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        # softmax(sim / T) over the k neighbours = exp(sim / T) normalised, without overflow.
        weights = torch.softmax(sims / self.temperature, dim=1)
        # One-hot of the k neighbours' labels only (q x k x C), never of the whole bank.
        return torch.einsum("qk,qkc->qc", weights, self.task.positives(self.labels[idx], weights.dtype))

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        queries = F.normalize(x.to(self.bank.dtype), dim=1)
        return torch.cat([
            self._vote(*topk_cosine(queries[s:s + self.query_chunk], self.bank, self.k, self.bank_chunk))
            for s in range(0, len(queries), self.query_chunk)
        ])


class KNearestNeighbours(ClosedFormMethod):
    """``method=knn``: stores the training features; nothing is fitted or selected."""

    # query_chunk, bank_chunk: queries and bank rows compared at once (memory, not numbers)
    RULES = {**Method.RULES, "k": COUNT, "temperature": positive(), "query_chunk": COUNT, "bank_chunk": COUNT}

    def __init__(self, name: str, k: int = 20, temperature: float = 0.07, query_chunk: int = 1024,
                 bank_chunk: int = 16384):
        validate(type(self).__name__, self.RULES, prefix=METHOD, name=name, k=k, temperature=temperature,
                 query_chunk=query_chunk, bank_chunk=bank_chunk)
        super().__init__(name)
        self.k, self.temperature = k, temperature
        self.query_chunk, self.bank_chunk = query_chunk, bank_chunk

    def solve(self, train: Features, val: Features | None, ctx: FitContext) -> FitResult:
        x, y = train
        # Refused rather than clamped: with k above the training rows every query votes with the
        # whole training set, so the numbers would be those of k = rows while metrics.json, the
        # summary and wandb say k (a sweep over k would show equal results under different k).
        if self.k > len(x):
            raise ValueError(f"method.k={self.k}: knn is fitted on {len(x)} rows, too few for {self.k} "
                             f"neighbours; set method.k={len(x)} or lower")
        return FitResult(KNNScorer(x, y, ctx.task, self.k, self.temperature, self.query_chunk, self.bank_chunk))
