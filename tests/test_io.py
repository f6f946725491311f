"""Rebuilding modules from disk: the class name every checkpoint records, and checkpoints from before it."""

from __future__ import annotations

import functools

import pytest
import torch

from gptlab.checkpoints.read import CLASS_KEY, read_checkpoint
from gptlab.tasks.classification import GPTClassifier
from gptlab.tasks.lm import GPTModule
from gptlab.tasks.registry import load_module
from tests.test_classification import LABELS, batch_of, char_tokenizer, save_checkpoint, tiny_classifier
from tests.test_model import BACKBONE


def tiny_lm() -> GPTModule:
    torch.manual_seed(0)
    tokenizer = char_tokenizer()
    return GPTModule(
        tokenizer.vocab_size, BACKBONE, functools.partial(torch.optim.AdamW), tokenizer=tokenizer
    )


def same_outputs(restored: GPTModule, model: GPTModule) -> None:
    model.eval()
    restored.eval()
    if isinstance(model, GPTClassifier):
        batch = batch_of(model)
        torch.testing.assert_close(restored.predict_step(batch, 0), model.predict_step(batch, 0))
    else:
        ids = torch.arange(12).reshape(2, 6) % model.config.vocab_size
        torch.testing.assert_close(restored(ids), model(ids))
    assert restored.tokenizer.to_json() == model.tokenizer.to_json()


@pytest.mark.parametrize("make", [tiny_lm, tiny_classifier], ids=["lm", "classifier"])
def test_every_checkpoint_names_its_class_and_loads_as_it(make, tmp_path):
    model = make()
    path = save_checkpoint(model, tmp_path / "model.ckpt")
    assert read_checkpoint(path)[CLASS_KEY] == type(model).__name__
    restored = load_module(path)
    assert type(restored) is type(model)
    same_outputs(restored, model)


@pytest.mark.parametrize("make", [tiny_lm, tiny_classifier], ids=["lm", "classifier"])
def test_checkpoints_written_before_the_class_key_still_load(make, tmp_path):
    # main before the registry wrote no class name: a classifier is told by its label names
    model = make()
    checkpoint = read_checkpoint(save_checkpoint(model, tmp_path / "new.ckpt"))
    del checkpoint[CLASS_KEY]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    restored = load_module(tmp_path / "old.ckpt")
    assert type(restored) is type(model)
    same_outputs(restored, model)


def test_a_checkpoint_of_an_unknown_class_or_the_wrong_one_is_refused(tmp_path):
    path = save_checkpoint(tiny_lm(), tmp_path / "lm.ckpt")
    with pytest.raises(ValueError, match=r"holds a GPTModule, not a GPTClassifier; load it with load_module"):
        load_module(path, expected=GPTClassifier)
    checkpoint = read_checkpoint(path)
    checkpoint[CLASS_KEY] = "os.system"
    torch.save(checkpoint, tmp_path / "forged.ckpt")
    with pytest.raises(
        ValueError, match=r"unknown model class 'os.system'; known: \['GPTClassifier', 'GPTModule'"
    ):
        load_module(tmp_path / "forged.ckpt")


def test_a_classifier_checkpoint_keeps_its_labels_through_load_module(tmp_path):
    model = tiny_classifier(label_names=list(reversed(LABELS)))
    restored = load_module(save_checkpoint(model, tmp_path / "cls.ckpt"), expected=GPTClassifier)
    assert restored.label_names == list(reversed(LABELS))
