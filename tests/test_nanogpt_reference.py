"""benchmarks/nanogpt_reference.py: nanoGPT's schedule, model size and data preparation, and a short run's
JSON read back; its model is the one experiment=shakespeare_char builds."""

from __future__ import annotations

import json
import math
import pickle
import sys

import numpy as np
import pytest
import torch
from torch import nn

from gptlab import PROJECT_ROOT
from gptlab.models.gpt import GPT, GPTConfig
from gptlab.models.optim import warmup_cosine
from tests.conftest import compose_config

sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
import nanogpt_reference as ref  # noqa: E402


def test_lr_schedule_is_nanogpts_and_gptlabs():
    lr = [ref.lr_at(it, 1e-3, 1e-4, 100, 2000) for it in range(2002)]
    assert lr[0] == pytest.approx(1e-3 / 101) and lr[99] == pytest.approx(1e-3 * 100 / 101)
    assert lr[100] == pytest.approx(1e-3) and lr[1050] == pytest.approx(1e-4 + 0.5 * 9e-4)
    assert lr[2000] == pytest.approx(1e-4) and lr[2001] == 1e-4
    # gptlab's warmup_cosine follows the same curve, step for step
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1e-3)
    scheduler = warmup_cosine(optimizer, warmup_steps=100, total_steps=2000, min_lr=1e-4)
    ours = []
    for _ in range(2001):
        ours.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert ours == pytest.approx(lr[:2001], rel=1e-9)


def test_model_has_nanogpts_parameter_count_and_gptlabs_default_matches(tmp_path):
    vocab, width, layers = 65, 128, 4  # tiny-shakespeare's 65 characters
    model = ref.GPT(vocab, 64, layers, 4, width)
    # tied embedding/head + per layer 2 norm gains, qkv, proj and the 4x MLP + the final norm's gain
    expected = vocab * width + layers * (2 * width + 12 * width**2) + width
    assert model.num_params() == expected == 795_904  # nanoGPT prints 0.80M
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Linear | nn.LayerNorm))
    proj = torch.cat([b.attn.proj.weight.flatten() for b in model.blocks])
    assert proj.std().item() == pytest.approx(0.02 / math.sqrt(2 * layers), rel=0.05)
    # gptlab's default backbone (the recipe) without padding rows: the same parameters
    backbone = compose_config(tmp_path).model.backbone
    assert backbone.bias is False
    ours = GPT(GPTConfig(vocab_size=vocab, **{**backbone, "pad_vocab_to_multiple": 1}))
    assert ours.num_parameters(exclude_positions=True) == expected


def test_a_five_step_run_prepares_nanogpts_data_and_writes_its_json(tmp_path, corpus):
    out = tmp_path / "result.json"
    ref.main(["--max-iters=5", "--eval-interval=5", "--eval-iters=2", f"--text={corpus}",
              f"--work-dir={tmp_path / 'work'}", f"--out-json={out}"])  # fmt: skip
    text = corpus.read_text(encoding="utf-8")
    data = tmp_path / "work" / "data" / "shakespeare_char"
    meta = pickle.loads((data / "meta.pkl").read_bytes())
    assert meta["vocab_size"] == len(set(text)) and "".join(meta["itos"].values()) == "".join(
        sorted(set(text))
    )
    train, val = (np.fromfile(data / f"{split}.bin", dtype=np.uint16) for split in ("train", "val"))
    split = int(len(text) * 0.9)
    assert len(train) == split and len(val) == len(text) - split
    assert "".join(meta["itos"][int(i)] for i in val[:50]) == text[split : split + 50]
    result = json.loads(out.read_text())
    assert result["steps"] == 6  # iterations 0 to 5, as nanoGPT counts
    assert set(result["val_losses"]) == {"0", "5"} and result["val_loss"] == result["val_losses"]["5"]
    assert result["val_losses"]["5"] < result["val_losses"]["0"] < math.log(meta["vocab_size"]) + 0.2
    assert 0 < result["first_step_s"] <= result["wall_s"] and result["median_step_ms"] > 0
    assert 0 < result["eval_s"] < result["wall_s"]
    assert (tmp_path / "work" / "out" / "ckpt.pt").is_file()  # val improved at 5: a checkpoint, as nanoGPT
