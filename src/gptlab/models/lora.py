"""LoRA (Hu et al. 2021): trainable low-rank adapters beside the backbone's frozen linear projections.

A projection ``W`` becomes ``W + (alpha / rank) · B A`` with ``A`` (rank, in) and ``B`` (out, rank); ``B``
starts at zero, so an adapted model computes exactly what the pretrained one did until training moves it.
:class:`LoRALinear` is an ``nn.Linear`` that keeps the base weights under their own names, so a
checkpoint's keys are the plain model's plus ``lora_a`` / ``lora_b``; merging folds the adapters into the
weights and gives back a plain backbone (for export, or a checkpoint any gptlab model loads).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

# The projections of each block an adapter can sit on (names inside gptlab.models.gpt.Block).
TARGETS = ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")
ADAPTER_NAMES = ("lora_a", "lora_b")


@dataclass
class LoRAConfig:
    """``rank`` of the adapters, ``alpha`` (their update is scaled by ``alpha / rank``), ``dropout`` on
    their input, and the ``targets`` (of :data:`TARGETS`) they are added to in every block."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: Sequence[str] = field(default_factory=lambda: list(TARGETS))

    def __post_init__(self) -> None:
        self.targets = list(self.targets)
        if self.rank < 1:
            raise ValueError(f"model.lora.rank={self.rank} must be 1 or more (e.g. 8), or model.lora=null")
        if self.alpha <= 0:
            raise ValueError(f"model.lora.alpha={self.alpha} must be positive (e.g. twice the rank)")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"model.lora.dropout={self.dropout} must be in [0, 1)")
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown or not self.targets:
            raise ValueError(
                f"model.lora.targets={self.targets}: "
                f"{f'unknown {unknown}' if unknown else 'no projection named'}; choose from {list(TARGETS)}"
            )

    @classmethod
    def from_any(cls, value: LoRAConfig | Mapping) -> LoRAConfig:
        return value if isinstance(value, LoRAConfig) else cls(**dict(value))

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict:
        return asdict(self)


class LoRALinear(nn.Linear):
    """``base``'s weight and bias (the same parameters, not copies) plus a rank-``rank`` update."""

    def __init__(self, base: nn.Linear, config: LoRAConfig) -> None:
        super().__init__(base.in_features, base.out_features, bias=False, device="meta")
        self.weight, self.bias = base.weight, base.bias
        device, dtype = base.weight.device, base.weight.dtype
        self.lora_a = nn.Parameter(torch.empty(config.rank, base.in_features, device=device, dtype=dtype))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, config.rank, device=device, dtype=dtype))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # nn.Linear's own init, as the LoRA paper
        self.scale = config.scale
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(self.dropout(x), self.lora_a), self.lora_b)
        return F.linear(x, self.weight, self.bias) + self.scale * update

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` computing what this one does in eval mode."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        with torch.no_grad():
            linear.weight = nn.Parameter(self.weight + self.scale * self.lora_b @ self.lora_a)
        linear.bias = self.bias
        return linear


def _projections(backbone: nn.Module, targets: Sequence[str]):
    """(parent module, attribute name) of every targeted projection of every block."""
    for block in backbone.blocks:
        for target in targets:
            parent, name = target.split(".")
            yield getattr(block, parent), name


def add_lora(backbone: nn.Module, config: LoRAConfig) -> None:
    """Wrap the targeted projections of ``backbone`` (a :class:`gptlab.models.gpt.GPT`) in adapters and
    freeze everything else in it."""
    for parent, name in _projections(backbone, config.targets):
        setattr(parent, name, LoRALinear(getattr(parent, name), config))
    for name, param in backbone.named_parameters():
        param.requires_grad_(name.rsplit(".", 1)[-1] in ADAPTER_NAMES)


def merge_lora(backbone: nn.Module) -> None:
    """Fold every adapter of ``backbone`` into its weights: it becomes a plain backbone again."""
    for parent, name in _projections(backbone, TARGETS):
        module = getattr(parent, name)
        if isinstance(module, LoRALinear):
            setattr(parent, name, module.merged())


def merge_lora_state(state: Mapping[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """A backbone state dict with adapters -> the plain one with them folded into the weights."""
    merged = {k: v for k, v in state.items() if k.rsplit(".", 1)[-1] not in ADAPTER_NAMES}
    for key, lora_a in state.items():
        if key.endswith(".lora_a"):
            prefix = key.removesuffix(".lora_a")
            update = scale * state[f"{prefix}.lora_b"].float() @ lora_a.float()
            weight = merged[f"{prefix}.weight"]
            merged[f"{prefix}.weight"] = (weight.float() + update).to(weight.dtype)
    return merged
