"""The Hugging Face tokenizer files an exported model's tokenizer is written as (read by
``transformers``' ``AutoTokenizer``)."""

from __future__ import annotations

import json

import tokenizers as hf

from gptlab.tokenization.base import END_OF_TEXT, Tokenizer
from gptlab.tokenization.bpe import ByteLevelBPE
from gptlab.tokenization.byte_level import BYTE_SYMBOLS, byte_level_bpe, vocab_and_merges
from gptlab.tokenization.simple import ByteTokenizer, CharTokenizer


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


def _byte_level_vocabulary(tokenizer: Tokenizer) -> tuple[dict[str, int], list[tuple[str, str]]] | None:
    """The byte-level BPE vocabulary and merges of ``tokenizer``, or None when it is not one."""
    if isinstance(tokenizer, ByteTokenizer):
        vocab = {symbol: byte for byte, symbol in enumerate(BYTE_SYMBOLS)}
        vocab[END_OF_TEXT] = tokenizer.eot_id
        return vocab, []  # no merges: every byte stays a token of its own
    if isinstance(tokenizer, ByteLevelBPE):
        return vocab_and_merges(tokenizer.trained)
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
    byte_level = _byte_level_vocabulary(tokenizer)
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
            "tokenizer.json": byte_level_bpe(vocab, merges).to_str(),
            "tokenizer_config.json": json.dumps(config, indent=2),
        }
    if isinstance(tokenizer, CharTokenizer):
        config = {"tokenizer_class": "PreTrainedTokenizerFast", **common}
        return {
            "tokenizer.json": _char_level(tokenizer).to_str(),
            "tokenizer_config.json": json.dumps(config, indent=2),
        }
    return {}
