"""Heads that turn the backbone's hidden states into task outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LMHead(nn.Module):
    """Next-token logits, with the weight tied to the backbone's token embedding (GPT-2, nanoGPT), or its
    own weight of the same shape when ``tie`` is false; ``softcap`` bounds them as cap·tanh(logits/cap).

    The embedding may have padding rows (a vocabulary rounded up for fast matmuls): the matmul keeps
    the padded width, then only the first ``vocab_size`` logits are returned, so padding ids are never
    sampled nor scored by the loss.
    """

    def __init__(
        self,
        token_embedding: nn.Embedding,
        vocab_size: int | None = None,
        tie: bool = True,
        softcap: float | None = None,
    ) -> None:
        super().__init__()
        embedding = token_embedding.weight
        # An untied head starts like the embedding (normal, std 0.02) but learns apart from it.
        self.weight = embedding if tie else nn.Parameter(torch.randn_like(embedding) * 0.02)
        self.vocab_size = token_embedding.num_embeddings if vocab_size is None else vocab_size
        self.softcap = softcap

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = F.linear(hidden, self.weight)[..., : self.vocab_size]
        if self.softcap is not None:
            logits = self.softcap * torch.tanh(logits / self.softcap)
        return logits


POOLINGS = ("last", "mean", "max")


class ClassificationHead(nn.Module):
    """Class logits from a sequence's hidden states: pool -> dropout -> linear.

    ``pooling="last"`` takes the last non-pad token, the only position a causal model lets see the whole
    text (GPT-1); ``"mean"`` averages the non-pad positions, ``"max"`` takes each channel's maximum over
    them (a feature anywhere in the text counts). Padding must be on the right.
    """

    def __init__(self, n_embd: int, num_classes: int, pooling: str = "last", dropout: float = 0.0) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; use one of {POOLINGS}")
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(n_embd, num_classes)
        nn.init.normal_(self.linear.weight, std=0.02)
        nn.init.zeros_(self.linear.bias)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T, C) hidden states and a (B, T) mask, true on real tokens -> (B, C)."""
        if self.pooling == "mean":
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        if self.pooling == "max":
            return hidden.masked_fill(~attention_mask.unsqueeze(-1), float("-inf")).amax(1)
        last = attention_mask.long().sum(1).clamp(min=1) - 1
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(self.pool(hidden, attention_mask)))
