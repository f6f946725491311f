"""The Tokenizer interface, which every kind implements, and the end-of-text convention they share.

A tokenizer's whole state is a JSON-able dict, so it travels inside every checkpoint and sampling needs
nothing but the checkpoint.

Everywhere, ``<|endoftext|>`` is a reserved id that only the data pipeline inserts between documents:
``encode`` never produces it, and the literal string in a text is encoded as ordinary characters, so a
corpus cannot forge document boundaries. ``decode`` turns the id back into the string.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

END_OF_TEXT = "<|endoftext|>"
NUM_BYTES = 256


class UnknownCharactersError(ValueError):
    """Text holds characters a character-level vocabulary does not have."""


class Tokenizer(ABC):
    """The interface every tokenizer implements."""

    kind: ClassVar[str]
    _registry: ClassVar[dict[str, type[Tokenizer]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:  # abstract intermediate classes name no kind
            Tokenizer._registry[cls.kind] = cls

    @property
    def needs_fit(self) -> bool:
        """True while the tokenizer must still learn its vocabulary from a corpus."""
        return False

    def fit(self, texts: Iterable[str]) -> None:  # noqa: B027 - most tokenizers learn nothing
        """Learn the vocabulary from ``texts`` (no-op for tokenizers with a fixed vocabulary)."""

    def spec(self) -> dict[str, Any]:
        """What the tokenizer was asked to be (not what it learned): part of the token cache key."""
        return {"kind": self.kind}

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @property
    @abstractmethod
    def eot_id(self) -> int:
        """Id of the end-of-text token that separates documents."""

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode many texts; the byte-level BPE tokenizers do it in parallel, in native code."""
        return [self.encode(text) for text in texts]

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str: ...

    @abstractmethod
    def token_bytes(self) -> list[int]:
        """The UTF-8 bytes each id stands for, indexed by id; 0 for end-of-text. A token's own bytes, not
        its decoded string's (a byte-level token may hold part of a character), so the counts of a
        text's tokens sum to exactly the text's UTF-8 length: bits per byte's denominator."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild this tokenizer; JSON-able primitives only."""

    @classmethod
    @abstractmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Tokenizer: ...

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, **self.state_dict()}, ensure_ascii=False)

    @staticmethod
    def from_json(text: str) -> Tokenizer:
        state = json.loads(text)
        kind = state.pop("kind")
        if kind not in Tokenizer._registry:
            raise ValueError(f"unknown tokenizer kind {kind!r}; known: {sorted(Tokenizer._registry)}")
        return Tokenizer._registry[kind].from_state_dict(state)
