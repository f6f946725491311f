"""Bad settings and files stop with an error that names the problem and the fix (issue #15, item 7)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from gptlab.callbacks.fault_tolerance import FiniteLossGuard, NonFiniteLossError
from gptlab.data.classification import ClassificationDataModule
from gptlab.data.datamodules import PretrainDataModule
from gptlab.eval import evaluate
from gptlab.models.gpt import GPTConfig
from gptlab.run.hydra import RunStopped
from gptlab.tasks.lm import GPTModule
from gptlab.tasks.registry import load_module
from gptlab.tokenization import CharTokenizer
from gptlab.train import train
from tests.conftest import TINY_OVERRIDES, compose_config
from tests.test_classification import char_tokenizer, save_checkpoint
from tests.test_model import BACKBONE

QUIET = ["callbacks.text_sampler=null", "callbacks.throughput=null", "test=false"]
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_a_zero_validation_fraction_says_validation_needs_it(tmp_path):
    for make in (
        lambda: PretrainDataModule(tmp_path, CharTokenizer(), block_size=8, val_fraction=0),
        lambda: ClassificationDataModule(CharTokenizer(), block_size=8, path=tmp_path, val_fraction=0),
    ):
        with pytest.raises(ValueError, match=r"data.val_fraction=0: .* held out for validation, which the"):
            make()


def test_a_zero_block_size_or_width_is_named_at_construction(tmp_path):
    with pytest.raises(ValueError, match=r"block_size=0: .* 1 or more; set model.backbone.block_size"):
        PretrainDataModule(tmp_path, CharTokenizer(), block_size=0)
    with pytest.raises(ValueError, match=r"block_size=0: .*model.backbone.block_size"):
        ClassificationDataModule(CharTokenizer(), block_size=0, path=tmp_path)
    for key in ("block_size", "n_layer", "n_head", "n_embd"):
        with pytest.raises(ValueError, match=rf"model.backbone.{key}=0 must be 1 or more"):
            GPTConfig(vocab_size=10, **{key: 0})


def test_a_classification_file_too_small_to_split_says_so(tmp_path):
    rows = tmp_path / "tiny.jsonl"
    rows.write_text("".join(json.dumps({"text": f"t{i}", "label": "ab"[i % 2]}) + "\n" for i in range(3)))
    data = ClassificationDataModule(CharTokenizer(), block_size=8, path=str(rows))
    with pytest.raises(ValueError, match=r"tiny.jsonl' has too few rows per label \('a': 2, 'b': 1\) for "
                       r"data.val_fraction=0.1 .* add rows, raise data.val_fraction"):  # fmt: skip
        data.setup("fit")


def test_zero_max_steps_is_refused_before_the_data_is_read(compose_train, corpus):
    cfg = compose_train(f"data.path={corpus}", *TINY_OVERRIDES, *QUIET, "trainer.max_steps=0")
    with pytest.raises(RunStopped, match=r"trainer.max_steps=0 trains nothing; .* or train=false"):
        train(cfg)
    assert not Path(cfg.paths.cache_dir).exists()


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path):
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    torch.save({"weights": torch.ones(2)}, tmp_path / "weights.pt")
    with pytest.raises(ValueError, match=r"notes.ckpt' is not a checkpoint torch can read; .*gptlab-train"):
        load_module(tmp_path / "notes.ckpt")
    with pytest.raises(
        ValueError, match=r"weights.pt' is a torch file but not a gptlab checkpoint .*\['weights'\]"
    ):
        load_module(tmp_path / "weights.pt")


def test_eval_names_a_checkpoint_and_data_of_different_kinds(tmp_path):
    tokenizer = char_tokenizer()
    lm = GPTModule(tokenizer.vocab_size, BACKBONE, functools.partial(torch.optim.AdamW), tokenizer=tokenizer)
    ckpt = save_checkpoint(lm, tmp_path / "lm.ckpt")
    cfg = compose_config(tmp_path, f"ckpt_path={ckpt}", "data.path=unused.jsonl", config_name="eval")
    with pytest.raises(ValueError, match=r"holds a GPTModule but the data config makes a Classification"
                       r"DataModule; .* language model on a corpus \(data=shakespeare"):  # fmt: skip
        evaluate(cfg)


def test_resuming_into_other_shapes_names_the_settings(compose_train, corpus, tmp_path):
    common = [
        f"data.path={corpus}",
        *TINY_OVERRIDES,
        *QUIET,
        "trainer.max_steps=1",
        "model.backbone.n_layer=1",
    ]
    train(compose_train(*common, "trainer.val_check_interval=1", "trainer.num_sanity_val_steps=0"))
    ckpt = next((tmp_path / "run" / "checkpoints").glob("last*.ckpt"))
    wider = compose_train(*common, "trainer.max_steps=2", "model.backbone.n_embd=64", f"ckpt_path={ckpt}")
    # refused before anything is written in the run directory (train.check_resumable)
    shapes = r"it holds a model of another shape \(backbone\.n_embd: 32 in the checkpoint, 64 here\)"
    with pytest.raises(RunStopped, match=rf"cannot resume .*: {shapes}; resume with the data and model"):
        train(wider)


def test_non_finite_weights_stop_the_run_before_the_text_sampler_samples():
    model = GPTModule(vocab_size=8, backbone={"block_size": 4, "n_layer": 1, "n_head": 1, "n_embd": 8})
    with torch.no_grad():
        model.backbone.wte.weight[0, 0] = float("nan")
    trainer = type("FakeTrainer", (), {"global_step": 9, "sanity_checking": False})()
    with pytest.raises(NonFiniteLossError, match=r"weight 'backbone.wte.weight' is not finite at step 9; the "
                       r"run stops, and the last good checkpoint is kept"):  # fmt: skip
        FiniteLossGuard().on_validation_end(trainer, model)
    # Lightning calls on_validation_end in the order of the callbacks list
    order = list(OmegaConf.load(CONFIGS / "callbacks" / "default.yaml").defaults)
    assert order.index("finite_loss_guard") < order.index("text_sampler")
