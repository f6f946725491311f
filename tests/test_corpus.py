"""Bring your own corpus: readers through the token cache, preprocessing, cache keys, interrupted runs."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from gptlab.data import encoding
from gptlab.data.cache import build_token_cache
from gptlab.data.datamodules import PretrainDataModule
from gptlab.data.documents import CorpusError, Preprocessing
from gptlab.data.readers import CorpusFormatError
from gptlab.tokenization import END_OF_TEXT, BPETokenizer, ByteTokenizer, CharTokenizer
from tests.conftest import CHINESE, ENGLISH


def cached_text(cache) -> str:
    return cache.tokenizer().decode(cache.tokens().tolist())


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


# --- every reader path, documents joined by end-of-text -------------------------------------------


def test_txt_directory_gives_one_document_per_file(tmp_path):
    (tmp_path / "books" / "more").mkdir(parents=True)
    (tmp_path / "books" / "a.txt").write_text(ENGLISH, encoding="utf-8")
    (tmp_path / "books" / "more" / "b.txt.gz").write_bytes(gzip.compress(CHINESE.encode()))
    (tmp_path / "books" / "notes.md").write_text("not a corpus format, skipped")
    cache = build_token_cache(tmp_path / "books", CharTokenizer(), tmp_path / "cache")
    assert cached_text(cache) == ENGLISH + END_OF_TEXT + CHINESE
    assert cache.meta["documents"] == 2


def test_jsonl_text_field_each_record_a_document(tmp_path):
    rows = [{"body": "first doc\n\nwith a blank line"}, {"body": None}, {"body": ""}, {"body": "床前明月光"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    cache = build_token_cache(path, CharTokenizer(), tmp_path / "cache", text_field="body")
    assert cached_text(cache) == f"first doc\n\nwith a blank line{END_OF_TEXT}床前明月光"
    assert (cache.meta["documents"], cache.meta["dropped_documents"]) == (2, 2)


def test_csv_tsv_gz_and_a_list_of_paths(tmp_path):
    csv_file = tmp_path / "a.csv"
    csv_file.write_text('id,text\n1,"one, with a comma"\n2,"two\nlines"\n', encoding="utf-8")
    tsv_gz = tmp_path / "b.tsv.gz"
    tsv_gz.write_bytes(gzip.compress("text\tid\n三\t3\n".encode()))
    cache = build_token_cache([csv_file, str(tsv_gz)], CharTokenizer(), tmp_path / "cache")
    assert cached_text(cache) == f"one, with a comma{END_OF_TEXT}two\nlines{END_OF_TEXT}三"


def test_glob_and_bpe_tokens_decode_to_the_documents(tmp_path):
    for name, text in [("x1.txt", ENGLISH * 3), ("x2.txt", CHINESE * 3)]:
        (tmp_path / name).write_text(text, encoding="utf-8")
    cache = build_token_cache(str(tmp_path / "x*.txt"), BPETokenizer(300), tmp_path / "cache")
    tokens = cache.tokens()
    eot = cache.tokenizer().eot_id
    assert list(np.flatnonzero(tokens == eot)) == [len(cache.tokenizer().encode(ENGLISH * 3))]
    assert cached_text(cache) == ENGLISH * 3 + END_OF_TEXT + CHINESE * 3


# --- streaming in chunks gives the same ids as encoding each document whole -----------------------

MIXED = (ENGLISH + "  indented line\r\ntrailing spaces   \n\n\n" + CHINESE + "tab\there 😀\n") * 20


@pytest.mark.parametrize("tokenizer", [CharTokenizer(), ByteTokenizer()], ids=["char", "byte"])
def test_chunked_ids_equal_unchunked(tmp_path, tokenizer):
    (tmp_path / "d.txt").write_text(MIXED, encoding="utf-8")
    chunked = build_token_cache(
        tmp_path / "d.txt", tokenizer, tmp_path / "c1", chunk_chars=300, piece_chars=40
    )
    whole = chunked.tokenizer()
    assert chunked.tokens().tolist() == whole.encode(MIXED)


def test_bpe_cuts_only_where_tokens_do_not_change(tmp_path):
    # Indented lines and trailing spaces: BPE learns tokens such as "\n   " that span a line break, so
    # cutting before an indented line would change the ids.
    text = ("Sonnet:\n    Shall I compare thee\n    to a summer's day?  \n\n\n" + ENGLISH) * 30
    (tmp_path / "d.txt").write_text(text, encoding="utf-8")
    chunked = build_token_cache(tmp_path / "d.txt", BPETokenizer(400), tmp_path / "c", piece_chars=30)
    assert chunked.tokens().tolist() == chunked.tokenizer().encode(text)


def test_pool_of_workers_gives_the_same_ids(tmp_path, monkeypatch):
    (tmp_path / "d.txt").write_text(MIXED, encoding="utf-8")
    monkeypatch.setattr(encoding, "MIN_BYTES_FOR_POOL", 0)
    pooled = build_token_cache(
        tmp_path / "d.txt", CharTokenizer(), tmp_path / "c", num_proc=2, chunk_chars=500
    )
    assert pooled.tokens().tolist() == pooled.tokenizer().encode(MIXED)


# --- preprocessing ---------------------------------------------------------------------------------


def test_preprocessing_steps():
    assert Preprocessing().text("Ａ\u00a0ﬁ  x  \n") == "Ａ\u00a0ﬁ  x  \n"  # off by default
    assert Preprocessing(nfkc=True).text("Ａ\u00a0ﬁ") == "A fi"
    assert Preprocessing(lowercase=True).text("ÀB c") == "àb c"
    clean = Preprocessing(clean_whitespace=True)
    assert clean.text("a  \t b \r\n\n\n\nc\t\n") == "a b\n\nc\n"
    assert clean.text("\n\n\n\nstart") == "\n\nstart"
    assert clean.text("one\n\ntwo") == "one\n\ntwo"


def test_preprocessing_applies_through_the_cache_and_drops_short_documents(tmp_path):
    rows = [{"text": "ＨＥＬＬＯ   World\n\n\n\nbye"}, {"text": "tiny"}, {"text": "Another   Document"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    steps = {"nfkc": True, "clean_whitespace": True, "lowercase": True, "min_chars": 5}
    cache = build_token_cache(path, CharTokenizer(), tmp_path / "cache", preprocessing=steps)
    assert cached_text(cache) == f"hello world\n\nbye{END_OF_TEXT}another document"
    assert cache.meta["dropped_documents"] == 1


def test_min_chars_streams_a_long_txt_document(tmp_path):
    (tmp_path / "long.txt").write_text("line\n" * 1000, encoding="utf-8")
    (tmp_path / "short.txt").write_text("hi\n", encoding="utf-8")
    cache = build_token_cache(tmp_path, CharTokenizer(), tmp_path / "cache", preprocessing={"min_chars": 100})
    assert cached_text(cache) == "line\n" * 1000


# --- the cache key ---------------------------------------------------------------------------------


def test_cache_reuse_and_invalidation(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text(ENGLISH, encoding="utf-8")
    cache_dir = tmp_path / "cache"
    first = build_token_cache(path, CharTokenizer(), cache_dir)
    stamp = first.tokens_path.stat().st_mtime_ns
    assert build_token_cache(path, CharTokenizer(), cache_dir).tokens_path.stat().st_mtime_ns == stamp

    keys = {first.directory}
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))  # touched: same text, new mtime
    keys.add(build_token_cache(path, CharTokenizer(), cache_dir).directory)
    keys.add(build_token_cache(path, CharTokenizer(), cache_dir, preprocessing={"lowercase": True}).directory)
    keys.add(build_token_cache(path, ByteTokenizer(), cache_dir).directory)
    keys.add(build_token_cache(path, BPETokenizer(300), cache_dir).directory)
    keys.add(build_token_cache(path, BPETokenizer(320), cache_dir).directory)
    keys.add(build_token_cache(path, CharTokenizer(), cache_dir, encoding_errors="replace").directory)
    assert len(keys) == 7
    assert sorted(p.name for p in cache_dir.iterdir() if not p.name.startswith(".")) == sorted(
        k.name for k in keys
    )


def test_datamodule_prepares_once_and_keeps_its_tokenizer_request(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text(ENGLISH * 5, encoding="utf-8")
    requested = BPETokenizer(300)
    dm = PretrainDataModule(path=str(path), tokenizer=requested, block_size=8, cache_dir=str(tmp_path / "c"))
    dm.prepare_data()
    dm.setup("fit")
    assert requested.needs_fit and not dm.tokenizer.needs_fit  # the fitted copy comes from the cache
    dm.prepare_data()  # as Trainer.fit does after train.py's own prepare_data + setup
    assert len(list((tmp_path / "c").glob("*/meta.json"))) == 1


def test_a_tokenizer_fitted_elsewhere_gets_its_own_entry(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text(ENGLISH, encoding="utf-8")
    learnt_here = build_token_cache(path, BPETokenizer(300), tmp_path / "c")
    from_a_checkpoint = BPETokenizer(300)  # same spec, another vocabulary
    from_a_checkpoint.fit([CHINESE * 20])
    other = build_token_cache(path, from_a_checkpoint, tmp_path / "c")
    assert other.directory != learnt_here.directory
    assert other.tokens().tolist() == from_a_checkpoint.encode(ENGLISH)
    assert build_token_cache(path, from_a_checkpoint, tmp_path / "c").directory == other.directory


def test_vocabulary_learnt_from_a_sample(tmp_path):
    (tmp_path / "a.txt").write_text("abc\n" * 3000, encoding="utf-8")
    (tmp_path / "b.txt").write_text("xyz\n" * 3000, encoding="utf-8")
    with pytest.raises(ValueError, match=r"missing from the character vocabulary.*data.fit_sample_mb=null"):
        build_token_cache(
            tmp_path,
            CharTokenizer(),
            tmp_path / "cache",
            fit_sample_mb=0.001,
            chunk_chars=1000,
            piece_chars=100,
        )
    # a sample spread over the corpus (every k-th chunk) sees both files
    spread = build_token_cache(
        tmp_path, CharTokenizer(), tmp_path / "cache", fit_sample_mb=0.01, chunk_chars=1000, piece_chars=100
    )
    assert spread.tokenizer().chars == sorted("\nabcxyz")


def test_sample_spreads_over_a_gzipped_corpus_by_its_text_size(tmp_path):
    # 24 KB of text in ~200 bytes of gzip: the stride comes from the text, so a 10 KB sample (every
    # other 1 KB chunk) reaches the second file instead of stopping inside the first.
    for name, line in (("a", "abc\n"), ("b", "xyz\n")):
        with gzip.open(tmp_path / f"{name}.txt.gz", "wt", encoding="utf-8") as out:
            out.write(line * 3000)
    entry = build_token_cache(
        tmp_path, CharTokenizer(), tmp_path / "cache", fit_sample_mb=0.01, chunk_chars=1000, piece_chars=100
    )
    assert entry.tokenizer().chars == sorted("\nabcxyz")


def test_bpe_fitted_through_the_chunked_sample_equals_one_fit_on_the_documents(tmp_path):
    # The fit streams pieces of 100 characters cut where tokens cannot change, so a sample that takes
    # every chunk learns the very merges of a fit on the whole documents.
    documents = [ENGLISH * 3, CHINESE * 3, (ENGLISH + "\n\n" + CHINESE) * 2]
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": d} for d in documents])
    direct = BPETokenizer(vocab_size=400)
    direct.fit(documents)
    for sample_mb in (None, 1.0):  # 1 MB: more than the corpus, a stride of 1
        entry = build_token_cache(
            corpus, BPETokenizer(vocab_size=400), tmp_path / "cache", fit_sample_mb=sample_mb,
            split=(0.1, 0.0), chunk_chars=300, piece_chars=100,
        )  # fmt: skip
        assert entry.tokenizer().to_json() == direct.to_json()


# --- an interrupted preparation is redone ---------------------------------------------------------


def test_failed_preparation_leaves_nothing_and_the_next_run_redoes_it(tmp_path, monkeypatch):
    path = tmp_path / "d.txt"
    path.write_text(MIXED, encoding="utf-8")
    calls = []

    def fails_on_the_third_chunk(self, texts):
        calls.append(len(texts))
        if len(calls) == 3:
            raise RuntimeError("tokenizer failed mid-way")
        return [self.encode(text) for text in texts]

    with monkeypatch.context() as patch:
        patch.setattr(CharTokenizer, "encode_batch", fails_on_the_third_chunk)
        with pytest.raises(RuntimeError, match="mid-way"):
            build_token_cache(path, CharTokenizer(), tmp_path / "cache", chunk_chars=100, piece_chars=50)
    assert not [p for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")]
    assert cached_text(build_token_cache(path, CharTokenizer(), tmp_path / "cache")) == MIXED


def test_killed_preparation_is_not_trusted_and_is_redone(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text(MIXED, encoding="utf-8")
    cache_dir = tmp_path / "cache"
    # A process killed (SIGKILL: no clean-up runs) after writing part of the tokens.
    child = textwrap.dedent(f"""
        import os, signal
        from gptlab.data.cache import build_token_cache
        from gptlab.tokenization import CharTokenizer

        class DiesMidway(CharTokenizer):
            kind = "char"
            calls = 0
            def encode_batch(self, texts):
                DiesMidway.calls += 1
                if DiesMidway.calls == 3:
                    os.kill(os.getpid(), signal.SIGKILL)
                return super().encode_batch(texts)

        build_token_cache({str(path)!r}, DiesMidway(), {str(cache_dir)!r}, chunk_chars=100, piece_chars=50)
    """)
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert result.returncode == -9, result.stderr
    leftovers = [p for p in cache_dir.iterdir() if ".tmp-" in p.name]
    assert len(leftovers) == 1 and (leftovers[0] / "tokens.bin").stat().st_size > 0
    assert not list(cache_dir.glob("*/meta.json"))

    cache = build_token_cache(path, CharTokenizer(), cache_dir)
    assert cached_text(cache) == MIXED
    assert not [p for p in cache_dir.iterdir() if ".tmp-" in p.name]


# --- errors that name the problem and the fix, through the datamodule ------------------------------


def prepare(path, tmp_path, tokenizer=None, **kwargs) -> PretrainDataModule:
    dm = PretrainDataModule(
        path=str(path),
        tokenizer=tokenizer or CharTokenizer(),
        block_size=8,
        cache_dir=str(tmp_path / "c"),
        **kwargs,
    )
    dm.prepare_data()
    return dm


def test_empty_directory_and_unmatched_glob(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no .txt, .jsonl, .csv or .tsv files"):
        prepare(tmp_path / "empty", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"glob '.*\*.jsonl' matches no files"):
        prepare(tmp_path / "*.jsonl", tmp_path)


@pytest.mark.parametrize("tokenizer", [CharTokenizer(), BPETokenizer(300)], ids=["char", "bpe"])
def test_bad_jsonl_names_file_and_line(tmp_path, tokenizer):
    # BPE fits in Rust, which reads the documents: the error must still come out as it was raised.
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\n' * 50 + '{"text": broken}\n', encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"d.jsonl' line 51 is not valid JSON"):
        prepare(path, tmp_path, tokenizer)
    write_jsonl(path, [{"text": "a"}, {"body": "b"}])
    with pytest.raises(CorpusFormatError, match=r"d.jsonl' line 2 has no field 'text'.*data.text_field"):
        prepare(path, tmp_path, tokenizer)


def test_csv_without_the_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("body,label\nhello,a\n", encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"d.csv' has no column 'content' \(its header is"):
        prepare(path, tmp_path, text_field="content")


def test_invalid_utf8_is_located_or_replaced(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine line\nab\xffcd\n" + b"more text\n" * 20)
    with pytest.raises(CorpusFormatError, match=r"bad.txt' is not valid UTF-8 at byte offset 12 \(line 2\)"):
        prepare(path, tmp_path)
    dm = prepare(path, tmp_path, encoding_errors="replace")
    dm.setup("fit")
    assert "ab\ufffdcd" in dm.tokenizer.decode(dm.datasets["train"].tokens.tolist())


def test_truncated_gzip(tmp_path):
    path = tmp_path / "cut.txt.gz"
    path.write_bytes(gzip.compress((ENGLISH * 200).encode())[:-40])
    with pytest.raises(CorpusFormatError, match="cut.txt.gz' is a truncated or corrupt gzip"):
        prepare(path, tmp_path)


def test_everything_dropped_by_preprocessing_names_min_chars(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "short"}, {"text": ""}, {"text": "tiny"}])
    with pytest.raises(CorpusError, match=r"all 2 non-empty documents.*min_chars=50.*lower min_chars"):
        prepare(path, tmp_path, preprocessing={"min_chars": 50})
    with pytest.raises(CorpusError, match="is empty"):
        prepare(write_jsonl(tmp_path / "e.jsonl", [{"text": ""}]), tmp_path)


def test_setup_only_reads_the_cache(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text(ENGLISH, encoding="utf-8")
    dm = PretrainDataModule(path=str(path), tokenizer=CharTokenizer(), block_size=8, cache_dir=str(tmp_path))
    with pytest.raises(RuntimeError, match=r"no token cache .* call prepare_data\(\) before setup\(\)"):
        dm.setup("fit")
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.datasets["train"]) > 0
