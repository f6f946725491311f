"""The tokenizers without merges: one id per character seen, or one per byte."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from gptlab.tokenization.base import END_OF_TEXT, NUM_BYTES, Tokenizer, UnknownCharactersError


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

    def token_bytes(self) -> list[int]:
        return [len(ch.encode("utf-8", errors="surrogatepass")) for ch in self.chars] + [0]

    def state_dict(self) -> dict[str, Any]:
        return {"chars": self.chars}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> CharTokenizer:
        return cls(state["chars"])


class ByteTokenizer(Tokenizer):
    """The 256 UTF-8 byte values plus end-of-text (id 256): any text, no training."""

    kind = "byte"

    @property
    def vocab_size(self) -> int:
        return NUM_BYTES + 1

    @property
    def eot_id(self) -> int:
        return NUM_BYTES

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        # Split at end-of-text ids; a sampled sequence may stop inside a multi-byte character, which
        # decodes to U+FFFD rather than failing.
        pieces: list[str] = []
        chunk: list[int] = []
        for i in ids:
            if i == NUM_BYTES:
                pieces.extend((bytes(chunk).decode("utf-8", errors="replace"), END_OF_TEXT))
                chunk = []
            elif 0 <= i < NUM_BYTES:
                chunk.append(i)
            else:
                raise ValueError(f"id {i} is outside the byte vocabulary (0..{NUM_BYTES})")
        pieces.append(bytes(chunk).decode("utf-8", errors="replace"))
        return "".join(pieces)

    def token_bytes(self) -> list[int]:
        return [1] * NUM_BYTES + [0]

    def state_dict(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ByteTokenizer:
        return cls()
