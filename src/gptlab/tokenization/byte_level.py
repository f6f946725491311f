"""GPT-2's byte-level pieces, in one place: the byte-to-symbol table, the Hugging Face tokenizer around a
byte-level BPE, and the parsing of merges (from merges.txt / vocab.bpe, or from a tokenizer.json)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import tokenizers as hf

from gptlab.tokenization.base import NUM_BYTES


def _byte_symbols() -> list[str]:
    """Entry ``b`` is the printable character that stands for byte ``b``: bytes that are printable
    Latin-1 characters stand for themselves; the others (controls, space, ...) take the characters from
    U+0100 on, in byte order."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)}
    symbols, shifted = [], 0
    for byte in range(NUM_BYTES):
        if byte in printable:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(NUM_BYTES + shifted))
            shifted += 1
    return symbols


BYTE_SYMBOLS = _byte_symbols()
BYTE_OF_SYMBOL = {symbol: byte for byte, symbol in enumerate(BYTE_SYMBOLS)}


def byte_level_bpe(
    vocab: dict[str, int] | None = None, merges: list[tuple[str, str]] | None = None
) -> hf.Tokenizer:
    """A Hugging Face tokenizer with GPT-2's byte-level pre-tokenizer and decoder around a BPE of
    ``vocab`` and ``merges`` (an empty one, to be trained, when both are None).

    No normalizer and no prefix space, so every string (Chinese, emoji, control characters) round-trips
    byte for byte.
    """
    tokenizer = hf.Tokenizer(hf.models.BPE(vocab, merges))
    tokenizer.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = hf.decoders.ByteLevel()
    return tokenizer


class VocabularyFileError(ValueError):
    """Vocabulary or merges files that are malformed or contradict each other."""


def parse_merges(merges: Iterable[Any]) -> list[tuple[str, str]]:
    """Merges in rank order from their stored forms: ``"left right"`` (merges.txt, and tokenizer.json
    from tokenizers < 0.20) or ``["left", "right"]`` (newer tokenizer.json)."""
    pairs = []
    for merge in merges:
        parts = merge.split(" ") if isinstance(merge, str) else merge
        if (
            not isinstance(parts, list | tuple)
            or len(parts) != 2
            or not all(isinstance(part, str) and part for part in parts)
        ):
            raise VocabularyFileError(f"malformed merge {merge!r}: expected 'left right'")
        pairs.append((parts[0], parts[1]))
    return pairs


def read_merges_txt(file: Path) -> list[tuple[str, str]]:
    """Merges in rank order from vocab.bpe / merges.txt: an optional '#version' line, then 'left right'.

    Raises VocabularyFileError naming the file and line."""
    # Split on "\n" only: str.splitlines would also break at exotic separators such as U+0085.
    lines = [line.removesuffix("\r") for line in file.read_text(encoding="utf-8").split("\n")]
    merges = []
    for number, line in enumerate(lines, start=1):
        if not line or (number == 1 and line.startswith("#version")):
            continue
        try:
            merges.extend(parse_merges([line]))
        except VocabularyFileError:
            raise VocabularyFileError(f"{file} line {number}: expected 'left right', got {line!r}") from None
    return merges


def vocab_and_merges(tokenizer: hf.Tokenizer) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The vocabulary and merges of a byte-level BPE Hugging Face tokenizer."""
    model = json.loads(tokenizer.to_str())["model"]
    return model["vocab"], parse_merges(model["merges"])
