"""Optimizer parameter groups and learning-rate schedules."""

from __future__ import annotations

import math
from collections.abc import Callable

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


def layerwise_lr_groups(
    model: nn.Module, depth: Callable[[str], int], num_depths: int, decay: float
) -> list[dict]:
    """:func:`weight_decay_groups`, split further by depth, for layer-wise learning-rate decay.

    ``depth(name)`` places each parameter between 0 (the input embeddings) and ``num_depths - 1`` (the
    output head); a parameter at depth ``d`` trains at ``lr * decay ** (num_depths - 1 - d)``, so layers
    far from the new head move least (ULMFiT, ELECTRA). Apply the scales with :func:`apply_lr_scales`.
    """
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():  # de-duplicates tied weights
        if not param.requires_grad:
            continue
        d, decays = depth(name), param.dim() >= 2
        if (d, decays) not in groups:
            group = {"params": [], "lr_scale": decay ** (num_depths - 1 - d)}
            group["name"] = f"{'decay' if decays else 'no_decay'}_depth{d}"
            if not decays:
                group["weight_decay"] = 0.0
            groups[d, decays] = group
        groups[d, decays]["params"].append(param)
    return [groups[key] for key in sorted(groups)]


def apply_lr_scales(optimizer: torch.optim.Optimizer) -> None:
    """Multiply each group's lr by its ``lr_scale`` (once: the key is removed); do it before building a
    scheduler, which takes the scaled lr as the group's base."""
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * group.pop("lr_scale", 1.0)


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
