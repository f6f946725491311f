"""Optimizer parameter groups and learning-rate schedules."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR


def weight_decay_groups(model: nn.Module, hidden: Collection[nn.Parameter] = ()) -> list[dict]:
    """Decay matrices and embeddings (dim >= 2); never biases or norm gains (as GPT-2 / nanoGPT).

    The parameters in ``hidden`` (the blocks' matrices, for :class:`MuonAdamW`) get a group of their
    own, named ``"hidden"``, first.
    """
    params = [p for p in model.parameters() if p.requires_grad]  # parameters() de-duplicates tied weights
    hidden_ids = {id(p) for p in hidden}
    groups = [{"params": [p for p in params if id(p) in hidden_ids], "name": "hidden"}] if hidden else []
    params = [p for p in params if id(p) not in hidden_ids]
    return [
        *groups,
        {"params": [p for p in params if p.dim() >= 2], "name": "decay"},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0, "name": "no_decay"},
    ]


class MuonAdamW(torch.optim.Optimizer):
    """``torch.optim.Muon`` for the group named ``"hidden"`` (2-D weight matrices inside the blocks),
    AdamW for the others (embeddings, the head, norm gains and biases, which Muon's orthogonalised
    update does not suit), stepped together as one optimizer so that Lightning, LR schedulers and the
    LR monitor see every group.

    ``lr``, ``momentum``, ``weight_decay`` and ``adjust_lr_fn`` are Muon's; ``adam_lr`` (None: ``lr``),
    ``betas`` and ``adam_weight_decay`` (None: ``weight_decay``) AdamW's; a group's own ``weight_decay``
    (0 for gains and biases) wins. With ``adjust_lr_fn="match_rms_adamw"`` Muon's updates have AdamW's
    size, so one ``lr`` and ``weight_decay`` suit both (Liu et al. 2025, "Muon is Scalable").
    """

    def __init__(
        self,
        params: Iterable[dict],
        lr: float = 1e-3,
        momentum: float = 0.95,
        weight_decay: float = 0.1,
        adjust_lr_fn: str | None = "match_rms_adamw",
        adam_lr: float | None = None,
        betas: tuple[float, float] = (0.9, 0.95),
        adam_weight_decay: float | None = None,
        fused: bool | None = None,
    ) -> None:
        groups = [dict(group) for group in params]
        hidden = [group for group in groups if group.get("name") == "hidden"]
        rest = [group for group in groups if group.get("name") != "hidden"]
        if not hidden or not rest:
            raise ValueError(
                "model/optimizer=muon needs the blocks' matrices in a parameter group named 'hidden' and "
                f"the other weights apart, got groups {[g.get('name') for g in groups]}; use it with a "
                "GPT language model (or a classifier without layer_lr_decay)"
            )
        self.muon = torch.optim.Muon(
            hidden, lr=lr, momentum=momentum, weight_decay=weight_decay, adjust_lr_fn=adjust_lr_fn
        )
        self.adamw = torch.optim.AdamW(
            rest,
            lr=lr if adam_lr is None else adam_lr,
            betas=tuple(betas),
            weight_decay=weight_decay if adam_weight_decay is None else adam_weight_decay,
            fused=fused,
        )
        super().__init__([p for group in groups for p in group["params"]], {"lr": lr})
        # The inner optimizers' own group dicts: a scheduler's or monitor's change reaches them.
        self.param_groups = self.muon.param_groups + self.adamw.param_groups

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])


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


def warmup_stable_decay(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int = 0,
    decay_fraction: float = 0.3,
    min_lr: float = 0.0,
) -> LambdaLR:
    """The "trapezoidal" schedule: linear warmup over ``warmup_steps`` (the same key as
    :func:`warmup_cosine`'s, so a recipe's warmup carries over), the optimizer's lr held through the
    stable phase, then a linear decay to ``min_lr`` over the last ``decay_fraction`` of ``total_steps``
    (held there afterwards). Where warmup and decay overlap, the lower of the two applies. Step it once
    per optimizer step."""
    if not 0 <= decay_fraction <= 1 or warmup_steps < 0:
        raise ValueError(
            f"model.scheduler: decay_fraction={decay_fraction} must be in [0, 1] and "
            f"warmup_steps={warmup_steps} at least 0"
        )
    decay_steps = round(decay_fraction * total_steps)
    floor = min_lr / optimizer.defaults["lr"]

    def factor(step: int) -> float:
        warmup = (step + 1) / (warmup_steps + 1) if step < warmup_steps else 1.0
        if step >= total_steps:
            return floor
        if step < total_steps - decay_steps:
            return warmup
        return min(warmup, floor + (1.0 - floor) * (total_steps - step) / decay_steps)

    return LambdaLR(optimizer, factor)
