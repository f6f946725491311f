"""Sampling with and without the KV cache: same tokens, less work."""

from __future__ import annotations

import pytest
import torch

from gptlab.models.generation import KVCache, nucleus, penalise_repetition, sample
from gptlab.tasks.lm import GPTModule
from gptlab.tokenization import CharTokenizer

BLOCK = 16
MODERN = {"pos_embedding": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False, "n_kv_head": 1}


def lively_model(**overrides) -> GPTModule:
    """A tiny model whose greedy output does not collapse onto one token at once: at the usual 0.02
    init every step's argmax is the same, and any two decoders would agree."""
    torch.manual_seed(0)
    backbone = {"block_size": BLOCK, "n_layer": 2, "n_head": 2, "n_embd": 32, **overrides}
    model = GPTModule(vocab_size=50, backbone=backbone).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.3)
    return model


@pytest.mark.parametrize("variant", [{}, MODERN], ids=["gpt2", "modern"])
def test_greedy_output_is_identical_with_and_without_the_cache(variant):
    model = lively_model(**variant)
    prompt = torch.randint(0, 50, (2, 3))
    # 3 + 48 tokens: the context passes block_size (16) and the window slides for the last 35 steps.
    uncached = sample(model, prompt, 48, BLOCK, temperature=0, use_cache=False)
    cached = sample(model, prompt, 48, BLOCK, temperature=0, use_cache=True)
    assert torch.equal(cached, uncached)
    assert len(set(uncached[0, 3:].tolist())) > 5  # a real sequence, not one token repeated


def test_seeded_sampling_is_identical_with_and_without_the_cache():
    model = lively_model()
    prompt = torch.randint(0, 50, (1, 5))

    def draw(use_cache: bool) -> torch.Tensor:
        generator = torch.Generator().manual_seed(7)
        return sample(model, prompt, 40, BLOCK, 1.0, top_k=20, generator=generator, use_cache=use_cache)

    assert torch.equal(draw(use_cache=True), draw(use_cache=False))


def test_a_prompt_longer_than_block_size_is_cropped_alike():
    model = lively_model()
    prompt = torch.randint(0, 50, (1, BLOCK + 5))
    cached = sample(model, prompt, 10, BLOCK, temperature=0, use_cache=True)
    assert torch.equal(cached, sample(model, prompt, 10, BLOCK, temperature=0, use_cache=False))


def test_the_cache_feeds_the_prompt_once_then_one_token_a_step():
    model = lively_model()
    fed: list[int] = []

    def logits_fn(ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        fed.append(ids.size(1))
        return model(ids, cache=cache)

    sample(logits_fn, torch.randint(0, 50, (1, 4)), 15, BLOCK, temperature=0)
    # Prefill 4, then single tokens up to a full context of 16; then the window slides and each step
    # recomputes the 16 cropped tokens, as the uncached path would.
    assert fed == [4] + [1] * 12 + [BLOCK] * 2


@pytest.mark.parametrize("variant", [{}, MODERN], ids=["gpt2", "modern"])
def test_feeding_chunks_through_the_cache_matches_one_full_forward(variant):
    """Chunks of several tokens after a non-empty cache need a causal mask offset by the cache length."""
    model = lively_model(**variant)
    idx = torch.randint(0, 50, (2, BLOCK))
    cache = KVCache(BLOCK)
    with torch.no_grad():
        chunks = [model(idx[:, a:b], cache=cache) for a, b in ((0, 5), (5, 9), (9, 10), (10, BLOCK))]
        full = model(idx)
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, rtol=1e-5, atol=1e-5)
    assert cache.length == BLOCK


def test_overfilling_the_cache_is_refused():
    model = lively_model()
    cache = KVCache(BLOCK)
    with torch.no_grad():
        model(torch.zeros(1, BLOCK - 1, dtype=torch.long), cache=cache)
        with pytest.raises(ValueError, match="15 cached tokens and sequence of length 2 exceeds"):
            model(torch.zeros(1, 2, dtype=torch.long), cache=cache)


def test_module_generate_uses_the_cache_by_default_and_writes_the_same_text():
    tokenizer = CharTokenizer()
    tokenizer.fit(["abcdefghij klmnop"])
    torch.manual_seed(0)
    backbone = {"block_size": BLOCK, "n_layer": 1, "n_head": 2, "n_embd": 16}
    model = GPTModule(tokenizer.vocab_size, backbone, tokenizer=tokenizer)
    fed: list[int] = []
    backbone_forward = model.backbone.forward

    def recording_forward(idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        fed.append(idx.size(1))
        return backbone_forward(idx, cache)

    model.backbone.forward = recording_forward
    text = model.generate("abc", max_new_tokens=6, top_k=1)
    assert fed == [3] + [1] * 5
    assert text == model.generate("abc", max_new_tokens=6, top_k=1, use_cache=False)


def test_generate_refuses_settings_it_would_ignore_or_misread(tmp_path):
    from gptlab.generate import generate
    from gptlab.run.hydra import refuse_unknown_settings
    from tests.conftest import compose_config
    from tests.test_classification import save_checkpoint, tiny_classifier

    classifier = save_checkpoint(tiny_classifier(), tmp_path / "classifier.ckpt")
    compose = lambda *o: compose_config(tmp_path, f"ckpt_path={classifier}", *o, config_name="generate")  # noqa: E731
    for override, error in (
        ("+top_q=0.9", "gptlab-generate has no setting 'top_q'; its settings are ckpt_path, device"),
        ("max_new_tokens=-5", r"max_new_tokens=-5: give the number of tokens to write, 0 or more"),
        ("top_k=-1", r"top_k=-1: sample among the k likeliest tokens \(k >= 1\), or top_k=0 / null"),
        ("temperature=0.8", "holds a text classifier .*not a language model; gptlab-predict labels"),
    ):
        with pytest.raises(ValueError, match=error):
            generate(compose(override))
    # the command line stops before Hydra, which would refuse top_q=... and suggest +top_q=..., ignored
    for arg in ("top_q=0.9", "+top_q=0.9", "++top_q=0.9"):
        with pytest.raises(SystemExit, match="gptlab-generate has no setting 'top_q' .*prompt, .*seed"):
            refuse_unknown_settings(["ckpt_path=x", "prompt=hi", arg], "generate")
    refuse_unknown_settings(["ckpt_path=x", "top_k=5", "paths.log_dir=y", "hydra.verbose=true"], "generate")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_a_cuda_device_without_cuda_is_named(tmp_path):
    from gptlab.generate import generate
    from tests.conftest import compose_config

    cfg = compose_config(tmp_path, f"ckpt_path={tmp_path}/x.ckpt", "device=cuda", config_name="generate")
    with pytest.raises(ValueError, match=r"device=cuda, but torch .* finds no CUDA GPU; use device=cpu"):
        generate(cfg)


def test_nucleus_keeps_the_fewest_likely_tokens_that_reach_top_p():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()[:, [2, 0, 3, 1]]  # shuffled: order must not matter
    kept = {p: torch.isfinite(nucleus(logits, p))[0].tolist() for p in (0.5, 0.7, 0.81, 1.0)}
    assert kept[0.5] == [False, True, False, False]  # 0.5 alone reaches 0.5
    assert kept[0.7] == [False, True, False, True]  # 0.5 + 0.3
    assert kept[0.81] == [True, True, False, True]
    assert kept[1.0] == [True, True, True, True]


def test_repetition_penalty_divides_positive_and_multiplies_negative_seen_logits():
    logits = torch.tensor([[2.0, -1.0, 3.0, -4.0]])
    seen = torch.tensor([[0, 1, 1]])  # a repeated token is penalised once
    assert penalise_repetition(logits, seen, 2.0).tolist() == [[1.0, -2.0, 3.0, -4.0]]


def test_penalised_and_nucleus_sampling_are_identical_with_and_without_the_cache():
    model = lively_model()
    prompt = torch.randint(0, 50, (1, 5))

    def draw(use_cache: bool, **options) -> torch.Tensor:
        generator = torch.Generator().manual_seed(7)
        return sample(model, prompt, 30, BLOCK, 1.0, generator=generator, use_cache=use_cache, **options)

    options = {"top_p": 0.8, "repetition_penalty": 1.3}
    assert torch.equal(draw(True, **options), draw(False, **options))
    assert not torch.equal(draw(True, **options), draw(True))
    greedy = sample(model, prompt, 30, BLOCK, 0, repetition_penalty=1.5)
    assert torch.equal(greedy, sample(model, prompt, 30, BLOCK, 0, repetition_penalty=1.5, use_cache=False))
    plain = sample(model, prompt, 30, BLOCK, 0)
    assert len(set(greedy[0, 5:].tolist())) >= len(set(plain[0, 5:].tolist()))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"repetition_penalty": 0.0}, "repetition_penalty must be > 0"),
    ],
)
def test_meaningless_sampling_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        sample(lively_model(), torch.zeros(1, 1, dtype=torch.long), 1, BLOCK, **options)


def test_the_text_sampler_refuses_a_schedule_that_never_samples():
    from gptlab.callbacks.text_sampler import TextSampler

    refused = r"every_n_validations must be >= 1, got 0; callbacks.text_sampler=null"
    with pytest.raises(ValueError, match=refused):
        TextSampler(every_n_validations=0)


def test_generation_stops_at_a_stop_string_and_leaves_it_out():
    tokenizer = CharTokenizer()
    tokenizer.fit(["abcdefghij klmnop"])
    torch.manual_seed(0)
    backbone = {"block_size": BLOCK, "n_layer": 1, "n_head": 2, "n_embd": 16}
    model = GPTModule(tokenizer.vocab_size, backbone, tokenizer=tokenizer)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.5)
    full = model.generate("abc", max_new_tokens=12, top_k=1)
    stop = full[5:7]
    calls: list[int] = []
    model.register_forward_hook(lambda *args: calls.append(1))
    cut = model.generate("abc", max_new_tokens=12, top_k=1, stop=["never written", stop])
    assert cut == full[: full.find(stop)] and len(calls) == full.find(stop) + len(stop)
