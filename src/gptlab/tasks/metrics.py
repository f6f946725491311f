"""The metrics the tasks log beside torchmetrics' own: a size-weighted mean without a host sync, perplexity,
and bits per byte (a loss that compares models whatever their tokenizer)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torchmetrics import Metric


class WeightedMean(Metric):
    """Mean of batch values weighted by their sizes (tokens, or rows), without a host sync per update.

    (torchmetrics' ``MeanMetric(nan_strategy="disable")``, the sync-free setting, ignores the weights, so
    a last, smaller batch would count as much as a full one.)
    """

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("weight", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, value: torch.Tensor, weight: float | torch.Tensor) -> None:
        self.total += value.detach().float() * weight
        self.weight += weight

    def compute(self) -> torch.Tensor:
        return self.total / self.weight


class Perplexity(WeightedMean):
    """exp of the (token-weighted) mean cross-entropy it is updated with."""

    def compute(self) -> torch.Tensor:
        return super().compute().exp()


class BitsPerByte(Metric):
    """Summed loss over target tokens / ln 2 / the UTF-8 bytes those tokens stand for: a measure that
    compares models whatever their tokenizer. End-of-text targets (no bytes) count in neither sum."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("nats", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("bytes", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, token_losses: torch.Tensor, token_bytes: torch.Tensor) -> None:
        self.nats += token_losses.detach().double().masked_fill(token_bytes == 0, 0.0).sum()
        self.bytes += token_bytes.sum()

    def compute(self) -> torch.Tensor:
        return self.nats / self.bytes / math.log(2)
