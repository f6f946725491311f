"""Byte-level BPE tokenizers: what they share, and the one trained on the corpus."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import tokenizers as hf

from gptlab.tokenization.base import END_OF_TEXT, NUM_BYTES, Tokenizer
from gptlab.tokenization.byte_level import byte_level_bpe
from gptlab.tokenization.fast_bpe import BPEEncoder


class ByteLevelBPE(Tokenizer):
    """A byte-level BPE ``hf.Tokenizer`` encoded through :class:`BPEEncoder` (its tiktoken twin when it
    has one): never an unknown token. Subclasses say where the vocabulary comes from and ``_attach`` it.
    """

    encoder_name = "gptlab-bpe"  # names the tiktoken twin in its log line
    _encoder: BPEEncoder | None = None

    def _attach(self, tokenizer: hf.Tokenizer) -> None:
        self._encoder = BPEEncoder(tokenizer, END_OF_TEXT, self.encoder_name)

    @property
    def encoder(self) -> BPEEncoder:
        if self._encoder is None:  # only a BPETokenizer waiting for fit
            raise RuntimeError("the BPE tokenizer has not been trained yet; call fit(texts) first")
        return self._encoder

    @property
    def trained(self) -> hf.Tokenizer:
        return self.encoder.hf

    @property
    def vocab_size(self) -> int:
        return self.trained.get_vocab_size()

    @property
    def eot_id(self) -> int:
        return self.trained.token_to_id(END_OF_TEXT)

    def encode(self, text: str) -> list[int]:
        return self.encoder.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.encoder.encode_batch(texts)

    def decode(self, ids: Sequence[int]) -> str:
        return self.trained.decode(list(ids), skip_special_tokens=False)

    def token_bytes(self) -> list[int]:
        # Every character of a byte-level token stands for one byte; end-of-text stands for none.
        counts = [0] * self.vocab_size
        for token, index in self.trained.get_vocab().items():
            counts[index] = 0 if token == END_OF_TEXT else len(token)
        return counts


class BPETokenizer(ByteLevelBPE):
    """Byte-level BPE trained on the corpus (Hugging Face ``tokenizers``).

    ``<|endoftext|>`` takes id 0 of the learned vocabulary; the rest are the 256 byte symbols and the
    learned merges, at most ``vocab_size`` in all (fewer when the corpus runs out of pairs occurring at
    least ``min_frequency`` times). Encoding goes through ``tiktoken`` with identical ids when it can
    (see ``fast_bpe``); the state stays the Hugging Face JSON.
    """

    kind = "bpe"

    def __init__(self, vocab_size: int = 4096, min_frequency: int = 2) -> None:
        minimum = NUM_BYTES + 1
        if vocab_size < minimum:
            raise ValueError(
                f"BPE vocab_size {vocab_size} is too small: the byte alphabet plus {END_OF_TEXT} alone "
                f"take {minimum} ids; set tokenizer.vocab_size={minimum} or more (e.g. 4096)"
            )
        if min_frequency < 0:
            raise ValueError(f"BPE min_frequency must be >= 0, got {min_frequency}")
        self.requested_vocab_size = vocab_size
        self.min_frequency = min_frequency

    @property
    def needs_fit(self) -> bool:
        return self._encoder is None

    def fit(self, texts: Iterable[str]) -> None:
        seen_text = False

        def stream() -> Iterator[str]:
            # Hand the documents over one by one so a large corpus is never held in memory at once.
            nonlocal seen_text
            for text in texts:
                seen_text = seen_text or bool(text)
                yield text

        trainer = hf.trainers.BpeTrainer(
            vocab_size=self.requested_vocab_size,
            min_frequency=self.min_frequency,
            special_tokens=[END_OF_TEXT],
            initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer = byte_level_bpe()
        tokenizer.train_from_iterator(stream(), trainer=trainer)
        if not seen_text:
            raise ValueError("cannot train a BPE vocabulary on an empty corpus")
        # The trainer registers <|endoftext|> as an "added token", which HF would cut out of any text
        # containing the literal string; keep it only as a vocabulary entry (see gptlab.tokenization.base).
        state = json.loads(tokenizer.to_str())
        state["added_tokens"] = []
        self._attach(hf.Tokenizer.from_str(json.dumps(state)))

    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "vocab_size": self.requested_vocab_size,
            "min_frequency": self.min_frequency,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "vocab_size": self.requested_vocab_size,
            "min_frequency": self.min_frequency,
            "hf_tokenizer": None if self.needs_fit else self.trained.to_str(),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> BPETokenizer:
        tokenizer = cls(state["vocab_size"], state["min_frequency"])
        if state["hf_tokenizer"] is not None:
            tokenizer._attach(hf.Tokenizer.from_str(state["hf_tokenizer"]))
        return tokenizer
