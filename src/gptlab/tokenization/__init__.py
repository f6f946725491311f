"""Tokenization: the Tokenizer interface (``base``), each kind (``simple``: char and byte; ``bpe``;
``gpt2``), GPT-2's byte-level pieces (``byte_level``) and their tiktoken twin (``fast_bpe``), Hugging
Face tokenizer files (``hf_files``), and which tokenizer a run uses (``choice``)."""

from gptlab.tokenization.base import END_OF_TEXT, NUM_BYTES, Tokenizer, UnknownCharactersError
from gptlab.tokenization.bpe import BPETokenizer, ByteLevelBPE
from gptlab.tokenization.byte_level import VocabularyFileError
from gptlab.tokenization.choice import (
    check_same_tokenizer,
    checkpoint_tokenizer,
    run_tokenizer,
    tokenizer_for_hf_model,
)
from gptlab.tokenization.gpt2 import GPT2Tokenizer
from gptlab.tokenization.simple import ByteTokenizer, CharTokenizer

__all__ = [
    "END_OF_TEXT",
    "NUM_BYTES",
    "BPETokenizer",
    "ByteLevelBPE",
    "ByteTokenizer",
    "CharTokenizer",
    "GPT2Tokenizer",
    "Tokenizer",
    "UnknownCharactersError",
    "VocabularyFileError",
    "check_same_tokenizer",
    "checkpoint_tokenizer",
    "run_tokenizer",
    "tokenizer_for_hf_model",
]
