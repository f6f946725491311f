"""The backbone, the LM head and the module's training logic."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gptlab.models.generation import sample
from gptlab.models.gpt import GPT, GPTConfig
from gptlab.tasks.lm import GPTModule

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
    defaults = {
        "pad_vocab_to_multiple": 64,
        "pos_embedding": "learned",
        "rope_base": 10000.0,
        "norm": "layernorm",
        "mlp": "gelu",
        "mlp_hidden": None,
        "n_kv_head": None,
        "gelu_approximate": "none",
        "attention_fp32": False,
        "qk_norm": False,
        "tie_embeddings": True,
        "logit_softcap": None,
        "zero_init_proj": False,
    }
    assert hparams == {"vocab_size": 50, "backbone": {**BACKBONE, **defaults}}


def test_padded_vocabulary_ids_are_never_sampled():
    model = tiny_module(vocab_size=50).eval()
    assert model.backbone.wte.num_embeddings == 64  # 50 rounded up to a multiple of 64
    with torch.no_grad():
        # Padding rows that would win the argmax if their logits were read out: scaled real rows.
        model.backbone.wte.weight[50:] = 20 * model.backbone.wte.weight[:14]
    idx = torch.randint(0, 50, (4, 3))
    assert model(idx).shape == (4, 3, 50)
    greedy = sample(model, idx, 20, 16, temperature=0)
    hot = sample(model, idx, 20, 16, temperature=3.0, generator=torch.Generator().manual_seed(0))
    assert greedy.max() < 50 and hot.max() < 50


def test_a_padded_model_gives_the_loss_of_an_unpadded_one_with_the_same_weights():
    padded = tiny_module(vocab_size=50)
    unpadded = tiny_module(vocab_size=50, pad_vocab_to_multiple=1)
    assert unpadded.backbone.wte.num_embeddings == 50
    state = padded.state_dict()
    for tied in ("backbone.wte.weight", "lm_head.weight"):  # one tensor, listed under both names
        state[tied] = state[tied][:50]
    unpadded.load_state_dict(state)
    batch = (torch.randint(0, 50, (4, 16)), torch.randint(0, 50, (4, 16)))
    torch.testing.assert_close(padded._loss(batch), unpadded._loss(batch))


def test_flops_per_token_matches_a_hand_count():
    config = GPTConfig(vocab_size=10, block_size=8, n_layer=2, n_head=2, n_embd=8)
    model = GPT(config)
    embedding = 64 * 8  # 10 tokens padded to 64 rows; position embeddings are left out
    block = (
        2 * (8 + 8)  # two LayerNorms, weight and bias
        + (8 * 24 + 24)  # qkv
        + (8 * 8 + 8)  # attention output projection
        + (8 * 32 + 32)  # MLP up
        + (32 * 8 + 8)  # MLP down
    )
    weights = embedding + 2 * block + (8 + 8)  # + the final LayerNorm
    assert weights == 2272 == model.num_parameters()
    attention = 12 * 2 * 2 * 4  # 12 · layers · heads · head size, per token of context
    assert model.flops_per_token(seq_len=4) == 6 * weights + attention * 4 == 14_400
    assert model.flops_per_token() == 6 * weights + attention * 8  # block_size by default


def test_validation_loss_weights_each_batch_by_its_tokens():
    from gptlab.tasks.lm import Perplexity, WeightedMean

    mean, ppl = WeightedMean(), Perplexity()
    for value, tokens in [(1.0, 64), (3.0, 16)]:  # a full batch, then a smaller last one
        mean.update(torch.tensor(value), tokens)
        ppl.update(torch.tensor(value), tokens)
    assert mean.compute().item() == pytest.approx((64 * 1.0 + 16 * 3.0) / 80)
    assert ppl.compute().item() == pytest.approx(math.exp(1.4), rel=1e-6)


def spy_on_attention(monkeypatch) -> list[tuple[torch.dtype, bool]]:
    """Record each attention call's query dtype and whether CPU autocast was on around it."""
    calls, attend = [], F.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        calls.append((q.dtype, torch.is_autocast_enabled("cpu")))
        return attend(q, k, v, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    return calls


@pytest.mark.parametrize("attention_fp32", [False, True])
def test_attention_fp32_keeps_the_attention_call_in_float32_under_bf16_autocast(monkeypatch, attention_fp32):
    model = tiny_module(attention_fp32=attention_fp32).eval()
    idx = torch.randint(0, 50, (2, 16))
    with torch.no_grad():
        reference = model(idx)  # fp32 throughout
        calls = spy_on_attention(monkeypatch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(idx)
    expected = (torch.float32, False) if attention_fp32 else (torch.bfloat16, True)
    assert calls == [expected] * BACKBONE["n_layer"]
    assert mixed.dtype == torch.bfloat16  # the head's matmul is still autocast's
    torch.testing.assert_close(mixed.float(), reference, atol=0.05, rtol=0.05)  # bf16's precision


def test_attention_fp32_is_a_saved_hyperparameter():
    model = tiny_module(attention_fp32=True)
    assert model.hparams["backbone"]["attention_fp32"] is True
    rebuilt = GPTModule(**model.hparams)  # what load_module does
    assert all(block.attn.attention_fp32 for block in rebuilt.backbone.blocks)


def test_attention_fp32_stays_causal_under_bf16_autocast():
    model = tiny_module(attention_fp32=True).eval()
    idx = torch.randint(0, 50, (2, 16))
    changed = idx.clone()
    changed[:, 9] = (changed[:, 9] + 1) % 50
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        before, after = model(idx), model(changed)
    torch.testing.assert_close(before[:, :9], after[:, :9], rtol=0, atol=1e-6)
    assert not torch.allclose(before[:, 9:], after[:, 9:])


def test_attention_fp32_with_the_kv_cache_matches_a_full_forward_under_bf16_autocast():
    from gptlab.models.generation import KVCache

    model = tiny_module(attention_fp32=True).eval()
    idx = torch.randint(0, 50, (2, 16))
    cache = KVCache(16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        full = model(idx)
        chunks = [model(idx[:, :7], cache=cache), model(idx[:, 7:12], cache=cache)]
        chunks += [model(idx[:, t : t + 1], cache=cache) for t in range(12, 16)]
    torch.testing.assert_close(torch.cat(chunks, dim=1).float(), full.float(), atol=0.05, rtol=0.05)
    greedy = [sample(model, idx[:, :4], 12, 16, temperature=0, use_cache=c) for c in (True, False)]
    assert torch.equal(*greedy)


@pytest.mark.slow
def test_attention_fp32_survives_torch_compile_under_bf16_autocast():
    model = tiny_module(attention_fp32=True)
    idx = torch.randint(0, 50, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eager = model(idx)
        model.backbone.compile()  # in place, as model.compile=true does
        compiled = model(idx)
        compiled.float().sum().backward()
    torch.testing.assert_close(compiled.float(), eager.float(), atol=0.05, rtol=0.05)
    assert model.backbone.wte.weight.grad is not None
