"""Weight-decay groups and the warmup + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch

from gptlab.models.optim import warmup_cosine, weight_decay_groups
from tests.test_model import tiny_module


def nanogpt_lr(it: int, lr=1e-3, min_lr=1e-4, warmup=100, decay_iters=2000) -> float:
    """nanoGPT's get_lr, written out as the reference."""
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    if it > decay_iters:
        return min_lr
    ratio = (it - warmup) / (decay_iters - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def test_schedule_follows_nanogpt_step_by_step():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    scheduler = warmup_cosine(optimizer, warmup_steps=100, total_steps=2000, min_lr=1e-4)
    seen = []
    for _ in range(2100):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    for it in (0, 1, 50, 99, 100, 101, 1000, 1999, 2000, 2099):
        assert seen[it] == pytest.approx(nanogpt_lr(it), rel=1e-9), it


def test_only_matrices_and_embeddings_decay():
    model = tiny_module()
    decay, no_decay = weight_decay_groups(model)
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0 and "weight_decay" not in decay
    total = sum(p.numel() for group in (decay, no_decay) for p in group["params"])
    assert total == sum(p.numel() for p in model.parameters())
