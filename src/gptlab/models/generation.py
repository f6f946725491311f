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


def check_sampling(temperature: float, top_p: float | None, repetition_penalty: float) -> None:
    """Refuse sampling settings that mean nothing."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (1: off), got {top_p}")
    if repetition_penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0 (1: off), got {repetition_penalty}")


def penalise_repetition(logits: torch.Tensor, idx: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty: the logit of every token already in ``idx`` is divided by ``penalty``
    if positive, multiplied if negative, so a penalty > 1 makes any seen token less likely."""
    seen = logits.gather(1, idx)
    return logits.scatter(1, idx, torch.where(seen > 0, seen / penalty, seen * penalty))


def nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probabilities sum to at least ``top_p``."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = torch.softmax(sorted_logits.float(), dim=-1)
    # A token goes when the ones more likely than it already reach top_p; the most likely always stays.
    drop = probs.cumsum(dim=-1) - probs >= top_p
    return logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))


@torch.inference_mode()  # no autograd bookkeeping at all: a sample is text, never trained on
def sample(
    logits_fn: Callable[..., torch.Tensor],
    idx: torch.Tensor,
    max_new_tokens: int,
    block_size: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    stop: Callable[[torch.Tensor], bool] | None = None,
) -> torch.Tensor:
    """Extend ``idx`` (B, T) by ``max_new_tokens`` tokens drawn from ``logits_fn`` (ids -> logits).

    ``temperature=0`` or ``top_k=1`` is greedy decoding. ``top_p`` < 1 samples from the nucleus (after
    ``top_k``); ``repetition_penalty`` > 1 discourages tokens already in the sequence (greedy too).
    ``stop(idx)``, called after each token, ends the sampling early when it returns True. The context
    is cropped to ``block_size``.

    With ``use_cache``, ``logits_fn`` is called as ``logits_fn(ids, cache=cache)`` with a
    :class:`KVCache`: the prompt is fed once, then only the newest token each step. Once the context
    outgrows ``block_size``, the cropped window's tokens move to new positions, which invalidates every
    cached key; each step then recomputes the window from scratch, exactly as the uncached path does,
    so both paths write the same text.
    """
    check_sampling(temperature, top_p, repetition_penalty)
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
        if repetition_penalty != 1.0:
            logits = penalise_repetition(logits, idx, repetition_penalty)
        if temperature == 0 or top_k == 1:
            next_id = logits.argmax(dim=-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            if top_p is not None and top_p < 1:
                logits = nucleus(logits, top_p)
            probs = torch.softmax(logits.float(), dim=-1)
            next_id = torch.multinomial(probs, num_samples=1, generator=generator)
        idx = torch.cat((idx, next_id), dim=1)
        if stop is not None and stop(idx):
            break
    return idx
