"""Tokenizers: round trips on any Unicode, JSON persistence, clear errors."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from tokenizers import normalizers, pre_tokenizers
from tokenizers.pre_tokenizers import ByteLevel

from gptlab import PROJECT_ROOT
from gptlab.tokenization import (
    END_OF_TEXT,
    BPETokenizer,
    ByteTokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    Tokenizer,
    UnknownCharactersError,
    VocabularyFileError,
    fast_bpe,
)
from gptlab.tokenization.byte_level import BYTE_OF_SYMBOL
from gptlab.tokenization.fast_bpe import NoTwinError, hf_encode_batch, mergeable_ranks, twin
from tests.conftest import CHINESE, ENGLISH

EMOJI_AND_CONTROL = "tab\there\r\nbell\x07 😀🚀 naïve café\u200b"
TEXTS = pytest.mark.parametrize(
    "text", [ENGLISH, CHINESE, EMOJI_AND_CONTROL], ids=["english", "chinese", "emoji"]
)
GPT2_DIR = PROJECT_ROOT / "data" / "gpt2"
KINDS = ["char", "byte", "bpe", "gpt2"]


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


# ---------------------------------------------------------------------------------------------------
# Every kind: one fitted tokenizer per kind, shared by the module (the GPT-2 files take ~0.3 s to load).


@pytest.fixture(scope="module")
def gpt2() -> GPT2Tokenizer:
    return GPT2Tokenizer(str(GPT2_DIR))


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    tokenizer = BPETokenizer(vocab_size=300)
    # English only, so Chinese and emoji must fall back to byte tokens.
    tokenizer.fit(text for text in [ENGLISH * 20])
    return tokenizer


@pytest.fixture
def make(bpe: BPETokenizer, gpt2: GPT2Tokenizer) -> Callable[[str, str], Tokenizer]:
    """A ready tokenizer of ``kind``; the char one is fitted on ``text`` (it cannot encode unseen text)."""

    def _make(kind: str, text: str) -> Tokenizer:
        if kind == "char":
            tokenizer = CharTokenizer()
            tokenizer.fit([text])
            return tokenizer
        return {"byte": ByteTokenizer(), "bpe": bpe, "gpt2": gpt2}[kind]

    return _make


@TEXTS
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_for_every_kind(make, kind, text):
    tokenizer = make(kind, text)
    ids = tokenizer.encode(text)
    assert ids and all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.eot_id not in ids
    assert tokenizer.decode(ids) == text
    assert tokenizer.encode_batch([text, "", text]) == [ids, [], ids]


@pytest.mark.parametrize("kind", KINDS)
def test_end_of_text_comes_only_from_the_pipeline(make, kind):
    # The literal string in a document is ordinary text: a corpus cannot forge document boundaries.
    text = f"a{END_OF_TEXT}b"
    tokenizer = make(kind, text)
    ids = tokenizer.encode(text)
    assert tokenizer.eot_id not in ids
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode([*tokenizer.encode("a"), tokenizer.eot_id]) == f"a{END_OF_TEXT}"


@pytest.mark.parametrize("kind", KINDS)
def test_json_round_trip_gives_identical_ids(make, kind):
    text = ENGLISH + CHINESE + EMOJI_AND_CONTROL
    tokenizer = make(kind, text)
    restored = Tokenizer.from_json(tokenizer.to_json())
    assert type(restored) is type(tokenizer)
    assert restored.encode(text) == tokenizer.encode(text)
    assert (restored.vocab_size, restored.eot_id) == (tokenizer.vocab_size, tokenizer.eot_id)
    assert restored.spec() == tokenizer.spec()


# ---------------------------------------------------------------------------------------------------
# Bytes


def test_byte_ids_are_the_utf8_bytes():
    tokenizer = ByteTokenizer()
    assert tokenizer.encode("aé明") == [0x61, 0xC3, 0xA9, 0xE6, 0x98, 0x8E]
    assert (tokenizer.vocab_size, tokenizer.eot_id, tokenizer.needs_fit) == (257, 256, False)
    assert tokenizer.decode([0x61, 256, 0x62]) == f"a{END_OF_TEXT}b"


def test_byte_decode_replaces_a_cut_character():
    # A sample may stop in the middle of a multi-byte character: "床" is E5 BA 8A.
    assert ByteTokenizer().decode([0x61, 0xE5, 0xBA]) == "a\ufffd"


def test_byte_decode_rejects_ids_outside_the_vocabulary():
    with pytest.raises(ValueError, match=r"id 300 is outside the byte vocabulary \(0\.\.256\)"):
        ByteTokenizer().decode([300])


# ---------------------------------------------------------------------------------------------------
# Trained BPE


def test_bpe_learns_exactly_the_requested_vocabulary(bpe):
    assert bpe.vocab_size == 300
    assert bpe.eot_id == 0  # the trainer puts special tokens first
    assert not bpe.needs_fit
    # Merges learned from English make English shorter than its bytes.
    assert len(bpe.encode(ENGLISH)) < len(ENGLISH.encode()) / 2


def test_bpe_stops_early_when_the_corpus_runs_out_of_pairs():
    tokenizer = BPETokenizer(vocab_size=4096, min_frequency=2)
    tokenizer.fit(["abababab"])
    # 256 bytes + <|endoftext|> + "ab" (4 times) + "abab" (3 overlapping times); "abababab" occurs once.
    assert tokenizer.vocab_size == 259
    ids = tokenizer.encode("abababab")
    assert len(ids) == 2 and ids[0] == ids[1] == 258
    assert tokenizer.decode(ids[:1]) == "abab"


def test_bpe_never_emits_an_unknown_id(bpe):
    # Bytes never seen in training (Chinese, emoji, a NUL) still map to their byte tokens.
    text = CHINESE + EMOJI_AND_CONTROL + "\x00\xff"
    ids = bpe.encode(text)
    assert len(ids) >= len((CHINESE + "😀🚀").encode()) // 2
    assert all(0 < i < bpe.vocab_size for i in ids)
    assert bpe.decode(ids) == text


def test_bpe_spec_is_the_request_not_the_result(bpe):
    assert bpe.spec() == {"kind": "bpe", "vocab_size": 300, "min_frequency": 2}


@pytest.mark.parametrize("vocab_size", [0, 256])
def test_bpe_vocabulary_smaller_than_the_bytes_is_refused(vocab_size):
    with pytest.raises(ValueError, match=r"too small.*take 257 ids; set tokenizer.vocab_size=257 or more"):
        BPETokenizer(vocab_size=vocab_size)


def test_bpe_must_be_trained_before_use():
    tokenizer = BPETokenizer()
    assert tokenizer.needs_fit
    with pytest.raises(RuntimeError, match=r"not been trained yet; call fit\(texts\) first"):
        tokenizer.encode("hello")


def test_bpe_refuses_an_empty_corpus():
    with pytest.raises(ValueError, match="empty corpus"):
        BPETokenizer().fit(iter(["", ""]))


# ---------------------------------------------------------------------------------------------------
# GPT-2 on the bundled files


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("Hello world", [15496, 995]),
        (" world", [995]),  # "Ġworld" is one token
        ("hello world", [31373, 995]),
        ("\n\n", [628]),  # "ĊĊ"
        ("  hi", [220, 23105]),  # whitespace before a word: all spaces but the last stand alone
        # The literal special string is split by the pre-tokenizer into "<|", "endoftext", "|>".
        (END_OF_TEXT, [27, 91, 437, 1659, 5239, 91, 29]),
    ],
)
def test_gpt2_gives_openai_ids(gpt2, text, ids):
    assert gpt2.encode(text) == ids
    assert gpt2.decode(ids) == text


def test_gpt2_ids_agree_with_the_files(gpt2):
    encoder = json.loads((GPT2_DIR / "encoder.json").read_text(encoding="utf-8"))
    assert encoder["Hello"] == 15496 and encoder["Ġworld"] == 995 and encoder["ĊĊ"] == 628
    assert (gpt2.vocab_size, gpt2.eot_id) == (50257, 50256) == (len(encoder), encoder[END_OF_TEXT])
    assert gpt2.decode([gpt2.eot_id]) == END_OF_TEXT
    # GPT-2's first 256 ids are the byte symbols in code point order (the tiny vocabulary below relies on it).
    assert sorted(encoder, key=encoder.get)[:256] == sorted(ByteLevel.alphabet())


def test_bundled_gpt2_files_are_the_original_ones():
    # The hashes tiktoken checks when it fetches the "gpt2" encoding.
    expected = {
        "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
        "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    }
    for name, digest in expected.items():
        assert hashlib.sha256((GPT2_DIR / name).read_bytes()).hexdigest() == digest, name


# ---------------------------------------------------------------------------------------------------
# GPT-2 loader on a tiny vocabulary written by the test

# Ids 0..255 are the byte symbols in code point order, as in GPT-2: a printable ASCII character c has
# id ord(c) - 33 and "Ġ" (the space byte) has id 220. Then one id per merge, in rank order.
TINY_MERGES = [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), ("Ġ", "w"), ("o", "r")]


def tiny_vocab() -> dict[str, int]:
    tokens = sorted(ByteLevel.alphabet()) + [a + b for a, b in TINY_MERGES] + [END_OF_TEXT]
    return {token: i for i, token in enumerate(tokens)}


def write_tiny(directory: Path, layout: str, vocab: object = None, merges: list | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab() if vocab is None else vocab
    lines = [f"{a} {b}" for a, b in (TINY_MERGES if merges is None else merges)]
    if layout == "openai":
        (directory / "encoder.json").write_text(json.dumps(vocab), encoding="utf-8")
        (directory / "vocab.bpe").write_text("#version: 0.2\n" + "\n".join(lines) + "\n", encoding="utf-8")
    elif layout == "hf":
        (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (directory / "merges.txt").write_text("\n".join(lines), encoding="utf-8")
    else:
        model = {"type": "BPE", "vocab": vocab, "merges": [line.split(" ") for line in lines]}
        (directory / "tokenizer.json").write_text(json.dumps({"model": model}), encoding="utf-8")
    return directory


@pytest.mark.parametrize("layout", ["openai", "hf", "tokenizer.json"])
def test_gpt2_tiny_vocabulary_gives_hand_computed_ids(tmp_path, layout):
    tokenizer = GPT2Tokenizer(str(write_tiny(tmp_path / "vocab", layout)))
    # "hello": h e l l o -> he l l o -> he ll o -> hell o -> hello (259).
    # " world": Ġ w o r l d -> Ġw o r l d -> Ġw or l d = 260 261 ('l' 108-33) ('d' 100-33).
    assert tokenizer.encode("hello world") == [259, 260, 261, 75, 67]
    # No merge "e ll": rank order, not length, decides.
    assert tokenizer.encode("ello") == [ord("e") - 33, 257, ord("o") - 33]
    assert tokenizer.encode("hellow") == [259, ord("w") - 33]
    assert (tokenizer.vocab_size, tokenizer.eot_id) == (263, 262)
    assert tokenizer.decode([259, tokenizer.eot_id]) == f"hello{END_OF_TEXT}"


def test_gpt2_spec_hashes_the_vocabulary_not_the_path_or_layout(tmp_path, gpt2):
    openai = GPT2Tokenizer(str(write_tiny(tmp_path / "a", "openai")))
    hf = GPT2Tokenizer(str(write_tiny(tmp_path / "b", "hf")))
    moved = GPT2Tokenizer(str(shutil.copytree(tmp_path / "a", tmp_path / "c")))
    assert openai.spec() == hf.spec() == moved.spec()
    assert set(openai.spec()) == {"kind", "vocab_hash"} and openai.spec()["kind"] == "gpt2"
    assert openai.spec() != gpt2.spec()


def test_gpt2_missing_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'.*nowhere' does not exist; set tokenizer.path"):
        GPT2Tokenizer(str(tmp_path / "nowhere"))


def test_gpt2_missing_files_lists_what_was_looked_for(tmp_path):
    (tmp_path / "encoder.json").write_text("{}")
    with pytest.raises(FileNotFoundError) as info:
        GPT2Tokenizer(str(tmp_path))
    message = str(info.value)
    assert "looked for encoder.json + vocab.bpe; vocab.json + merges.txt; tokenizer.json" in message
    assert "found ['encoder.json']" in message and "set tokenizer.path" in message


@pytest.mark.parametrize(
    ("layout", "vocab", "merges", "error"),
    [
        ("openai", [1, 2], None, r"encoder.json must hold a JSON object mapping token -> id, found list"),
        ("hf", None, [("h", "e"), ("e", "zz")], r"merges.txt: merge 2 \('e' 'zz'\) needs 'zz'.*vocab.json"),
        # Both parts are known but the merged token is not.
        (
            "openai",
            None,
            [("h", "e"), ("x", "y")],
            r"vocab.bpe: merge 2 \('x' 'y'\) needs 'xy'.*encoder.json",
        ),
        (
            "openai",
            {**tiny_vocab(), "zzz": 900},
            None,
            r"encoder.json: token ids must be the integers 0..263",
        ),
        ("openai", {k: v for k, v in tiny_vocab().items() if k != "Ġ"}, None, r"lacks 1 of the 256 byte"),
        (
            "hf",
            {k: v for k, v in tiny_vocab().items() if k != END_OF_TEXT},
            None,
            r"vocab.json has no '<\|end",
        ),
    ],
    ids=["not-an-object", "unknown-part", "unknown-result", "id-gap", "missing-byte", "no-endoftext"],
)
def test_gpt2_inconsistent_files_are_named(tmp_path, layout, vocab, merges, error):
    with pytest.raises(VocabularyFileError, match=error):
        GPT2Tokenizer(str(write_tiny(tmp_path, layout, vocab, merges)))


def test_gpt2_unreadable_files_are_named(tmp_path):
    (write_tiny(tmp_path / "a", "openai") / "encoder.json").write_text("{not json")
    with pytest.raises(VocabularyFileError, match=r"encoder.json is not valid UTF-8 JSON"):
        GPT2Tokenizer(str(tmp_path / "a"))
    (write_tiny(tmp_path / "b", "hf") / "merges.txt").write_text("h e\nhe ll o\n")
    with pytest.raises(VocabularyFileError, match=r"merges.txt line 2: expected 'left right', got 'he ll o'"):
        GPT2Tokenizer(str(tmp_path / "b"))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordPiece"}}))
    with pytest.raises(VocabularyFileError, match=r"tokenizer.json does not hold a BPE model"):
        GPT2Tokenizer(str(tmp_path / "c"))


# ---------------------------------------------------------------------------------------------------
# The tiktoken fast path: the same ids as Hugging Face's, or no fast path at all

SHAKESPEARE = PROJECT_ROOT / "data" / "shakespeare_char.txt"
TRICKY = {
    "english": ENGLISH,
    "chinese": CHINESE,
    "emoji": EMOJI_AND_CONTROL + "👨‍👩‍👧‍👦 🏳️‍🌈 e\u0301",
    "control": "".join(map(chr, range(32))) + "\x7f\x85\xa0\u2028\u3000\ufeff",
    "whitespace": "a" + " " * 100 + "b\t\t \n\n\n  x  \n \t" + " " * 17,
    "crlf": "line one\r\nline two\r\n\r\n  indented\r\n",
    "digits": "1234567890 3.14159 -42 2026-11-28 1,000,000 ١٢٣ ⅷ ²",
    "contractions": "don't I'll we've she'd it's you're I'm THEY'RE 'tis o'clock ' s",
    "endoftext": f"{END_OF_TEXT} a{END_OF_TEXT}b <|end|>",
}


@pytest.fixture(scope="module")
def bpe_1k() -> BPETokenizer:
    tokenizer = BPETokenizer(vocab_size=1024)
    # Some Chinese and emoji so merges of multi-byte characters are learnt too.
    text = SHAKESPEARE.read_text(encoding="utf-8")[:300_000]
    tokenizer.fit([text, CHINESE * 50, TRICKY["emoji"] * 20])
    return tokenizer


@pytest.fixture(params=["bpe", "gpt2"])
def fast(request, bpe_1k, gpt2) -> Tokenizer:
    return {"bpe": bpe_1k, "gpt2": gpt2}[request.param]


def hf_ids(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    return hf_encode_batch(tokenizer.encoder.hf, texts)


@pytest.mark.parametrize("text", TRICKY.values(), ids=TRICKY.keys())
def test_tiktoken_gives_the_hf_ids(fast, text):
    assert fast.encoder.backend == "tiktoken"
    assert fast.encode(text) == hf_ids(fast, [text])[0]
    assert fast.encode_batch([text, "", text[::-1]]) == hf_ids(fast, [text, "", text[::-1]])
    assert fast.eot_id not in fast.encode(text)


def test_tiktoken_gives_the_hf_ids_on_shakespeare(fast):
    text = SHAKESPEARE.read_text(encoding="utf-8")[:300_000]
    pieces = [text[i : i + 20_000] for i in range(0, len(text), 20_000)]
    assert fast.encode(text) == hf_ids(fast, [text])[0]
    assert fast.encode_batch(pieces) == hf_ids(fast, pieces)
    assert fast.encode_batch([]) == []


def test_tiktoken_ranks_leave_out_endoftext(fast):
    ranks = mergeable_ranks(fast.encoder.hf, END_OF_TEXT)
    assert END_OF_TEXT.encode() not in ranks and fast.eot_id not in ranks.values()
    assert len(ranks) == fast.vocab_size - 1 == len(set(ranks.values()))
    assert all(bytes([b]) in ranks for b in range(256))


def test_byte_symbol_table_is_gpt2s():
    assert set(BYTE_OF_SYMBOL) == set(ByteLevel.alphabet())
    assert sorted(BYTE_OF_SYMBOL.values()) == list(range(256))
    assert BYTE_OF_SYMBOL["Ġ"] == ord(" ") and BYTE_OF_SYMBOL["Ċ"] == ord("\n") and BYTE_OF_SYMBOL["A"] == 65


def test_gpt2_fast_path_keeps_openai_ids(gpt2):
    assert gpt2.encoder.backend == "tiktoken"
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.encode_batch(["Hello world", " world"]) == [[15496, 995], [995]]


@pytest.mark.parametrize("layout", ["openai", "tokenizer.json"])
def test_tiny_vocabulary_takes_the_fast_path(tmp_path, layout):
    tokenizer = GPT2Tokenizer(str(write_tiny(tmp_path, layout)))
    assert tokenizer.encoder.backend == "tiktoken"
    assert tokenizer.encode_batch(["hello world", "ello", "hellow"]) == [
        [259, 260, 261, 75, 67],
        [ord("e") - 33, 257, ord("o") - 33],
        [259, ord("w") - 33],
    ]


@pytest.mark.parametrize("kind", ["bpe", "gpt2"])
def test_pickled_tokenizer_leaves_the_tiktoken_encoding_behind(bpe_1k, gpt2, kind):
    # DataLoader workers and ddp_spawn pickle the tokenizer; the copy rebuilds its encoding when used.
    tokenizer = {"bpe": bpe_1k, "gpt2": gpt2}[kind]
    state = tokenizer.to_json()
    assert tokenizer.encoder.backend == "tiktoken"  # built
    blob = pickle.dumps(tokenizer)
    assert b"tiktoken" not in blob and b"mergeable_ranks" not in blob
    copy = pickle.loads(blob)
    assert copy.encode(ENGLISH) == tokenizer.encode(ENGLISH) and copy.encoder.backend == "tiktoken"
    assert tokenizer.to_json() == state == copy.to_json()  # the state stays the Hugging Face JSON


def test_without_tiktoken_hf_encodes(monkeypatch, bpe_1k):
    monkeypatch.setattr(fast_bpe, "tiktoken", None)
    tokenizer = Tokenizer.from_json(bpe_1k.to_json())
    assert tokenizer.encoder.backend == "hf"
    assert tokenizer.encode_batch([ENGLISH, CHINESE]) == bpe_1k.encode_batch([ENGLISH, CHINESE])


def swapped_ids_vocab() -> dict[str, int]:
    """The tiny vocabulary with the ids of "he" (merge 1) and "ll" (merge 2) swapped."""
    vocab = tiny_vocab()
    vocab["he"], vocab["ll"] = vocab["ll"], vocab["he"]
    return vocab


# "hel" cannot come out of h e l: merge 1 makes h el, and there is no merge "h el".
UNREACHABLE = (["el", "he", "hel"], [("e", "l"), ("h", "e"), ("he", "l")])


def test_vocabulary_tiktoken_cannot_express_falls_back_to_hf(tmp_path, caplog):
    # Ids out of merge order: HF ranks merges by their line, tiktoken would rank them by id.
    tokenizer = GPT2Tokenizer(str(write_tiny(tmp_path / "a", "hf", swapped_ids_vocab())))
    with caplog.at_level(logging.WARNING, logger="gptlab.tokenization.fast_bpe"):
        assert tokenizer.encoder.backend == "hf"
    assert "ids do not follow the merge order" in caplog.text and "gptlab-gpt2" in caplog.text
    assert tokenizer.encode("hello") == [259]  # still HF's ids
    assert tokenizer.encode("he") == [257]  # "he" now has the id of "ll"

    tokens, merges = UNREACHABLE
    vocab = {t: i for i, t in enumerate(sorted(ByteLevel.alphabet()) + tokens + [END_OF_TEXT])}
    tokenizer = GPT2Tokenizer(str(write_tiny(tmp_path / "b", "openai", vocab, merges)))
    assert tokenizer.encoder.backend == "hf"
    assert tokenizer.encode("hel") == [ord("h") - 33, 256]


@pytest.mark.parametrize(
    ("vocab", "merges", "error"),
    [
        (swapped_ids_vocab(), None, r"merge 2 \('l' 'l'\) makes id 256, not above the previous merge's 257"),
        # HF keeps a pair listed twice at its last place, here after "l l".
        (None, [("h", "e"), ("l", "l"), ("h", "e")], r"merge 2 \('h' 'e'\) makes id 256, not above"),
        (
            {t: i for i, t in enumerate(sorted(ByteLevel.alphabet()) + UNREACHABLE[0] + [END_OF_TEXT])},
            UNREACHABLE[1],
            r"HF's BPE splits the token 'hel' itself into ids \[71, 256\]",
        ),
    ],
    ids=["ids-out-of-order", "pair-listed-twice", "unreachable"],
)
def test_twin_refuses_what_would_change_ids(tmp_path, vocab, merges, error):
    tokenizer = GPT2Tokenizer(str(write_tiny(tmp_path, "hf", vocab, merges)))
    with pytest.raises(NoTwinError, match=error):
        twin(tokenizer.encoder.hf, END_OF_TEXT)


def test_twin_refuses_other_layouts(tmp_path):
    tokenizer = GPT2Tokenizer(str(write_tiny(tmp_path, "openai"))).encoder.hf
    with pytest.raises(NoTwinError, match="makes the reserved token 'he'"):
        mergeable_ranks(tokenizer, reserved="he")
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.add_special_tokens([END_OF_TEXT])
    with pytest.raises(NoTwinError, match="added tokens; it has a normalizer; its pre-tokenizer is not"):
        twin(tokenizer, END_OF_TEXT)


@pytest.mark.slow
def test_tiktoken_splits_every_character_as_hf_does(gpt2):
    # Both engines classify characters (letter, number, space, other) with their own Unicode tables.
    # Planes 4-13 are unassigned and 15-16 private use in every Unicode version so far.
    planes = [*range(0, 0xD800), *range(0xE000, 0x40000), *range(0xE0000, 0xF0000)]
    chars = list(map(chr, planes))
    for context in ["a{}a", "1{}1", "!{}!", " {}x"]:
        texts = ["|".join(context.format(c) for c in chars[i : i + 1000]) for i in range(0, len(chars), 1000)]
        assert gpt2.encode_batch(texts) == hf_ids(gpt2, texts), context
