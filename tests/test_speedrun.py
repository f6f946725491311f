"""The speedrun switches (configs/model/gpt.yaml's backbone, model/optimizer=muon, model/scheduler=wsd), each
checked for what it computes, and the stop_at_target callback on a tiny run."""

from __future__ import annotations

import functools
import json
import logging
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gptlab.models.generation import sample
from gptlab.models.gpt import FINETUNE_CHOICES, GPT, Block, GPTConfig
from gptlab.models.optim import MuonAdamW, warmup_cosine, warmup_stable_decay
from gptlab.tasks.lm import GPTModule
from gptlab.train import train
from tests.conftest import TINY_OVERRIDES

BACKBONE = {"block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 32, "dropout": 0.0, "bias": True}
ALL_ON = {
    "qk_norm": True, "mlp": "relu2", "tie_embeddings": False, "logit_softcap": 5.0, "zero_init_proj": True,
    "pos_embedding": "rope", "norm": "rmsnorm", "bias": False,
}  # fmt: skip


def tiny_module(vocab_size: int = 50, optimizer=None, **overrides) -> GPTModule:
    torch.manual_seed(0)
    return GPTModule(vocab_size=vocab_size, backbone={**BACKBONE, **overrides}, optimizer=optimizer)


def test_the_switches_are_off_by_default_and_gpt2_is_unchanged():
    config = GPTConfig(vocab_size=50)
    assert (config.qk_norm, config.tie_embeddings, config.logit_softcap, config.zero_init_proj) == (
        False, True, None, False,
    )  # fmt: skip
    model = tiny_module()
    assert model.lm_head.weight is model.backbone.wte.weight


def test_logit_softcap_bounds_the_logits_by_cap_tanh():
    raw, capped = tiny_module(), tiny_module(logit_softcap=0.05)  # small enough to bite at init
    capped.load_state_dict(raw.state_dict())
    idx = torch.randint(0, 50, (2, 16))
    with torch.no_grad():
        logits, got = raw(idx), capped(idx)
    torch.testing.assert_close(got, 0.05 * torch.tanh(logits / 0.05))
    assert got.abs().max() <= 0.05 < logits.abs().max()


def test_qk_norm_makes_attention_blind_to_the_scale_of_queries_and_keys():
    def output(qk_norm: bool, scale: float) -> torch.Tensor:
        torch.manual_seed(0)
        block = Block(GPTConfig(vocab_size=50, **{**BACKBONE, "qk_norm": qk_norm}), 0)
        with torch.no_grad():
            block.attn.qkv.weight[:64].mul_(scale)  # the query and key rows (n_embd each)
            block.attn.qkv.bias[:64].mul_(scale)
            return block.attn(block.ln_1(torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(1))))

    torch.testing.assert_close(output(True, 1.0), output(True, 100.0), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(output(False, 1.0), output(False, 100.0), atol=1e-3)


def test_qk_norm_gives_unit_rms_queries_and_keys(monkeypatch):
    seen, attend = {}, F.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        seen["q"], seen["k"] = q, k
        return attend(q, k, v, **kwargs)

    monkeypatch.setattr("gptlab.models.gpt.F.scaled_dot_product_attention", spy)
    model = tiny_module(qk_norm=True)
    model(torch.randint(0, 50, (2, 16)))
    for t in (seen["q"], seen["k"]):
        torch.testing.assert_close(t.pow(2).mean(-1).sqrt(), torch.ones(t.shape[:-1]), rtol=1e-3, atol=1e-3)


def test_relu2_mlp_computes_proj_of_relu_squared():
    torch.manual_seed(0)
    mlp = GPT(GPTConfig(vocab_size=50, **{**BACKBONE, "mlp": "relu2"})).blocks[0].mlp
    x = torch.randn(2, 5, 32)
    assert mlp.fc.out_features == 4 * 32
    torch.testing.assert_close(mlp(x), mlp.proj(F.relu(mlp.fc(x)) ** 2))


def test_zero_init_proj_makes_every_block_the_identity_at_init():
    model = GPT(GPTConfig(vocab_size=50, **{**BACKBONE, "zero_init_proj": True}))
    x = torch.randn(2, 16, 32)
    for block in model.blocks:
        torch.testing.assert_close(block(x), x, rtol=0, atol=0)
        assert block.attn.qkv.weight.abs().sum() > 0 and block.mlp.fc.weight.abs().sum() > 0
    assert "zero_init_proj" in FINETUNE_CHOICES  # it only decides how fresh weights start


def test_an_untied_head_has_its_own_weights_that_train_apart():
    model = tiny_module(tie_embeddings=False)
    head, wte = model.lm_head.weight, model.backbone.wte.weight
    assert head is not wte and head.shape == wte.shape
    assert "lm_head.weight" in dict(model.named_parameters())
    assert head.std().item() == pytest.approx(0.02, rel=0.1)
    before = wte.detach().clone()
    loss = model._loss((torch.randint(0, 50, (2, 16)), torch.randint(0, 50, (2, 16))))
    loss.backward()
    with torch.no_grad():
        head -= head.grad
    torch.testing.assert_close(wte.detach(), before)


def test_a_checkpoint_with_every_switch_round_trips(tmp_path):
    from gptlab.tasks.registry import load_module
    from tests.test_classification import save_checkpoint

    model = tiny_module(optimizer=functools.partial(MuonAdamW, lr=1e-2), **ALL_ON)
    save_checkpoint(model, tmp_path / "lm.ckpt")
    loaded = load_module(tmp_path / "lm.ckpt").eval()
    assert loaded.config == model.config
    assert loaded.lm_head.weight is not loaded.backbone.wte.weight
    idx = torch.randint(0, 50, (2, 16))
    torch.testing.assert_close(loaded(idx), model.eval()(idx), rtol=0, atol=0)


def test_kv_cache_generation_matches_recomputation_with_every_switch_on():
    model = tiny_module(**ALL_ON).eval()
    with torch.no_grad():  # zero-initialised projections would make every block the identity
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    prompt = torch.randint(0, 50, (1, 3))
    kwargs = {"max_new_tokens": 20, "block_size": 16, "temperature": 1.0, "top_k": None}
    cached = sample(model, prompt, generator=torch.Generator().manual_seed(1), use_cache=True, **kwargs)
    full = sample(model, prompt, generator=torch.Generator().manual_seed(1), use_cache=False, **kwargs)
    assert torch.equal(cached, full) and cached.size(1) == 23


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"logit_softcap": 0.0}, r"logit_softcap=0.0 must be > 0"),
        ({"mlp": "relu"}, r"mlp='relu' is not one of \('gelu', 'swiglu', 'relu2'\)"),
    ],
)
def test_bad_switch_values_are_refused_at_the_config(overrides, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(vocab_size=50, **overrides)


# --- Muon and the WSD schedule --------------------------------------------------------------------------


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    model = tiny_module(optimizer=functools.partial(MuonAdamW, lr=0.01, adam_lr=0.003), tie_embeddings=False)
    optimizer = model.configure_optimizers()["optimizer"]
    hidden = {id(p) for g in optimizer.muon.param_groups for p in g["params"]}
    expected = {
        id(p) for name, p in model.named_parameters() if name.startswith("backbone.blocks.") and p.dim() == 2
    }
    assert hidden == expected and len(expected) == 2 * 4  # qkv, attn proj, fc, mlp proj per block
    adam = {id(p) for g in optimizer.adamw.param_groups for p in g["params"]}
    names = {name for name, p in model.named_parameters() if id(p) in adam}
    assert {"backbone.wte.weight", "backbone.wpe.weight", "lm_head.weight", "backbone.ln_f.weight"} <= names
    assert not hidden & adam and len(hidden | adam) == len(list(model.parameters()))
    assert [g["lr"] for g in optimizer.param_groups] == [0.01, 0.003, 0.003]
    assert [g["name"] for g in optimizer.param_groups] == ["hidden", "decay", "no_decay"]


def test_muon_steps_every_parameter_and_its_state_round_trips():
    factory = functools.partial(MuonAdamW, lr=0.02)
    model = tiny_module(optimizer=factory)
    optimizer = model.configure_optimizers()["optimizer"]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    batch = (torch.randint(0, 50, (2, 16)), torch.randint(0, 50, (2, 16)))
    optimizer.zero_grad()
    model._loss(batch).backward()
    optimizer.step()
    assert all(not torch.equal(before[name], p) for name, p in model.named_parameters())
    state = optimizer.state_dict()
    fresh = tiny_module(optimizer=factory).configure_optimizers()["optimizer"]
    fresh.load_state_dict(state)
    (hidden, *_), (buffer, *_) = optimizer.muon.state.values(), fresh.muon.state.values()
    torch.testing.assert_close(buffer["momentum_buffer"], hidden["momentum_buffer"])


def test_a_scheduler_drives_both_of_muons_optimizers():
    model = tiny_module(optimizer=functools.partial(MuonAdamW, lr=0.02, adam_lr=0.004))
    optimizer = model.configure_optimizers()["optimizer"]
    scheduler = warmup_cosine(optimizer, warmup_steps=0, total_steps=10, min_lr=0.0)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert optimizer.muon.param_groups[0]["lr"] == pytest.approx(0.01)
    assert optimizer.adamw.param_groups[0]["lr"] == pytest.approx(0.002)


def test_muon_without_a_hidden_group_is_refused():
    with pytest.raises(ValueError, match="model/optimizer=muon needs the blocks' matrices"):
        MuonAdamW([{"params": [torch.nn.Parameter(torch.zeros(2, 2))], "name": "decay"}])


def test_wsd_warms_up_holds_then_decays_linearly():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_stable_decay(
        optimizer, total_steps=100, warmup_steps=9, decay_fraction=0.2, min_lr=0.1
    )
    lrs = []
    for _ in range(110):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[4] == pytest.approx(0.5)  # (step + 1) / (warmup + 1)
    assert lrs[9] == lrs[50] == lrs[80] == 1.0
    assert lrs[90] == pytest.approx(0.1 + 0.9 * 10 / 20)
    assert lrs[99] == pytest.approx(0.1 + 0.9 / 20)
    assert lrs[100] == lrs[109] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="decay_fraction=1.5 must be in"):
        warmup_stable_decay(optimizer, total_steps=100, decay_fraction=1.5)


def test_muon_and_wsd_are_config_groups_whose_keys_carry_over(compose_train):
    cfg = compose_train("experiment=shakespeare_char", "model/optimizer=muon", "model/scheduler=wsd")
    assert cfg.model.optimizer._target_ == "gptlab.models.optim.MuonAdamW"
    assert cfg.model.optimizer.lr == 1e-3 and cfg.model.scheduler.warmup_steps == 100
    assert compose_train().model.optimizer._target_ == "torch.optim.AdamW"


# --- stop at a target ----------------------------------------------------------------------------------


def test_a_run_stops_at_its_target_and_records_the_step_and_time(compose_train, corpus, caplog):
    caplog.set_level(logging.INFO)
    cfg = compose_train(
        f"data.path={corpus}", *TINY_OVERRIDES, "trainer.max_steps=40", "trainer.val_check_interval=4",
        "+trainer.limit_val_batches=2", "test=false", "callbacks.text_sampler=null",
        "trainer.num_sanity_val_steps=0", "model.optimizer.lr=1e-2", "model.scheduler.warmup_steps=0",
        "callbacks.stop_at_target.threshold=3.5",
    )  # fmt: skip
    train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    summary = json.loads((run_dir / "run_summary.json").read_text())
    reached = summary["target"]["reached"]
    assert summary["target"]["threshold"] == 3.5 and reached["value"] <= 3.5
    assert 4 <= reached["step"] < 40 and reached["step"] % 4 == 0 and summary["step"] == reached["step"]
    assert 0 < reached["seconds"] < 120
    events = EventAccumulator(str(run_dir / "tensorboard"), purge_orphaned_data=False)
    events.Reload()
    val = {e.step: e.value for e in events.Scalars("val/loss")}
    assert all(v > 3.5 for step, v in val.items() if step < reached["step"])  # the first crossing
    assert [(e.step, e.value) for e in events.Scalars("target/step")] == [(reached["step"], reached["step"])]
    assert events.Scalars("target/seconds")[0].value == pytest.approx(reached["seconds"], rel=1e-5)
    assert f"target reached: val/loss {reached['value']:.4f} <= 3.5 at step {reached['step']}" in caplog.text
    assert math.isfinite(summary["metrics"]["val/loss"])


def test_a_fine_tune_takes_an_untied_head_from_its_checkpoint(tmp_path):
    from gptlab.tasks.classification import GPTClassifier
    from tests.test_classification import BACKBONE as CLS_BACKBONE
    from tests.test_classification import LABELS, char_tokenizer, save_checkpoint

    tokenizer = char_tokenizer()
    backbone = {**CLS_BACKBONE, "tie_embeddings": False}
    torch.manual_seed(0)
    lm = GPTModule(tokenizer.vocab_size, backbone, functools.partial(torch.optim.AdamW), tokenizer=tokenizer)
    save_checkpoint(lm, tmp_path / "lm.ckpt")
    saved = torch.load(tmp_path / "lm.ckpt", weights_only=True)["state_dict"]["lm_head.weight"]
    model = GPTClassifier(
        tokenizer.vocab_size, backbone, LABELS, pretrained=tmp_path / "lm.ckpt", tokenizer=tokenizer
    )
    torch.testing.assert_close(model.lm_head.weight.detach(), saved, rtol=0, atol=0)
    assert model.lm_head.weight is not model.backbone.wte.weight
