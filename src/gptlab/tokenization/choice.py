"""Which tokenizer a run uses, and the check that model and data agree on it.

A run encodes its data with the configured tokenizer, except when its backbone comes from elsewhere:
fine-tuning a gptlab checkpoint takes the checkpoint's tokenizer, and a Hugging Face GPT-2 its own
vocabulary files. Token ids that mean different things to the model and to the data are refused.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from gptlab.tokenization.base import Tokenizer
from gptlab.tokenization.gpt2 import GPT2_LAYOUTS, GPT2Tokenizer, has_gpt2_vocabulary


def check_same_tokenizer(expected: Tokenizer, found: Tokenizer, found_where: str, hint: str) -> None:
    """Refuse token ids that would mean different things to the model and to the data."""
    if expected.to_json() == found.to_json():
        return

    def describe(tokenizer: Tokenizer) -> str:
        return f"{tokenizer.kind}, {tokenizer.vocab_size} tokens"

    same = describe(expected) == describe(found)
    raise ValueError(
        f"{found_where} has a different tokenizer ({describe(found)}) from the one this run was "
        f"configured with ({describe(expected)}{'; same size, different vocabulary' if same else ''}); "
        f"{hint}"
    )


def checkpoint_tokenizer(checkpoint: Mapping[str, Any], where: str) -> Tokenizer:
    """The tokenizer a gptlab checkpoint's contents hold (``where`` names the checkpoint in errors)."""
    if "tokenizer" not in checkpoint:
        raise ValueError(f"{where} holds no tokenizer; it was not written by gptlab")
    return Tokenizer.from_json(checkpoint["tokenizer"])


def tokenizer_for_hf_model(directory: str | os.PathLike, configured: Callable[[], Tokenizer]) -> Tokenizer:
    """The tokenizer for the Hugging Face GPT-2 in ``directory``: its own vocabulary files when it has
    them, else ``configured()``, which must be a GPT-2 tokenizer (say ``tokenizer=gpt2``, whose default
    files are the bundled data/gpt2)."""
    if has_gpt2_vocabulary(directory):
        return GPT2Tokenizer(str(directory))
    tokenizer = configured()
    if not isinstance(tokenizer, GPT2Tokenizer):
        wanted = "; ".join(" + ".join(layout) for layout in GPT2_LAYOUTS)
        raise FileNotFoundError(
            f"'{directory}' holds no GPT-2 vocabulary (looked for {wanted}) and the configured tokenizer "
            f"is {tokenizer.kind!r}, not GPT-2's; pass tokenizer=gpt2 (tokenizer.path=<a directory with "
            "GPT-2's files>, by default the bundled data/gpt2)"
        )
    return tokenizer


def run_tokenizer(
    configured: Callable[[], Tokenizer],
    pretrained: Tokenizer | None = None,
    pretrained_hf: str | os.PathLike | None = None,
) -> Tokenizer:
    """The tokenizer a run encodes its data with, so that ids mean to the data what they mean to the
    backbone: a Hugging Face GPT-2's (``pretrained_hf``, see :func:`tokenizer_for_hf_model`), a
    fine-tune's pretrained checkpoint's (``pretrained``), else ``configured()``."""
    if pretrained_hf:
        return tokenizer_for_hf_model(pretrained_hf, configured)
    return configured() if pretrained is None else pretrained
