"""A trained model written for use outside gptlab's checkpoints: a Hugging Face GPT-2 directory, or
plain safetensors weights with the model config and tokenizer as JSON (which :func:`load_safetensors`
turns back into the module)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from safetensors.torch import load_model, save_model

from gptlab.models.classifier import GPTClassifier
from gptlab.models.hf import save_hf_gpt2
from gptlab.models.io import module_class
from gptlab.models.module import GPTModule
from gptlab.tokenization import Tokenizer
from gptlab.tokenization.hf_files import hf_tokenizer_files

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
MODEL_CONFIG_FILE = "gptlab_model.json"
TOKENIZER_FILE = "gptlab_tokenizer.json"


def export_hf(model: GPTModule, directory: str | os.PathLike) -> list[Path]:
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
    if isinstance(model, GPTClassifier):
        log.warning(
            "the classification head is not exported: GPT2LMHeadModel has none (format=safetensors "
            "keeps it); the backbone and its tied LM head are"
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


def export_safetensors(model: GPTModule, directory: str | os.PathLike) -> list[Path]:
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


def load_safetensors(directory: str | os.PathLike) -> GPTModule:
    """The module :func:`export_safetensors` wrote to ``directory``, on the CPU (tokenizer attached
    when one was saved)."""
    directory = Path(directory).expanduser()
    config_file = directory / MODEL_CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(
            f"'{directory}' has no {MODEL_CONFIG_FILE}; pass a directory written by "
            "gptlab-export format=safetensors"
        )
    saved = json.loads(config_file.read_text(encoding="utf-8"))
    model = module_class(saved["class"], str(config_file))(**saved["hyper_parameters"])
    load_model(model, str(directory / WEIGHTS_FILE), strict=True)
    tokenizer_file = directory / TOKENIZER_FILE
    if tokenizer_file.is_file():
        model.tokenizer = Tokenizer.from_json(tokenizer_file.read_text(encoding="utf-8"))
    return model
