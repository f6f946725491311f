"""Heads that turn the backbone's hidden states into task outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LMHead(nn.Module):
    """Next-token logits, with the weight tied to the backbone's token embedding (GPT-2, nanoGPT)."""

    def __init__(self, token_embedding: nn.Embedding) -> None:
        super().__init__()
        self.weight = token_embedding.weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.weight)
