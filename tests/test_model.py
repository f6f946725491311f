"""The backbone, the LM head and the module's training logic."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gptlab.models.gpt import GPT, GPTConfig
from gptlab.models.module import GPTModule

BACKBONE = {"block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 32, "dropout": 0.0, "bias": True}


def tiny_module(vocab_size: int = 50, **overrides) -> GPTModule:
    torch.manual_seed(0)
    return GPTModule(vocab_size=vocab_size, backbone={**BACKBONE, **overrides})


def test_changing_a_future_token_leaves_past_logits_unchanged():
    model = tiny_module().eval()
    idx = torch.randint(0, 50, (2, 16))
    changed = idx.clone()
    changed[:, 9] = (changed[:, 9] + 1) % 50
    with torch.no_grad():
        before, after = model(idx), model(changed)
    torch.testing.assert_close(before[:, :9], after[:, :9], rtol=0, atol=1e-6)
    assert not torch.allclose(before[:, 9:], after[:, 9:])


def test_loss_at_initialisation_is_close_to_uniform():
    vocab = 65
    model = tiny_module(vocab)
    idx = torch.randint(0, vocab, (8, 16))
    loss = model._loss((idx, torch.randint(0, vocab, (8, 16))))
    assert abs(loss.item() - math.log(vocab)) < 0.1


def test_a_tiny_model_overfits_one_batch():
    model = tiny_module()
    batch = (torch.randint(0, 50, (4, 16)), torch.randint(0, 50, (4, 16)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(200):
        loss = model._loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1


def test_lm_head_is_tied_to_token_embedding():
    model = tiny_module()
    assert model.lm_head.weight is model.backbone.wte.weight
    names = [name for name, _ in model.named_parameters()]
    assert "lm_head.weight" not in names  # counted and optimized once


def test_residual_projections_get_scaled_init():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=100, block_size=16, n_layer=8, n_head=4, n_embd=256)
    model = GPT(config)
    expected = 0.02 / math.sqrt(2 * config.n_layer)
    assert model.blocks[0].attn.proj.weight.std().item() == pytest.approx(expected, rel=0.05)
    assert model.blocks[0].mlp.proj.weight.std().item() == pytest.approx(expected, rel=0.05)
    assert model.blocks[0].mlp.fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_attention_matches_a_manual_causal_softmax():
    model = tiny_module().eval()
    attn = model.backbone.blocks[0].attn
    x = torch.randn(2, 7, 32)
    q, k, v = attn.qkv(x).split(32, dim=2)
    q, k, v = (t.view(2, 7, 2, 16).transpose(1, 2) for t in (q, k, v))
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(16)
    scores = scores.masked_fill(torch.triu(torch.ones(7, 7, dtype=torch.bool), 1), float("-inf"))
    manual = (F.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(2, 7, 32)
    torch.testing.assert_close(attn(x), attn.proj(manual))


def test_bad_shapes_are_explained():
    with pytest.raises(ValueError, match="n_embd=30 is not divisible by n_head=4"):
        GPTConfig(vocab_size=10, n_embd=30, n_head=4)
    model = tiny_module()
    with pytest.raises(ValueError, match="exceeds the model's block_size 16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_hyperparameters_are_primitives():
    hparams = dict(tiny_module().hparams)
    assert hparams == {"vocab_size": 50, "backbone": BACKBONE}
