"""The GPT backbone: a plain ``nn.Module`` (no Lightning) that maps token ids to hidden states.

Heads live in :mod:`gptlab.models.heads`, so pretraining and classification share this exact module.
GPT-2 is the default; config switches turn on the later variants one by one: rotary positions, RMSNorm,
a SwiGLU or ReLU² MLP, linears without bias, grouped-query attention, QK-norm, an untied head, logit
soft-capping and zero-initialised output projections (the last four from the modded-nanogpt speedruns).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from gptlab.models.layers import Rotary, apply_rotary, make_norm

if TYPE_CHECKING:
    from gptlab.models.generation import KVCache

PosEmbedding = Literal["learned", "rope"]
Norm = Literal["layernorm", "rmsnorm"]
MLPKind = Literal["gelu", "swiglu", "relu2"]
GeluApproximation = Literal["none", "tanh"]
# The string fields with a fixed set of values, checked once here: the layers trust the config.
CHOICES = {"pos_embedding": PosEmbedding, "norm": Norm, "mlp": MLPKind, "gelu_approximate": GeluApproximation}
# Backbone settings a fine-tune (of a gptlab checkpoint or a Hugging Face GPT-2) may choose for itself:
# they change how it trains or computes, not what the weights mean (pad_vocab_to_multiple only adds
# embedding rows no id looks up). Every other setting is the pretrained model's, except block_size,
# which may shrink but not grow: learned positions are a prefix, and no position beyond them was learned.
# zero_init_proj only sets how fresh weights start, so loaded weights make it moot.
FINETUNE_CHOICES = ("dropout", "attention_fp32", "pad_vocab_to_multiple", "zero_init_proj")


@dataclass
class GPTConfig:
    """Every field is a primitive: the config travels in checkpoints' hyperparameters."""

    vocab_size: int
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = True
    # The embedding (and the tied head's matmul) get rows up to a multiple of this; the extra ids are
    # never looked up, and the head drops their logits. 1 turns padding off.
    pad_vocab_to_multiple: int = 64
    pos_embedding: PosEmbedding = "learned"  # GPT-2's, or rotary
    rope_base: float = 10000.0
    norm: Norm = "layernorm"
    mlp: MLPKind = "gelu"
    # None: 4·n_embd for gelu and relu2, 8/3·n_embd up to a multiple of 64 for swiglu
    mlp_hidden: int | None = None
    n_kv_head: int | None = None  # fewer key/value heads than query heads: grouped-query attention
    # The GELU MLP's activation: "none" is the exact erf form (torch's default); "tanh" is the
    # approximation GPT-2 was trained with ("gelu_new" in Hugging Face), which imported weights need.
    gelu_approximate: GeluApproximation = "none"
    # Run the attention call in float32 even under bf16/fp16 autocast: on CPUs, bf16 attention's
    # backward is much slower than fp32's. Leave off on GPUs, where flash attention wants bf16.
    attention_fp32: bool = False
    # RMS-normalise each head's queries and keys (no weights) before attention: bounded scores let a
    # higher learning rate train stably.
    qk_norm: bool = False
    # The LM head reuses the token embedding (GPT-2); false gives it its own weights.
    tie_embeddings: bool = True
    # Logits become cap·tanh(logits/cap), bounded by ±cap; None: raw logits (GPT-2).
    logit_softcap: float | None = None
    # Start each block's output projections (attention and MLP) at zero, so every block begins as the
    # identity on the residual stream.
    zero_init_proj: bool = False

    def __post_init__(self) -> None:
        for key in ("block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.backbone.{key}={getattr(self, key)} must be 1 or more")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                "choose model.backbone.n_embd as a multiple of model.backbone.n_head"
            )
        for key, choice in CHOICES.items():
            if getattr(self, key) not in get_args(choice):
                raise ValueError(
                    f"model.backbone.{key}={getattr(self, key)!r} is not one of {get_args(choice)}"
                )
        if self.n_head % self.kv_heads:
            raise ValueError(
                f"n_kv_head={self.n_kv_head} does not divide n_head={self.n_head}; each key/value head "
                "must serve the same number of query heads"
            )
        if self.pos_embedding == "rope" and self.head_dim % 2:
            raise ValueError(
                f"rotary embeddings need an even head size, got n_embd/n_head={self.head_dim}; "
                "change model.backbone.n_embd or n_head"
            )
        if self.logit_softcap is not None and not self.logit_softcap > 0:
            raise ValueError(
                f"model.backbone.logit_softcap={self.logit_softcap} must be > 0, or null for no cap"
            )
        if self.pad_vocab_to_multiple < 1:
            raise ValueError(
                f"pad_vocab_to_multiple must be >= 1 (1: no padding), got {self.pad_vocab_to_multiple}"
            )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def padded_vocab_size(self) -> int:
        return self.pad_vocab_to_multiple * math.ceil(self.vocab_size / self.pad_vocab_to_multiple)

    @property
    def mlp_hidden_size(self) -> int:
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        if self.mlp == "swiglu":
            # SwiGLU has three matrices to GELU's two: 8/3·n_embd keeps the parameter count close (LLaMA).
            return 64 * math.ceil(8 * self.n_embd / 3 / 64)
        return 4 * self.n_embd

    def to_dict(self) -> dict:
        return asdict(self)


def fit_to_backbone(state: Mapping[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    """Pretrained backbone weights -> the shapes of ``GPT(config)``: the token embedding re-padded to
    ``config.padded_vocab_size`` rows when its padding differs (the first ``config.vocab_size`` real rows
    copied, the rest zero), learned positions cut to ``config.block_size``."""
    fitted = dict(state)
    wte = state["wte.weight"]
    if wte.size(0) != config.padded_vocab_size:
        padded = wte.new_zeros(config.padded_vocab_size, wte.size(1))
        padded[: config.vocab_size] = wte[: config.vocab_size]
        fitted["wte.weight"] = padded
    if "wpe.weight" in state:  # rotary positions have no weights
        fitted["wpe.weight"] = state["wpe.weight"][: config.block_size]
    return fitted


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer_index: int) -> None:
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.kv_heads, config.head_dim
        self.layer_index = layer_index  # its slot in a KVCache
        self.qkv = nn.Linear(
            config.n_embd, (self.n_head + 2 * self.n_kv_head) * self.head_dim, bias=config.bias
        )
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.proj.is_residual_projection = True
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.attention_fp32 = config.attention_fp32
        self.qk_norm = config.qk_norm

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        batch, time, channels = x.shape
        kv_channels = self.n_kv_head * self.head_dim
        q, k, v = self.qkv(x).split([channels, kv_channels, kv_channels], dim=2)
        # (B, T, heads * head_dim) -> (B, heads, T, head_dim)
        q = q.view(batch, time, self.n_head, self.head_dim).transpose(1, 2)
        k, v = (t.view(batch, time, self.n_kv_head, self.head_dim).transpose(1, 2) for t in (k, v))
        if self.qk_norm:
            q, k = F.rms_norm(q, (self.head_dim,), eps=1e-5), F.rms_norm(k, (self.head_dim,), eps=1e-5)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.update(self.layer_index, k, v)  # now every token so far, not just the new ones
        attend = functools.partial(
            F.scaled_dot_product_attention,
            attn_mask=causal_mask(time, past, x.device),
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=past == 0,
            # Grouped-query attention: each key/value head serves n_head / n_kv_head query heads. SDPA
            # shares them itself (torch >= 2.5), faster than copying them with repeat_interleave.
            enable_gqa=self.n_kv_head != self.n_head,
        )
        if self.attention_fp32:
            # Outside autocast, which would cast q, k, v back down; the rest of the block stays bf16.
            with torch.autocast(x.device.type, enabled=False):
                y = attend(q.float(), k.float(), v.float()).to(q.dtype)
        else:
            y = attend(q, k, v)
        y = y.transpose(1, 2).contiguous().view(batch, time, channels)
        return self.resid_dropout(self.proj(y))


def causal_mask(time: int, past: int, device: torch.device) -> torch.Tensor | None:
    """The mask for ``time`` new queries after ``past`` cached keys, or None where SDPA needs none.

    ``is_causal`` aligns its triangle to the top-left corner, which is right only when nothing is cached;
    a single new token may see everything.
    """
    if past == 0 or time == 1:
        return None
    # Query i sits at position past + i and may see keys 0 .. past + i.
    return torch.ones(time, past + time, dtype=torch.bool, device=device).tril(diagonal=past)


class MLP(nn.Module):
    """GPT-2's GELU MLP, SwiGLU (``silu(gate) * up``, Shazeer 2020) when ``config.mlp == "swiglu"``, or
    ReLU² (``relu(x)**2``, So et al. 2021) when ``"relu2"``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        hidden = config.mlp_hidden_size
        self.gated = config.mlp == "swiglu"
        self.kind = config.mlp
        self.gelu_approximate = config.gelu_approximate
        # SwiGLU's gate and up projections share one matmul.
        self.fc = nn.Linear(config.n_embd, (2 if self.gated else 1) * hidden, bias=config.bias)
        self.proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.proj.is_residual_projection = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.fc(x)
        if self.gated:
            gate, up = hidden.chunk(2, dim=-1)
            hidden = F.silu(gate) * up
        elif self.kind == "relu2":
            hidden = F.relu(hidden).square()
        else:
            hidden = F.gelu(hidden, approximate=self.gelu_approximate)
        return self.dropout(self.proj(hidden))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, config: GPTConfig, layer_index: int) -> None:
        super().__init__()
        self.ln_1 = make_norm(config.norm, config.n_embd, config.bias)
        self.attn = CausalSelfAttention(config, layer_index)
        self.ln_2 = make_norm(config.norm, config.n_embd, config.bias)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), rope, cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Token embeddings (+ learned positions, or rotary ones inside attention), ``n_layer`` blocks and a
    final norm -> hidden states."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.padded_vocab_size, config.n_embd)
        learned = config.pos_embedding == "learned"
        self.wpe = nn.Embedding(config.block_size, config.n_embd) if learned else None
        self.rotary = None if learned else Rotary(config.head_dim, config.block_size, config.rope_base)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = make_norm(config.norm, config.n_embd, config.bias)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            std = 0.02
            residual = getattr(module, "is_residual_projection", False)
            if residual:
                # GPT-2: keep the residual stream's variance flat as depth grows.
                std /= math.sqrt(2 * self.config.n_layer)
            if residual and self.config.zero_init_proj:
                nn.init.zeros_(module.weight)
            else:
                nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self, exclude_positions: bool = True) -> int:
        total = sum(p.numel() for p in self.parameters())
        if exclude_positions and self.wpe is not None:
            total -= self.wpe.weight.numel()
        return total

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token (forward and backward) at context length ``seq_len`` (default
        block_size), as nanoGPT's ``estimate_mfu`` counts them (PaLM, appendix B): 6 per weight for the
        matmuls, position embeddings excluded (they are a lookup), plus 12·L·H·Q·T for attention's
        scores and weighted sums (L layers, H heads, Q head size, T context)."""
        config = self.config
        seq_len = config.block_size if seq_len is None else seq_len
        attention = 12 * config.n_layer * config.n_head * config.head_dim * seq_len
        return 6 * self.num_parameters(exclude_positions=True) + attention

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """``idx`` (B, T) token ids -> (B, T, n_embd) hidden states after the final norm.

        With a :class:`~gptlab.models.generation.KVCache`, ``idx`` continues the cached tokens: its
        positions start at ``cache.length``, it attends to the cached keys and values, and it is
        appended to them.
        """
        time = idx.size(1)
        past = 0 if cache is None else cache.length
        if past + time > self.config.block_size:
            cached = f"{past} cached tokens and " if past else ""
            raise ValueError(
                f"{cached}sequence of length {time} exceeds the model's block_size "
                f"{self.config.block_size}; crop the context (and start a new cache)"
            )
        positions = torch.arange(past, past + time, device=idx.device)
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(positions)
        x = self.drop(x)
        rope = None if self.rotary is None else self.rotary(positions)
        for block in self.blocks:
            x = block(x, rope, cache)
        if cache is not None:
            cache.advance(time)
        return self.ln_f(x)
