"""Autoregressive sampling, and the key/value cache that makes it incremental."""

from __future__ import annotations

from collections.abc import Callable

import torch


class KVCache:
    """Every layer's keys and values for the tokens seen so far, so each new token costs one position's
    work instead of the whole context's.

    A layer's buffers, (batch, kv_heads, max_length, head_dim), are allocated on its first
    :meth:`update` with the dtype and device of its keys, so the cache needs nothing from the model but
    the context length. ``length`` counts the cached tokens: it is the position of the next one. The
    backbone calls :meth:`advance` once all its layers have written. One cache serves one batch.
    """

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length
        self.length = 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def update(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store a layer's keys and values (B, heads, T, head_dim) for positions ``length .. length+T``;
        return that layer's keys and values for all positions so far."""
        end = self.length + keys.size(2)
        if end > self.max_length:
            raise ValueError(
                f"the cache holds {self.max_length} positions: {self.length} cached plus {keys.size(2)} "
                "new do not fit; reset it and feed the cropped context"
            )
        if layer == len(self.keys):
            shape = (*keys.shape[:2], self.max_length, keys.size(3))
            self.keys.append(keys.new_empty(shape))
            self.values.append(values.new_empty(shape))
        self.keys[layer][:, :, self.length : end] = keys
        self.values[layer][:, :, self.length : end] = values
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, num_tokens: int) -> None:
        self.length += num_tokens

    def reset(self) -> None:
        """Forget the cached tokens; the buffers stay allocated for the next prefill."""
        self.length = 0


@torch.no_grad()
def sample(
    logits_fn: Callable[..., torch.Tensor],
    idx: torch.Tensor,
    max_new_tokens: int,
    block_size: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """Extend ``idx`` (B, T) by ``max_new_tokens`` tokens drawn from ``logits_fn`` (ids -> logits).

    ``temperature=0`` or ``top_k=1`` is greedy decoding. The context is cropped to ``block_size``.

    With ``use_cache``, ``logits_fn`` is called as ``logits_fn(ids, cache=cache)`` with a
    :class:`KVCache`: the prompt is fed once, then only the newest token each step. Once the context
    outgrows ``block_size``, the cropped window's tokens move to new positions, which invalidates every
    cached key; each step then recomputes the window from scratch, exactly as the uncached path does,
    so both paths write the same text.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    cache = KVCache(block_size) if use_cache else None
    for _ in range(max_new_tokens):
        if cache is None:
            logits = logits_fn(idx[:, -block_size:])
        elif 0 < cache.length < block_size:
            logits = logits_fn(idx[:, -1:], cache=cache)  # only the newest token is not cached yet
        else:  # the first step, or the window has slid
            cache.reset()
            logits = logits_fn(idx[:, -block_size:], cache=cache)
        logits = logits[:, -1, :]
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
