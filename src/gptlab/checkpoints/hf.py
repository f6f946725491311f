"""Hugging Face GPT-2 checkpoints in and out of the gptlab backbone, read and written with ``safetensors``
and ``torch`` alone (``transformers`` is not needed).

GPT-2's layout is gptlab's default one, so the conversion is renaming plus two details:

* GPT-2 stores its linear layers as ``Conv1D`` modules, whose weight is (in, out): the transpose of an
  ``nn.Linear`` weight.
* gptlab pads the token embedding to a multiple of ``pad_vocab_to_multiple`` rows; the real rows are
  copied and the padding rows (never looked up, their logits dropped) are left at zero.

GPT-2's activation is ``gelu_new``, the tanh approximation of GELU: imported models get
``gelu_approximate="tanh"`` so their logits match the original's.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from gptlab.models.gpt import FINETUNE_CHOICES, GPTConfig, fit_to_backbone

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
# The weight files save_pretrained writes, in the order they are tried (sharded ones via their index).
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# Hugging Face activation names -> GPTConfig.gelu_approximate (the others are not GPT-2's).
ACTIVATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, which the backbone uses
# Tensors some GPT-2 files hold that are not weights of the backbone: the attention mask buffers of
# old checkpoints, and heads (the LM head is tied to wte; other heads are not imported).
IGNORED = re.compile(r"h\.\d+\.attn\.(masked_)?bias|lm_head\..*|score\..*|multiple_choice_head\..*")
# gptlab name -> (Hugging Face name, whether the weight is a transposed Conv1D one) inside a block.
BLOCK_NAMES = {
    "ln_1.weight": ("ln_1.weight", False),
    "ln_1.bias": ("ln_1.bias", False),
    "attn.qkv.weight": ("attn.c_attn.weight", True),
    "attn.qkv.bias": ("attn.c_attn.bias", False),
    "attn.proj.weight": ("attn.c_proj.weight", True),
    "attn.proj.bias": ("attn.c_proj.bias", False),
    "ln_2.weight": ("ln_2.weight", False),
    "ln_2.bias": ("ln_2.bias", False),
    "mlp.fc.weight": ("mlp.c_fc.weight", True),
    "mlp.fc.bias": ("mlp.c_fc.bias", False),
    "mlp.proj.weight": ("mlp.c_proj.weight", True),
    "mlp.proj.bias": ("mlp.c_proj.bias", False),
}
TOP_NAMES = {
    "wte.weight": "wte.weight",
    "wpe.weight": "wpe.weight",
    "ln_f.weight": "ln_f.weight",
    "ln_f.bias": "ln_f.bias",
}


class HFCheckpointError(ValueError):
    """A Hugging Face directory that cannot become (or be written from) a gptlab GPT-2 backbone."""


def _name_map(n_layer: int) -> dict[str, tuple[str, bool]]:
    """gptlab backbone name -> (Hugging Face name without the ``transformer.`` prefix, transposed)."""
    names = {ours: (theirs, False) for ours, theirs in TOP_NAMES.items()}
    for i in range(n_layer):
        for ours, (theirs, transposed) in BLOCK_NAMES.items():
            names[f"blocks.{i}.{ours}"] = (f"h.{i}.{theirs}", transposed)
    return names


def read_hf_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The GPTConfig fields of the GPT-2 model in ``directory``'s config.json (``vocab_size`` and
    ``block_size`` are the checkpoint's: its embedding rows and ``n_positions``)."""
    directory = Path(directory).expanduser()
    file = directory / CONFIG_FILE
    if not file.is_file():
        what = "does not exist" if not directory.exists() else f"has no {CONFIG_FILE}"
        raise HFCheckpointError(
            f"Hugging Face directory '{directory}' {what}; pass a directory written by transformers' "
            "save_pretrained (config.json + model.safetensors or pytorch_model.bin)"
        )
    try:
        hf = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HFCheckpointError(f"{file} is not valid JSON ({err})") from None
    model_type = hf.get("model_type")
    if model_type != "gpt2":
        raise HFCheckpointError(
            f"{file} describes a {model_type!r} model, not GPT-2 (model_type 'gpt2'); only the GPT-2 "
            "architecture can be imported into the gptlab backbone"
        )
    activation = hf.get("activation_function", "gelu_new")
    if activation not in ACTIVATIONS:
        raise HFCheckpointError(
            f"{file}: activation_function={activation!r} is not one the backbone computes; supported: "
            f"{sorted(ACTIVATIONS)}"
        )
    eps = hf.get("layer_norm_epsilon", LAYER_NORM_EPS)
    if eps != LAYER_NORM_EPS:
        raise HFCheckpointError(
            f"{file}: layer_norm_epsilon={eps} but the backbone's LayerNorm uses {LAYER_NORM_EPS}; "
            "the logits would differ"
        )
    # Options that change the computation in ways the backbone does not follow.
    unsupported = [
        f"{key}={hf[key]}"
        for key, supported in (
            ("scale_attn_weights", True),
            ("scale_attn_by_inverse_layer_idx", False),
            ("add_cross_attention", False),
            ("tie_word_embeddings", True),
        )
        if key in hf and hf[key] != supported
    ]
    if unsupported:
        raise HFCheckpointError(
            f"{file} uses GPT-2 options the gptlab backbone does not implement: {', '.join(unsupported)}"
        )
    n_embd = hf["n_embd"]
    n_inner = hf.get("n_inner")
    return {
        "vocab_size": hf["vocab_size"],
        "block_size": hf["n_positions"],
        "n_layer": hf["n_layer"],
        "n_head": hf["n_head"],
        "n_embd": n_embd,
        "bias": True,
        "pos_embedding": "learned",
        "norm": "layernorm",
        "mlp": "gelu",
        "mlp_hidden": None if n_inner in (None, 4 * n_embd) else n_inner,
        "n_kv_head": None,
        "gelu_approximate": ACTIVATIONS[activation],
        "qk_norm": False,
        "tie_embeddings": True,
        "logit_softcap": None,
    }


def _weight_file(directory: Path) -> Path:
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    present = sorted(p.name for p in directory.iterdir())
    raise HFCheckpointError(
        f"no weights in '{directory}': looked for {', '.join(WEIGHT_FILES)}; found {present}. Save the "
        "model with transformers' save_pretrained, or copy its weight file next to config.json"
    )


def _load_tensors(file: Path) -> dict[str, torch.Tensor]:
    if file.name.endswith(".index.json"):  # sharded: the index maps each tensor to its shard
        shards = sorted(set(json.loads(file.read_text(encoding="utf-8"))["weight_map"].values()))
        tensors: dict[str, torch.Tensor] = {}
        for shard in shards:
            tensors.update(_load_tensors(file.parent / shard))
        return tensors
    if file.suffix == ".safetensors":
        return load_file(file)
    return torch.load(file, map_location="cpu", weights_only=True)  # no pickled code runs


def read_hf_weights(directory: str | os.PathLike, config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """``directory``'s GPT-2 weights under gptlab backbone names, as ``nn.Linear`` weights, at the
    checkpoint's shapes (``config`` as :func:`read_hf_config` returns it)."""
    directory = Path(directory).expanduser()
    file = _weight_file(directory)
    tensors = {name.removeprefix("transformer."): tensor for name, tensor in _load_tensors(file).items()}
    n_embd, vocab = config["n_embd"], config["vocab_size"]
    hidden = config["mlp_hidden"] or 4 * n_embd
    expected_shapes = {  # as Hugging Face stores them (Conv1D: in, out)
        "wte.weight": (vocab, n_embd),
        "wpe.weight": (config["block_size"], n_embd),
        "attn.c_attn.weight": (n_embd, 3 * n_embd),
        "attn.c_attn.bias": (3 * n_embd,),
        "attn.c_proj.weight": (n_embd, n_embd),
        "mlp.c_fc.weight": (n_embd, hidden),
        "mlp.c_fc.bias": (hidden,),
        "mlp.c_proj.weight": (hidden, n_embd),
    }
    names = _name_map(config["n_layer"])
    missing = [theirs for theirs, _ in names.values() if theirs not in tensors]
    if missing:
        raise HFCheckpointError(
            f"{file} lacks {len(missing)} GPT-2 tensor(s) that {CONFIG_FILE} implies (e.g. "
            f"{', '.join(missing[:3])}); are config.json and the weights from the same model?"
        )
    known = {theirs for theirs, _ in names.values()}
    unexpected = [name for name in tensors if name not in known and not IGNORED.fullmatch(name)]
    if unexpected:
        raise HFCheckpointError(
            f"{file} holds tensor(s) a GPT-2 of {CONFIG_FILE}'s shapes does not have (e.g. "
            f"{', '.join(unexpected[:3])}); are config.json and the weights from the same model?"
        )
    state = {}
    for ours, (theirs, transposed) in names.items():
        tensor = tensors[theirs]
        suffix = theirs.split(".", 2)[-1] if theirs.startswith("h.") else theirs
        expected = expected_shapes.get(suffix, (n_embd,))
        if tuple(tensor.shape) != expected:
            raise HFCheckpointError(
                f"{file}: tensor '{theirs}' has shape {tuple(tensor.shape)} but {CONFIG_FILE} implies "
                f"{expected}; are config.json and the weights from the same model?"
            )
        state[ours] = tensor.t().contiguous() if transposed else tensor
    _check_tied_head(tensors, state["wte.weight"], file)
    return state


def _check_tied_head(tensors: Mapping[str, torch.Tensor], wte: torch.Tensor, file: Path) -> None:
    """gptlab's LM head is the token embedding; a stored head must be that same matrix."""
    head = tensors.get("lm_head.weight")
    if head is not None and (head.shape != wte.shape or not torch.equal(head, wte)):
        raise HFCheckpointError(
            f"{file}: lm_head.weight differs from the token embedding wte.weight; gptlab's LM head is "
            "tied to the embedding, so an untied head cannot be imported"
        )


def load_hf_gpt2(
    directory: str | os.PathLike,
    vocab_size: int | None = None,
    backbone: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The GPT-2 in ``directory`` as (GPTConfig keyword arguments, state dict for ``GPT``).

    The shapes are the checkpoint's; ``backbone`` may choose ``block_size`` (at most the checkpoint's
    ``n_positions``: learned positions are a prefix) and the settings in ``FINETUNE_CHOICES``; its other
    settings are replaced. ``vocab_size`` (the tokenizer's; default: the checkpoint's) may be
    smaller than the checkpoint's embedding, whose first rows are then kept.
    """
    saved = read_hf_config(directory)
    chosen = dict(backbone or {})
    block_size = chosen.get("block_size") or saved["block_size"]
    if block_size > saved["block_size"]:
        raise HFCheckpointError(
            f"block_size={block_size} is larger than the {saved['block_size']} positions (n_positions) of "
            f"'{directory}'; set model.backbone.block_size to at most {saved['block_size']}"
        )
    vocab_size = saved["vocab_size"] if vocab_size is None else vocab_size
    if vocab_size > saved["vocab_size"]:
        raise HFCheckpointError(
            f"the tokenizer has {vocab_size} tokens but '{directory}' embeds only {saved['vocab_size']}; "
            "use the checkpoint's own GPT-2 vocabulary"
        )
    config = {
        **saved,
        "vocab_size": vocab_size,
        "block_size": block_size,
        **{key: chosen[key] for key in FINETUNE_CHOICES if key in chosen},
    }
    replaced = [
        f"{key}={chosen[key]}->{config[key]}"
        for key in config
        if key in chosen and key not in ("vocab_size", "block_size") and chosen[key] != config[key]
    ]
    if replaced:
        log.info("backbone settings taken from %s instead of model.backbone: %s", directory, replaced)
    state = read_hf_weights(directory, saved)
    return config, fit_to_backbone(state, GPTConfig(**config))


# --- out: a gptlab backbone as a Hugging Face GPT-2 ----------------------------------------------------


def hf_incompatibilities(config: GPTConfig) -> list[str]:
    """The settings that keep ``config`` from being a GPT-2 (empty when it is one)."""
    reasons = []
    if config.pos_embedding != "learned":
        reasons.append(f"pos_embedding={config.pos_embedding} (GPT-2 learns absolute positions)")
    if config.norm != "layernorm":
        reasons.append(f"norm={config.norm} (GPT-2 uses LayerNorm)")
    if config.mlp != "gelu":
        reasons.append(f"mlp={config.mlp} (GPT-2's MLP is GELU)")
    if config.kv_heads != config.n_head:
        reasons.append(f"n_kv_head={config.n_kv_head} (GPT-2 has one key/value head per query head)")
    if config.qk_norm:
        reasons.append("qk_norm=true (GPT-2 does not normalise queries and keys)")
    if not config.tie_embeddings:
        reasons.append("tie_embeddings=false (GPT-2's LM head is its token embedding)")
    if config.logit_softcap is not None:
        reasons.append(f"logit_softcap={config.logit_softcap} (GPT-2's logits are not capped)")
    return reasons


def hf_gpt2_config(config: GPTConfig, eot_id: int | None = None) -> dict[str, Any]:
    """The config.json of ``transformers.GPT2LMHeadModel`` for ``config`` (real vocabulary, no padding)."""
    reasons = hf_incompatibilities(config)
    if reasons:
        raise HFCheckpointError(
            f"this backbone is not GPT-2-compatible: {'; '.join(reasons)}. Export it with "
            "format=safetensors instead"
        )
    hidden = config.mlp_hidden_size
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None if hidden == 4 * config.n_embd else hidden,
        "activation_function": "gelu_new" if config.gelu_approximate == "tanh" else "gelu",
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "bos_token_id": eot_id,
        "eos_token_id": eot_id,
        "use_cache": True,
    }


def hf_gpt2_state(backbone_state: Mapping[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    """A gptlab backbone state dict -> GPT2LMHeadModel's (``transformer.`` names, Conv1D weights,
    embedding padding dropped; the LM head is left out: transformers ties it to ``wte``)."""
    state = {}
    for ours, (theirs, transposed) in _name_map(config.n_layer).items():
        if ours.endswith(".bias") and ours not in backbone_state:
            # bias=false: GPT-2 with zero biases computes exactly the same
            weight = backbone_state[ours.removesuffix("bias") + "weight"]
            state[f"transformer.{theirs}"] = weight.new_zeros(weight.size(0)).detach().cpu()
            continue
        tensor = backbone_state[ours].detach().cpu()
        if ours == "wte.weight":
            tensor = tensor[: config.vocab_size]
        state[f"transformer.{theirs}"] = (tensor.t() if transposed else tensor).contiguous()
    return state


def save_hf_gpt2(
    backbone_state: Mapping[str, torch.Tensor],
    config: GPTConfig,
    directory: str | os.PathLike,
    eot_id: int | None = None,
) -> list[Path]:
    """Write config.json and model.safetensors that ``GPT2LMHeadModel.from_pretrained`` loads."""
    hf_config = hf_gpt2_config(config, eot_id)  # refuses an incompatible backbone before writing
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config_file, weight_file = directory / CONFIG_FILE, directory / WEIGHT_FILES[0]
    config_file.write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
    # transformers checks this metadata to know the tensors are PyTorch's.
    save_file(hf_gpt2_state(backbone_state, config), weight_file, metadata={"format": "pt"})
    return [config_file, weight_file]
