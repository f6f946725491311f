"""Small building blocks behind the backbone's switches: the norm choice and rotary position embeddings."""

from __future__ import annotations

import torch
from torch import nn


def make_norm(kind: str, dim: int, bias: bool) -> nn.Module:
    """``"layernorm"`` (GPT-2) or ``"rmsnorm"`` (scale only, no centring and no bias: LLaMA); the kind
    was checked by ``GPTConfig``."""
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=1e-5)  # LayerNorm's eps, not torch's default float epsilon
    return nn.LayerNorm(dim, bias=bias)


class Rotary(nn.Module):
    """Rotary position embeddings (RoPE, Su et al. 2021): rotate pairs of query/key channels by an angle
    proportional to the token's position, so that q·k depends on the positions only through their
    difference. Channel ``c`` is paired with ``c + head_dim/2`` (the "half-split" layout); pair ``i``
    turns at frequency ``base ** (-2i / head_dim)``.

    Holds no weights: the cos/sin tables are rebuilt from the config, so checkpoints do not carry them.
    ``head_dim`` is even (``GPTConfig`` checks it).
    """

    def __init__(self, head_dim: int, max_positions: int, base: float = 10000.0) -> None:
        super().__init__()
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float64), inv_freq)
        # Built in float64 then stored in float32: angles at large positions keep their precision.
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions (T,) -> the (T, head_dim/2) cos and sin tables that :func:`apply_rotary` takes."""
        return self.cos[positions], self.sin[positions]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (..., T, head_dim) by the angles whose cos/sin are (T, head_dim/2)."""
    first, second = x.float().chunk(2, dim=-1)
    rotated = torch.cat((first * cos - second * sin, first * sin + second * cos), dim=-1)
    return rotated.type_as(x)  # the tables are float32; keep bf16/fp16 activations in their dtype
