"""The backbone's modern switches: rotary positions, RMSNorm, SwiGLU, no bias, grouped-query attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn

from gptlab.models.generation import KVCache
from gptlab.models.gpt import GPT, GPTConfig
from gptlab.models.layers import Rotary, apply_rotary
from gptlab.tasks.lm import GPTModule

VOCAB = 40
TINY = {"block_size": 16, "n_layer": 2, "n_head": 4, "n_embd": 32}
VARIANTS = {
    "gpt2": {},
    "rope": {"pos_embedding": "rope"},
    "rmsnorm": {"norm": "rmsnorm"},
    "swiglu": {"mlp": "swiglu"},
    "no_bias": {"bias": False},
    "gqa": {"n_kv_head": 2},
    "mqa": {"n_kv_head": 1},
    "modern": {"pos_embedding": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False, "n_kv_head": 2},
}
each_variant = pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())


def tiny_model(variant: dict) -> GPTModule:
    torch.manual_seed(0)
    return GPTModule(vocab_size=VOCAB, backbone={**TINY, **variant})


@each_variant
def test_shapes(variant):
    model = tiny_model(variant)
    idx = torch.randint(0, VOCAB, (3, 11))
    assert model.backbone(idx).shape == (3, 11, 32)
    assert model(idx).shape == (3, 11, VOCAB)


def test_each_switch_builds_what_it_names():
    def build(**switches) -> GPT:
        return GPT(GPTConfig(vocab_size=VOCAB, **TINY, **switches))

    rope = build(pos_embedding="rope")
    assert rope.wpe is None
    assert set(build().state_dict()) - set(rope.state_dict()) == {"wpe.weight"}  # no rotary tables saved
    assert set(rope.state_dict()) < set(build().state_dict())
    assert isinstance(build(norm="rmsnorm").blocks[0].ln_1, nn.RMSNorm)
    # 8/3 · 32 = 85.3, up to a multiple of 64; gate and up projections share one matmul.
    assert build(mlp="swiglu").blocks[0].mlp.fc.out_features == 2 * 128
    assert build(mlp="swiglu", mlp_hidden=48).blocks[0].mlp.fc.out_features == 2 * 48
    assert all(m.bias is None for m in build(bias=False).modules() if isinstance(m, nn.Linear))
    # 4 query heads of 8 channels, 1 key head and 1 value head.
    assert build(n_kv_head=1).blocks[0].attn.qkv.out_features == (4 + 2 * 1) * 8


@each_variant
def test_changing_a_future_token_leaves_past_logits_unchanged(variant):
    model = tiny_model(variant).eval()
    idx = torch.randint(0, VOCAB, (2, 16))
    changed = idx.clone()
    changed[:, 9] = (changed[:, 9] + 1) % VOCAB
    with torch.no_grad():
        before, after = model(idx), model(changed)
    torch.testing.assert_close(before[:, :9], after[:, :9], rtol=0, atol=1e-6)
    assert not torch.allclose(before[:, 9:], after[:, 9:])


@each_variant
def test_decoding_token_by_token_through_the_cache_matches_a_full_forward(variant):
    model = tiny_model(variant).eval()
    idx = torch.randint(0, VOCAB, (2, 16))
    cache = KVCache(16)
    with torch.no_grad():
        prefill = model(idx[:, :6], cache=cache)
        steps = [model(idx[:, t : t + 1], cache=cache) for t in range(6, 16)]
        full = model(idx)
    torch.testing.assert_close(torch.cat([prefill, *steps], dim=1), full, rtol=1e-5, atol=1e-5)


def test_rotary_scores_depend_only_on_the_relative_position():
    torch.manual_seed(0)
    rotary = Rotary(head_dim=8, max_positions=64)
    q, k = torch.randn(8), torch.randn(8)

    def score(i: int, j: int) -> torch.Tensor:
        positions = torch.tensor([i, j])
        cos, sin = rotary(positions)
        rotated_q = apply_rotary(q.expand(2, 8), cos, sin)[0]
        rotated_k = apply_rotary(k.expand(2, 8), cos, sin)[1]
        return rotated_q @ rotated_k

    for i, j in ((5, 2), (9, 9), (3, 7)):
        for shift in (1, 13, 40):
            torch.testing.assert_close(score(i, j), score(i + shift, j + shift), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(score(5, 2), score(5, 3))  # the distance does matter
    cos, sin = rotary(torch.arange(3))
    rotated = apply_rotary(q.expand(3, 8), cos, sin)
    torch.testing.assert_close(rotated.norm(dim=-1), q.norm().expand(3))  # a rotation keeps lengths
    torch.testing.assert_close(rotated[0], q)  # position 0 is not rotated


def test_a_rope_model_sees_token_order_without_position_embeddings():
    model = tiny_model({"pos_embedding": "rope"}).eval()
    idx = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        # The last token's output would be order-blind without positions: causal attention over the same
        # set of tokens gives the same mix.
        assert not torch.allclose(model(idx)[0, -1], model(idx[:, [2, 1, 0, 3]])[0, -1])


@each_variant
def test_a_short_training_run_lowers_the_loss(variant):
    model = tiny_model(variant)
    generator = torch.Generator().manual_seed(0)
    # Learnable data: each sequence counts up from a random start, modulo the vocabulary.
    starts = torch.randint(0, VOCAB, (8, 1), generator=generator)
    sequences = (starts + torch.arange(17)) % VOCAB
    inputs, targets = sequences[:, :-1], sequences[:, 1:]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        logits = model(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]  # from ln(40) = 3.7 at the start to about 0.1 in practice


def test_a_modern_checkpoint_rebuilds_from_primitives_alone(tmp_path):
    model = tiny_model(VARIANTS["modern"]).eval()
    path = tmp_path / "model.pt"
    torch.save({"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}, path)
    saved = torch.load(path, weights_only=True)
    rebuilt = GPTModule(**saved["hyper_parameters"]).eval()
    rebuilt.load_state_dict(saved["state_dict"])
    idx = torch.randint(0, VOCAB, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(idx), model(idx))


def test_bad_switches_are_explained():
    with pytest.raises(ValueError, match=r"model.backbone.norm='batchnorm' is not one of"):
        GPTConfig(vocab_size=VOCAB, norm="batchnorm")
    with pytest.raises(ValueError, match="n_kv_head=3 does not divide n_head=4"):
        GPTConfig(vocab_size=VOCAB, **TINY, n_kv_head=3)
    with pytest.raises(ValueError, match="rotary embeddings need an even head size"):
        GPTConfig(vocab_size=VOCAB, n_head=4, n_embd=12, pos_embedding="rope")
    for key in ("pos_embedding", "mlp", "gelu_approximate"):
        with pytest.raises(ValueError, match=rf"model.backbone.{key}='other' is not one of \("):
            GPTConfig(vocab_size=VOCAB, **{key: "other"})
    with pytest.raises(ValueError, match="n_embd=100 is not divisible by n_head=3"):
        GPTConfig(vocab_size=VOCAB, n_embd=100, n_head=3)


def test_the_modern_experiment_turns_every_switch_on(compose_train):
    cfg = compose_train("experiment=shakespeare_modern")
    model = instantiate(cfg.model, vocab_size=65, compile=False)
    config = model.config
    assert (config.pos_embedding, config.norm, config.mlp) == ("rope", "rmsnorm", "swiglu")
    assert (config.bias, config.n_head, config.n_kv_head) == (False, 4, 2)
    # Everything else is the shakespeare_char recipe.
    char = compose_train("experiment=shakespeare_char")
    assert (cfg.data, cfg.trainer, cfg.model.optimizer) == (char.data, char.trainer, char.model.optimizer)
    assert (config.block_size, config.n_layer, config.n_embd) == (64, 4, 128)
