"""LoRA adapters on the backbone: identity at init, merged = unmerged, only adapters and head train,
checkpoints and export, and a tiny fine-tune."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from gptlab.export import export
from gptlab.models.lora import LoRAConfig, LoRALinear
from gptlab.tasks.classification import GPTClassifier
from gptlab.tasks.lm import GPTModule
from gptlab.tasks.registry import load_module, load_safetensors
from gptlab.train import train
from tests.test_classification import (
    BACKBONE,
    TINY_CLASSIFIER,
    batch_of,
    char_tokenizer,
    save_checkpoint,
    tiny_classifier,
    write_rows,
)

LORA = {"rank": 4, "alpha": 8.0, "dropout": 0.0, "targets": ["attn.qkv", "attn.proj", "mlp.fc", "mlp.proj"]}


def logits(model: GPTClassifier) -> torch.Tensor:
    model.eval()
    batch = batch_of(model)
    with torch.no_grad():
        return model.classify(batch["input_ids"], batch["attention_mask"])


def trained_adapters(model: GPTClassifier) -> GPTClassifier:
    """Give every adapter a non-zero B, as training would."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.backbone.modules():
            if isinstance(module, LoRALinear):
                module.lora_b.copy_(torch.randn(module.lora_b.shape, generator=generator) * 0.1)
    return model


def test_adapters_at_init_leave_the_outputs_unchanged():
    plain, adapted = tiny_classifier(), tiny_classifier(lora=LORA)  # same seed: the same weights
    wrapped = [m for m in adapted.backbone.modules() if isinstance(m, LoRALinear)]
    assert len(wrapped) == 4 * BACKBONE["n_layer"] and all(m.lora_a.abs().sum() > 0 for m in wrapped)
    assert torch.equal(logits(plain), logits(adapted))


def test_merged_and_unmerged_models_give_the_same_logits():
    model = trained_adapters(tiny_classifier(lora=LORA))
    before = logits(model)
    assert not torch.allclose(before, logits(tiny_classifier()), atol=1e-3)  # the adapters do something
    model.merge_lora()
    assert not any(isinstance(m, LoRALinear) for m in model.backbone.modules())
    assert model.hparams["lora"] is None
    torch.testing.assert_close(logits(model), before, atol=1e-5, rtol=1e-5)


def test_only_the_adapters_and_the_head_train():
    model = tiny_classifier(lora={**LORA, "targets": ["attn.qkv", "mlp.proj"]})
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    expected = {f"backbone.blocks.{i}.{t}.{ab}" for i in range(2) for t in ("attn.qkv", "mlp.proj")
                for ab in ("lora_a", "lora_b")} | {"head.linear.weight", "head.linear.bias"}  # fmt: skip
    assert trainable == expected, trainable ^ expected
    frozen = {name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad}
    optimizer = model.optimizer_factory(model.parameter_groups())
    model.train()
    batch = batch_of(model)
    model._step(batch)[0].backward()
    optimizer.step()
    assert all(torch.equal(p, frozen[name]) for name, p in model.named_parameters() if name in frozen)
    assert any(m.lora_b.abs().sum() > 0 for m in model.backbone.modules() if isinstance(m, LoRALinear))


@pytest.mark.parametrize(
    ("lora", "extra", "message"),
    [
        ({"rank": 0}, {}, r"model.lora.rank=0 must be 1 or more"),
        ({"targets": ["attn.q"]}, {}, r"unknown \['attn.q'\]; choose from \['attn.qkv'"),
        ({"dropout": 1.0}, {}, r"model.lora.dropout=1.0 must be in \[0, 1\)"),
        ({}, {"trainable_blocks": 1}, r"model.lora and model.trainable_blocks=1 are both set"),
    ],
)
def test_bad_lora_settings_are_refused(lora, extra, message):
    with pytest.raises(ValueError, match=message):
        tiny_classifier(lora=lora, **extra)


def test_checkpoint_round_trip_and_the_merged_checkpoint_loads_as_a_plain_model(tmp_path):
    model = trained_adapters(tiny_classifier(lora=LORA))
    path = save_checkpoint(model, tmp_path / "lora.ckpt")  # one training step, then saved
    loaded = load_module(path)
    assert loaded.hparams["lora"] == LoRAConfig(**LORA).to_dict()
    expected = logits(loaded)
    torch.testing.assert_close(expected, logits(model))
    state = torch.load(path, weights_only=True)["state_dict"]
    assert "backbone.blocks.0.attn.qkv.lora_a" in state and "backbone.blocks.0.attn.qkv.weight" in state

    # gptlab-export merges: the safetensors model is a plain classifier with the same logits
    out = tmp_path / "export"
    export(
        OmegaConf.create(
            {"ckpt_path": str(path), "format": "safetensors", "out": str(out), "overwrite": False}
        )
    )
    exported = load_safetensors(out)
    assert exported.hparams["lora"] is None
    assert not any(isinstance(m, LoRALinear) for m in exported.backbone.modules())
    torch.testing.assert_close(logits(exported), expected, atol=1e-5, rtol=1e-5)

    # a classifier fine-tuned from the LoRA checkpoint starts from its merged weights (and head)
    tokenizer = loaded.tokenizer
    follow_up = GPTClassifier(
        tokenizer.vocab_size, BACKBONE, loaded.label_names, tokenizer=tokenizer, pretrained=path
    )
    torch.testing.assert_close(logits(follow_up), expected, atol=1e-5, rtol=1e-5)


def test_a_tiny_lora_fine_tune_trains_only_the_adapters(compose_train, tmp_path, caplog):
    tokenizer = char_tokenizer(["abcdefghijklmnopqrstuvwxyz ."])
    torch.manual_seed(0)
    lm = GPTModule(tokenizer.vocab_size, BACKBONE, functools.partial(torch.optim.AdamW), tokenizer=tokenizer)
    pretrained = save_checkpoint(lm, tmp_path / "pretrain.ckpt")
    rows = [{"text": f"{'good fine' if i % 2 else 'bad awful'} day {'x' * (i % 5)}.", "label": "pn"[i % 2]}
            for i in range(40)]  # fmt: skip
    data = write_rows(tmp_path / "d.jsonl", rows)
    cfg = compose_train(
        "experiment=austen_finetune", f"model.pretrained={pretrained}", f"data.path={data}",
        "model/lora=default", "model.lora.rank=2", *TINY_CLASSIFIER,
        "trainer.max_steps=4", "trainer.val_check_interval=2",
    )  # fmt: skip
    with caplog.at_level("INFO"):
        assert 0 <= train(cfg) <= 1
    tuned = load_module(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    assert tuned.hparams["lora"]["rank"] == 2
    # the run says how much of the model trains: the adapters and the classification head
    params = dict(tuned.named_parameters())
    trainable = sum(
        p.numel() for k, p in params.items() if k.endswith(("lora_a", "lora_b")) or k.startswith("head.")
    )
    total = sum(p.numel() for p in params.values())
    assert f"; {trainable:,} of its {total:,} parameters train" in caplog.text
    start = torch.load(pretrained, weights_only=True)["state_dict"]
    end = tuned.state_dict()
    for name, weight in start.items():
        if name.startswith("backbone."):
            assert torch.equal(end[name], weight), name  # the base weights never moved
    assert any(end[k].abs().sum() > 0 for k in end if k.endswith("lora_b"))  # the adapters did
