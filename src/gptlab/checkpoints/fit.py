"""The one check that a checkpoint fits a model and its data, called once wherever a run chooses a
checkpoint: a resume or an evaluation (the same weights), or a fine-tune (the backbone's weights under a
new head). It names every setting that differs and how to fix it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch

from gptlab.checkpoints.read import Checkpoint
from gptlab.models.gpt import FINETUNE_CHOICES, GPTConfig
from gptlab.tokenization import Tokenizer, check_same_tokenizer


class CheckpointMismatch(ValueError):
    """A checkpoint that does not fit the model or the data it was given to; the message says what
    differs and what to do."""


class Fittable(Protocol):
    """What the check reads of a model: a task's module, or a plain model rebuilt from a checkpoint."""

    hparams: Mapping[str, Any]
    tokenizer: Tokenizer | None

    def state_dict(self) -> Mapping[str, torch.Tensor]: ...


def check_fits(checkpoint: Checkpoint, model: Fittable, *, finetune: bool = False, fix: str = "") -> None:
    """Raise :class:`CheckpointMismatch` when ``checkpoint`` cannot go into ``model``: another tokenizer,
    weights of other shapes (or, for a ``finetune``, a backbone of other settings or another label set),
    or data read otherwise (the model's ``data_differences``). The message starts with what is wrong
    (the caller says which checkpoint it is) and ends with ``fix``."""
    fix = fix or (
        "fine-tune with the checkpoint's tokenizer and backbone settings"
        if finetune
        else "use the data and model config it was trained with (its run's .hydra/config.yaml)"
    )
    if "tokenizer" in checkpoint.contents and model.tokenizer is not None:
        try:
            check_same_tokenizer(model.tokenizer, checkpoint.tokenizer(), "it", fix)
        except ValueError as err:
            raise CheckpointMismatch(str(err)) from None
    wrong = _finetune_mismatches(checkpoint, model) if finetune else _shape_mismatches(checkpoint, model)
    differences = getattr(model, "data_differences", None)
    if differences is not None and not finetune:
        wrong += differences(checkpoint.hparams)
    if wrong:
        raise CheckpointMismatch(f"{'; '.join(wrong)}; {fix}")


def _shape_mismatches(checkpoint: Checkpoint, model: Fittable) -> list[str]:
    saved = {name: tuple(t.shape) for name, t in checkpoint.contents["state_dict"].items()}
    ours = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if saved == ours:
        return []
    theirs, mine = flatten(checkpoint.hparams), flatten(dict(model.hparams))
    differ = [
        f"{key}: {theirs.get(key)} in the checkpoint, {mine.get(key)} here"
        for key in sorted(theirs.keys() | mine.keys())
        if theirs.get(key) != mine.get(key)
    ]
    return [f"it holds a model of another shape ({'; '.join(differ) or 'other weights'})"]


def _finetune_mismatches(checkpoint: Checkpoint, model: Fittable) -> list[str]:
    hparams = checkpoint.hparams
    saved = GPTConfig(vocab_size=hparams["vocab_size"], **hparams["backbone"])
    wrong = finetune_mismatches(saved, model.config)
    if wrong:
        wrong = [f"it does not fit model.backbone: {', '.join(wrong)}"]
    saved_labels, labels = hparams.get("label_names"), model.hparams.get("label_names")
    if saved_labels is not None and labels is not None and list(saved_labels) != list(labels):
        wrong.append(
            f"it classifies into {list(saved_labels)}, but this data has labels {list(labels)} (fine-tune "
            "from a language-model checkpoint, or use data with the checkpoint's label set)"
        )
    return wrong


def finetune_mismatches(saved: GPTConfig, ours: GPTConfig) -> list[str]:
    """What keeps a fine-tune with backbone ``ours`` from starting from a ``saved`` one's weights, as
    ``key=ours (checkpoint: saved)`` (empty when it may)."""
    theirs, mine = saved.to_dict(), ours.to_dict()
    wrong = [
        f"{key}={mine[key]} (checkpoint: {theirs[key]})"
        for key in mine
        if key not in (*FINETUNE_CHOICES, "block_size") and mine[key] != theirs[key]
    ]
    if ours.block_size > saved.block_size:
        wrong.append(f"block_size={ours.block_size} (checkpoint: at most {saved.block_size})")
    return wrong


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"model": {"optimizer": {"lr": 1e-3}}}`` -> ``{"model.optimizer.lr": 1e-3}`` (how hyperparameters
    are compared here, and recorded for TensorBoard by :mod:`gptlab.run.board`)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat
