"""Encode with a byte-level BPE Hugging Face tokenizer, through its ``tiktoken`` twin when one exists.

Hugging Face ``tokenizers`` encodes GPT-2-style byte-level BPE at about 1.5-2 MB/s per core;
``tiktoken`` applies the same vocabulary four to five times faster. The twin is built from the HF
vocabulary alone (nothing is downloaded) and is used only when it gives HF's ids exactly. The two
merge differently: inside a pre-token, HF merges the adjacent pair listed first among its merges,
tiktoken the adjacent pair whose concatenation has the lowest rank. They agree when

1. the ranks are the HF ids and the ids of the merged tokens grow with the merge order (so each token
   comes from one merge), the byte symbols keeping their own ids;
2. every merged token is what HF's BPE makes of the token's own characters ("reachable");
3. both split the text alike: GPT-2's pre-tokenization regex, with no normalizer and no added tokens
   (the two regex engines' Unicode tables agree on every character: see the tests).

Why 1 and 2 suffice: if two adjacent tokens x, y of a pre-token concatenate to a token t, no merge has
crossed the span of t, so HF's merges inside it so far are the first merges HF makes on t alone, which
(2) ends in [t]; from [x, y] that needs the merge (x, y). So the pairs tiktoken may merge are exactly
HF's merges, and by (1) both take the same one (the leftmost of equals, in both). tiktoken's shortcut
for a pre-token that is itself a token also agrees by (2). Tokens no merge makes, ``<|endoftext|>``
among them, are left out of the ranks: HF's BPE never produces them either.

``twin`` checks all three and raises :class:`NoTwinError` saying which fails; ``BPEEncoder`` then
keeps encoding with HF. Without ``tiktoken`` installed, HF is used too.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import tokenizers as hf

from gptlab.tokenization.byte_level import BYTE_OF_SYMBOL, parse_merges

try:
    import tiktoken
except ImportError:  # pragma: no cover - tiktoken is a dependency; HF still works without it
    tiktoken = None

log = logging.getLogger(__name__)

# GPT-2's pre-tokenization regex, as HF's ByteLevel pre-tokenizer spells it.
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

# str.translate table to the bytes as Latin-1 characters; any other character becomes one that
# Latin-1 cannot encode, so a token holding it is refused rather than misread.
_TO_LATIN1 = {ord(ch): chr(b) for ch, b in BYTE_OF_SYMBOL.items()} | {
    b: "\uffff" for b in range(256) if chr(b) not in BYTE_OF_SYMBOL
}


class NoTwinError(ValueError):
    """The HF tokenizer cannot be expressed as tiktoken ranks with identical ids."""


def _token_bytes(token: str) -> bytes:
    try:
        return token.translate(_TO_LATIN1).encode("latin-1")
    except UnicodeEncodeError:
        raise NoTwinError(f"token {token!r} holds characters that are no byte-level symbols") from None


def _check_layout(state: dict[str, Any]) -> None:
    pre = state.get("pre_tokenizer") or {}
    model = state.get("model") or {}
    problems = {
        "it has added tokens": bool(state.get("added_tokens")),
        "it truncates or pads": bool(state.get("truncation") or state.get("padding")),
        "it has a normalizer": state.get("normalizer") is not None,
        "its pre-tokenizer is not ByteLevel(add_prefix_space=False, use_regex=True)": (
            pre.get("type"),
            pre.get("add_prefix_space"),
            pre.get("use_regex", True),
        )
        != ("ByteLevel", False, True),
        "its model is not a plain BPE": model.get("type") != "BPE"
        or any(model.get(k) for k in ("dropout", "continuing_subword_prefix", "end_of_word_suffix")),
    }
    failed = [problem for problem, present in problems.items() if present]
    if failed:
        raise NoTwinError("; ".join(failed))


def mergeable_ranks(tokenizer: hf.Tokenizer, reserved: str) -> dict[bytes, int]:
    """tiktoken ranks giving ``tokenizer``'s ids: {token bytes: HF id} for the byte symbols and the
    merged tokens. ``reserved`` (``<|endoftext|>``) must be no merge's result. Raises NoTwinError."""
    state = json.loads(tokenizer.to_str())
    _check_layout(state)
    vocab: dict[str, int] = state["model"]["vocab"]
    missing = [symbol for symbol in BYTE_OF_SYMBOL if symbol not in vocab]
    if missing:
        raise NoTwinError(
            f"{len(missing)} byte symbols (e.g. {missing[0]!r}) are missing from the vocabulary"
        )
    ranks = {bytes([byte]): vocab[symbol] for symbol, byte in BYTE_OF_SYMBOL.items()}
    merged: list[str] = []
    previous = -1
    for number, (left, right) in enumerate(parse_merges(state["model"]["merges"]), start=1):
        token = left + right
        if token == reserved:
            raise NoTwinError(f"merge {number} makes the reserved token {reserved!r}")
        if vocab[token] <= previous:
            raise NoTwinError(
                f"merge {number} ({left!r} {right!r}) makes id {vocab[token]}, not above the previous "
                f"merge's {previous}: ids do not follow the merge order"
            )
        previous = vocab[token]
        ranks[_token_bytes(token)] = previous
        merged.append(token)
    # Reachability, checked by HF itself: its BPE alone (no pre-tokenizer) on each token's characters.
    bpe_alone = hf.Tokenizer(tokenizer.model)
    encode = getattr(bpe_alone, "encode_batch_fast", bpe_alone.encode_batch)
    for token, encoding in zip(merged, encode(merged, add_special_tokens=False), strict=True):
        if encoding.ids != [vocab[token]]:
            raise NoTwinError(f"HF's BPE splits the token {token!r} itself into ids {encoding.ids}")
    return ranks


def twin(tokenizer: hf.Tokenizer, reserved: str, name: str = "gptlab-bpe") -> tiktoken.Encoding:
    """A ``tiktoken.Encoding`` whose ``encode_ordinary`` gives ``tokenizer``'s ids (see the module)."""
    ranks = mergeable_ranks(tokenizer, reserved)
    return tiktoken.Encoding(name, pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={})


def hf_encode_batch(tokenizer: hf.Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of ``texts``, encoded by HF's Rust library on all cores."""
    # encode_batch_fast (tokenizers >= 0.21) skips the character offsets we never read: about twice as
    # fast on long documents. Older versions only have encode_batch.
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    return [encoding.ids for encoding in encode(list(texts), add_special_tokens=False)]


def _num_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use (a job's share, say)
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


_UNBUILT = object()


class BPEEncoder:
    """Encodes like ``tokenizer`` (a byte-level BPE ``hf.Tokenizer``): with its tiktoken twin, built on
    first use, or with HF when tiktoken is missing or no twin exists.

    The twin is a cache: pickling (DataLoader workers, ddp_spawn) drops it and the copy rebuilds it.
    """

    def __init__(self, tokenizer: hf.Tokenizer, reserved: str, name: str = "gptlab-bpe") -> None:
        self.hf = tokenizer
        self.reserved = reserved
        self.name = name
        self._twin: Any = _UNBUILT  # a tiktoken.Encoding, None (use HF), or _UNBUILT

    @property
    def backend(self) -> str:
        """``"tiktoken"`` or ``"hf"``: what ``encode_batch`` uses (builds the twin if not yet tried)."""
        return "hf" if self._tiktoken() is None else "tiktoken"

    def _tiktoken(self) -> tiktoken.Encoding | None:
        if self._twin is _UNBUILT:
            if tiktoken is None:
                self._twin = None
            else:
                try:
                    self._twin = twin(self.hf, self.reserved, self.name)
                except NoTwinError as err:
                    log.warning("encoding %s with Hugging Face tokenizers (slower): %s", self.name, err)
                    self._twin = None
        return self._twin

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        encoding = self._tiktoken()
        if encoding is None:
            return hf_encode_batch(self.hf, texts)
        if len(texts) <= 1:  # no thread pool for one text
            return [encoding.encode_ordinary(text) for text in texts]
        return encoding.encode_ordinary_batch(list(texts), num_threads=min(len(texts), _num_threads()))

    def __getstate__(self) -> dict[str, Any]:
        return {"hf": self.hf, "reserved": self.reserved, "name": self.name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["hf"], state["reserved"], state["name"])
