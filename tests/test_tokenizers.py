"""Tokenizers: round trips on any Unicode, JSON persistence, clear errors."""

from __future__ import annotations

import pytest

from gptlab.data.tokenizers import END_OF_TEXT, CharTokenizer, Tokenizer, UnknownCharactersError
from tests.conftest import CHINESE, ENGLISH

EMOJI_AND_CONTROL = "tab\there\r\nbell\x07 😀🚀 naïve café\u200b"


@pytest.mark.parametrize("text", [ENGLISH, CHINESE, EMOJI_AND_CONTROL], ids=["english", "chinese", "emoji"])
def test_char_round_trip(text):
    tokenizer = CharTokenizer()
    tokenizer.fit([text])
    ids = tokenizer.encode(text)
    assert len(ids) == len(text)
    assert tokenizer.decode(ids) == text
    assert max(ids) < tokenizer.vocab_size


def test_char_vocabulary_is_sorted_and_deterministic():
    tokenizer = CharTokenizer()
    tokenizer.fit(["cab", "明a"])
    assert tokenizer.chars == ["a", "b", "c", "明"]
    assert tokenizer.encode("明ab") == [3, 0, 1]
    assert tokenizer.eot_id == 4 and tokenizer.vocab_size == 5
    assert tokenizer.decode([0, 4, 1]) == f"a{END_OF_TEXT}b"


def test_json_round_trip_keeps_ids():
    tokenizer = CharTokenizer()
    tokenizer.fit([ENGLISH + CHINESE])
    restored = Tokenizer.from_json(tokenizer.to_json())
    assert isinstance(restored, CharTokenizer)
    assert restored.encode(CHINESE) == tokenizer.encode(CHINESE)
    assert restored.vocab_size == tokenizer.vocab_size


def test_unknown_characters_are_named():
    tokenizer = CharTokenizer()
    tokenizer.fit(["hello"])
    with pytest.raises(UnknownCharactersError, match=r"2 character\(s\).*\['你', '好'\]"):
        tokenizer.encode("hello你好")


def test_empty_corpus_cannot_build_a_vocabulary():
    with pytest.raises(ValueError, match="empty corpus"):
        CharTokenizer().fit(["", ""])


def test_unknown_kind_in_json_is_named():
    with pytest.raises(ValueError, match="unknown tokenizer kind 'wordpiece'"):
        Tokenizer.from_json('{"kind": "wordpiece"}')
