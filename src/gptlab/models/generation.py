"""Autoregressive sampling."""

from __future__ import annotations

from collections.abc import Callable

import torch


@torch.no_grad()
def sample(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    idx: torch.Tensor,
    max_new_tokens: int,
    block_size: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Extend ``idx`` (B, T) by ``max_new_tokens`` tokens drawn from ``logits_fn`` (ids -> logits).

    ``temperature=0`` or ``top_k=1`` is greedy decoding. The context is cropped to ``block_size``.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    for _ in range(max_new_tokens):
        logits = logits_fn(idx[:, -block_size:])[:, -1, :]
        if temperature == 0 or top_k == 1:
            next_id = logits.argmax(dim=-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits.float(), dim=-1)
            next_id = torch.multinomial(probs, num_samples=1, generator=generator)
        idx = torch.cat((idx, next_id), dim=1)
    return idx
