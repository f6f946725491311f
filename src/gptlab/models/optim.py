"""Optimizer parameter groups and learning-rate schedules."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR


def weight_decay_groups(model: nn.Module) -> list[dict]:
    """Decay matrices and embeddings (dim >= 2); never biases or norm gains (as GPT-2 / nanoGPT)."""
    params = [p for p in model.parameters() if p.requires_grad]  # parameters() de-duplicates tied weights
    return [
        {"params": [p for p in params if p.dim() >= 2], "name": "decay"},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0, "name": "no_decay"},
    ]


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr: float
) -> LambdaLR:
    """Linear warmup to the optimizer's lr over ``warmup_steps``, then cosine decay to ``min_lr`` at
    ``total_steps`` (held there afterwards). Step it once per optimizer step."""
    base_lr = optimizer.defaults["lr"]
    floor = min_lr / base_lr

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if step >= total_steps:
            return floor
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (1.0 - floor)

    return LambdaLR(optimizer, factor)
