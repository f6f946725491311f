"""A trained model written for use outside gptlab's checkpoints: a Hugging Face GPT-2 directory, or
plain safetensors weights with the model config and tokenizer as JSON (which
:func:`gptlab.tasks.registry.load_safetensors` turns back into the module). Any module with a ``backbone``,
its ``config``, ``hparams`` and ``tokenizer`` is written: a task's, or a plain model."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from safetensors.torch import save_model
from torch import nn

from gptlab.checkpoints.hf import save_hf_gpt2
from gptlab.tokenization.hf_files import hf_tokenizer_files

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
MODEL_CONFIG_FILE = "gptlab_model.json"
TOKENIZER_FILE = "gptlab_tokenizer.json"


def export_hf(model: nn.Module, directory: str | os.PathLike) -> list[Path]:
    """Write ``model``'s backbone and tied LM head as a directory ``transformers.GPT2LMHeadModel`` and
    ``AutoTokenizer`` load; return the files written.

    Refuses a backbone that is not GPT-2-compatible (RoPE, RMSNorm, SwiGLU, no biases, grouped-query
    attention). A classifier's head has no GPT-2 counterpart and is left out.
    """
    directory = Path(directory)
    tokenizer = model.tokenizer
    eot_id = None if tokenizer is None else tokenizer.eot_id
    backbone_state = model.backbone.state_dict()
    written = save_hf_gpt2(backbone_state, model.config, directory, eot_id)
    heads = [name for name, child in model.named_children() if name not in ("backbone", "lm_head")
             and any(True for _ in child.parameters())]  # fmt: skip
    if heads:
        log.warning(
            "%s not exported: GPT2LMHeadModel has no place for them (format=safetensors keeps them); the "
            "backbone and its tied LM head are",
            ", ".join(f"the {name}" for name in heads),
        )
    files = {} if tokenizer is None else hf_tokenizer_files(tokenizer, model.config.block_size)
    if not files:
        what = "the model has no tokenizer" if tokenizer is None else f"a {tokenizer.kind!r} tokenizer"
        log.warning(
            "%s has no Hugging Face tokenizer format: only the weights are Hugging Face-compatible", what
        )
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
        written.append(directory / name)
    return written


def export_safetensors(model: nn.Module, directory: str | os.PathLike) -> list[Path]:
    """Write the whole module's weights as safetensors, its hyperparameters and its tokenizer as JSON."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights_file = directory / WEIGHTS_FILE
    # save_model stores the tied LM head once (safetensors refuses shared tensors).
    save_model(model, str(weights_file), metadata={"format": "pt"})
    config_file = directory / MODEL_CONFIG_FILE
    hparams = {"class": type(model).__name__, "hyper_parameters": dict(model.hparams)}
    config_file.write_text(json.dumps(hparams, indent=2) + "\n", encoding="utf-8")
    written = [weights_file, config_file]
    if model.tokenizer is not None:
        tokenizer_file = directory / TOKENIZER_FILE
        tokenizer_file.write_text(model.tokenizer.to_json(), encoding="utf-8")
        written.append(tokenizer_file)
    return written
