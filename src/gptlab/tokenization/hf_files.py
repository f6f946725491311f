"""gptlab tokenizers and Hugging Face tokenizer files: the GPT-2 vocabulary of an imported model, and the
files an exported model's tokenizer is written as (read by ``transformers``' ``AutoTokenizer``)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import tokenizers as hf

from gptlab.tokenization.tokenizers import (
    END_OF_TEXT,
    GPT2_LAYOUTS,
    NUM_BYTES,
    BPETokenizer,
    ByteTokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    Tokenizer,
)


def has_gpt2_vocabulary(directory: str | os.PathLike) -> bool:
    """True when ``directory`` holds one of the GPT-2 vocabulary layouts GPT2Tokenizer reads."""
    directory = Path(directory).expanduser()
    return any(all((directory / name).is_file() for name in layout) for layout in GPT2_LAYOUTS)


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


def byte_symbols() -> list[str]:
    """GPT-2's byte-level alphabet: entry ``b`` is the printable character that stands for byte ``b``.

    Bytes that are printable Latin-1 characters stand for themselves; the others (controls, space,
    ...) take the characters from U+0100 on, in byte order.
    """
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)}
    symbols, shifted = [], 0
    for byte in range(NUM_BYTES):
        if byte in printable:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(NUM_BYTES + shifted))
            shifted += 1
    return symbols


def _byte_level_bpe(vocab: dict[str, int], merges: list[tuple[str, str]]) -> hf.Tokenizer:
    tokenizer = hf.Tokenizer(hf.models.BPE(vocab, merges))
    tokenizer.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = hf.decoders.ByteLevel()
    return tokenizer


def _char_level(tokenizer: CharTokenizer) -> hf.Tokenizer:
    """One token per character: a word-level model over single characters, joined back without spaces.
    Characters outside the vocabulary make encoding fail, as gptlab's char tokenizer does."""
    vocab = {char: i for i, char in enumerate(tokenizer.chars)}
    vocab[END_OF_TEXT] = tokenizer.eot_id
    # "[UNK]" is no single character, so never in the vocabulary: an unknown character fails to encode.
    converted = hf.Tokenizer(hf.models.WordLevel(vocab, unk_token="[UNK]"))
    converted.pre_tokenizer = hf.pre_tokenizers.Split(hf.Regex(r"[\s\S]"), behavior="isolated")
    converted.decoder = hf.decoders.Fuse()
    return converted


def _vocab_and_merges(tokenizer: Tokenizer) -> tuple[dict[str, int], list[tuple[str, str]]] | None:
    """The byte-level BPE vocabulary and merges of ``tokenizer``, or None when it is not one."""
    if isinstance(tokenizer, ByteTokenizer):
        vocab = {symbol: byte for byte, symbol in enumerate(byte_symbols())}
        vocab[END_OF_TEXT] = tokenizer.eot_id
        return vocab, []  # no merges: every byte stays a token of its own
    if isinstance(tokenizer, GPT2Tokenizer | BPETokenizer):
        model = json.loads(tokenizer.state_dict()["hf_tokenizer"])["model"]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        return model["vocab"], merges
    return None


def hf_tokenizer_files(tokenizer: Tokenizer, model_max_length: int) -> dict[str, str]:
    """File name -> contents of Hugging Face tokenizer files that encode as ``tokenizer`` does (empty
    when there is no such format for its kind).

    Byte-level vocabularies (gpt2, bpe, byte) get GPT-2's vocab.json + merges.txt and a tokenizer.json;
    a char vocabulary gets a tokenizer.json only. ``<|endoftext|>`` is declared the end-of-text token,
    so ``transformers`` treats its literal string as that token (gptlab encodes it as plain text).
    """
    common = {
        "eos_token": END_OF_TEXT,
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,  # it would rewrite decoded text (" ." -> ".")
    }
    byte_level = _vocab_and_merges(tokenizer)
    if byte_level is not None:
        vocab, merges = byte_level
        config = {
            "tokenizer_class": "GPT2Tokenizer",
            "bos_token": END_OF_TEXT,
            "unk_token": END_OF_TEXT,
            "add_prefix_space": False,
            **common,
        }
        return {
            "vocab.json": json.dumps(vocab, ensure_ascii=False),
            "merges.txt": "#version: 0.2\n" + "".join(f"{left} {right}\n" for left, right in merges),
            "tokenizer.json": _byte_level_bpe(vocab, merges).to_str(),
            "tokenizer_config.json": json.dumps(config, indent=2),
        }
    if isinstance(tokenizer, CharTokenizer):
        config = {"tokenizer_class": "PreTrainedTokenizerFast", **common}
        return {
            "tokenizer.json": _char_level(tokenizer).to_str(),
            "tokenizer_config.json": json.dumps(config, indent=2),
        }
    return {}
