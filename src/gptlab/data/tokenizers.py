"""Tokenizers behind one interface: fit on a corpus (when they learn), encode, decode, save as JSON.

A tokenizer's whole state is a JSON-able dict, so it travels inside every checkpoint and sampling needs
nothing but the checkpoint.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

END_OF_TEXT = "<|endoftext|>"


class UnknownCharactersError(ValueError):
    """Text holds characters a character-level vocabulary does not have."""


class Tokenizer(ABC):
    """The interface every tokenizer implements."""

    kind: ClassVar[str]
    _registry: ClassVar[dict[str, type[Tokenizer]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
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

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str: ...

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


class CharTokenizer(Tokenizer):
    """One id per character seen in the corpus (any Unicode: Chinese, emoji, ...), plus end-of-text."""

    kind = "char"

    def __init__(self, chars: Sequence[str] | None = None) -> None:
        self.chars: list[str] = list(chars) if chars is not None else []
        self._ids = {ch: i for i, ch in enumerate(self.chars)}

    @property
    def needs_fit(self) -> bool:
        return not self.chars

    def fit(self, texts: Iterable[str]) -> None:
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        if not seen:
            raise ValueError("cannot build a character vocabulary from an empty corpus")
        self.__init__(sorted(seen))

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    @property
    def eot_id(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self._ids[ch] for ch in text]
        except KeyError:
            missing = sorted({ch for ch in text if ch not in self._ids})
            raise UnknownCharactersError(
                f"text contains {len(missing)} character(s) missing from the character vocabulary: "
                f"{missing!r}. Remove them, or train on a corpus that contains them."
            ) from None

    def decode(self, ids: Sequence[int]) -> str:
        eot = self.eot_id
        return "".join(END_OF_TEXT if i == eot else self.chars[i] for i in ids)

    def state_dict(self) -> dict[str, Any]:
        return {"chars": self.chars}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> CharTokenizer:
        return cls(state["chars"])
