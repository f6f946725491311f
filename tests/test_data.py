"""Token windows, the datamodule's splits and loaders, and the token cache."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from gptlab.data.cache import build_token_cache
from gptlab.data.datamodules import PretrainDataModule
from gptlab.data.datasets import TokenWindows
from gptlab.data.documents import CorpusError
from gptlab.tokenization import BPETokenizer, ByteTokenizer, CharTokenizer


def test_windows_are_shifted_pairs():
    tokens = np.arange(100, dtype=np.uint16)
    dataset = TokenWindows(tokens, block_size=8, start=10, end=50, stride=8)
    assert len(dataset) == 4  # starts 10, 18, 26, 34: the last window ends at 42 < 50
    x, y = dataset[1]
    assert x.tolist() == list(range(18, 26)) and y.tolist() == list(range(19, 27))
    assert x.dtype == torch.int64
    xs, ys = dataset.__getitems__([0, 3])
    assert xs[:, 0].tolist() == [10, 34] and torch.equal(ys[:, :-1], xs[:, 1:])
    with pytest.raises(IndexError):
        dataset[4]


def test_window_never_crosses_the_split_end():
    tokens = np.arange(100, dtype=np.uint16)
    dataset = TokenWindows(tokens, block_size=8, start=0, end=30, stride=1)
    assert len(dataset) == 30 - 9 + 1
    _, y = dataset[len(dataset) - 1]
    assert y[-1].item() == 29


def make_datamodule(corpus, tmp_path, **kwargs) -> PretrainDataModule:
    """A datamodule with its corpus prepared, as Lightning does before ``setup``."""
    options = {"block_size": 16, "batch_size": 4, "cache_dir": tmp_path / "cache", "steps_per_epoch": 5}
    dm = PretrainDataModule(path=str(corpus), tokenizer=CharTokenizer(), **{**options, **kwargs})
    dm.prepare_data()
    return dm


def held_out_text(text: str, fraction: float) -> str:
    """The text after the cut at ``1 - fraction`` of its UTF-8 bytes, worked out independently."""
    data = text.encode("utf-8")
    cut = int(len(data) * (1 - fraction))
    while cut and (data[cut] & 0xC0) == 0x80:  # a continuation byte: back to the character's start
        cut -= 1
    return data[cut:].decode("utf-8")


def test_split_by_text_and_fixed_validation_windows(corpus, tmp_path):
    dm = make_datamodule(corpus, tmp_path)
    dm.setup("fit")
    text = corpus.read_text(encoding="utf-8")
    val_text = held_out_text(text, 0.1)
    train, val = dm.datasets["train"], dm.datasets["val"]
    n_train = len(text) - len(val_text)
    assert len(train) == n_train - 16
    assert val.start == n_train and val.stride == 16
    assert dm.datasets["test"] is val  # no test fraction: test evaluates the validation windows
    x, _ = val[0]
    assert dm.tokenizer.decode(x.tolist()) == val_text[:16]
    first = [b[0].clone() for b in dm.val_dataloader()]
    second = [b[0].clone() for b in dm.val_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("make_tokenizer", [CharTokenizer, ByteTokenizer, lambda: BPETokenizer(300)])
def test_every_tokenizer_holds_out_the_same_text_and_counts_its_bytes(corpus, tmp_path, make_tokenizer):
    text = corpus.read_text(encoding="utf-8")
    cache = build_token_cache(corpus, make_tokenizer(), tmp_path / "cache", split=(0.1, 0.05))
    tokenizer, tokens = cache.tokenizer(), cache.tokens()
    sizes = np.array(tokenizer.token_bytes())
    assert len(sizes) == tokenizer.vocab_size and sizes[tokenizer.eot_id] == 0
    test_text = held_out_text(text, 0.05)
    val_text = held_out_text(text, 0.15)[: -len(test_text)]
    for name, expected in [
        ("val", val_text),
        ("test", test_text),
        ("train", text[: -len(val_text + test_text)]),
    ]:
        start, end = cache.split_range(name)
        assert tokenizer.decode(tokens[start:end].tolist()) == expected
        # Each token's own bytes (a byte-level token may hold half a Chinese character) sum to the text's.
        assert sizes[tokens[start:end]].sum() == len(expected.encode("utf-8"))
    assert cache.split_range("test")[1] == len(tokens)


def test_a_cache_of_an_older_format_is_never_read(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr("gptlab.data.cache.CACHE_FORMAT", 2)
    old = build_token_cache(corpus, CharTokenizer(), tmp_path / "cache", split=(0.1, 0.0))
    monkeypatch.undo()
    new = build_token_cache(corpus, CharTokenizer(), tmp_path / "cache", split=(0.1, 0.0))
    assert new.directory != old.directory
    assert build_token_cache(corpus, CharTokenizer(), tmp_path / "cache", split=(0.2, 0.0)).directory not in (
        old.directory,
        new.directory,
    )  # the split is part of the key too


def test_training_batches_are_random_but_seeded(corpus, tmp_path):
    dm = make_datamodule(corpus, tmp_path)
    dm.setup("fit")
    batches = [x for x, _ in dm.train_dataloader()]
    assert len(batches) == 5 and batches[0].shape == (4, 16)
    assert not torch.equal(batches[0], batches[1])
    dm2 = make_datamodule(corpus, tmp_path)
    dm2.setup("fit")
    assert all(
        torch.equal(a, b) for a, b in zip(batches, [x for x, _ in dm2.train_dataloader()], strict=True)
    )


def test_max_eval_windows_spreads_windows_over_the_split(corpus, tmp_path):
    dm = make_datamodule(corpus, tmp_path, max_eval_windows=5)
    dm.setup("fit")
    val = dm.datasets["val"]
    every = make_datamodule(corpus, tmp_path)
    every.setup("fit")
    all_windows = len(every.datasets["val"])
    assert 3 <= len(val) <= 5 < all_windows  # at most max_eval_windows
    assert val.stride == 16 * -(-all_windows // 5)  # evenly spread over the split, not its beginning


def test_cache_is_reused_and_rebuilt_when_the_corpus_changes(corpus, tmp_path):
    cache_dir = tmp_path / "cache"
    first = build_token_cache(corpus, CharTokenizer(), cache_dir)
    stamp = (first.tokens_path).stat().st_mtime_ns
    again = build_token_cache(corpus, CharTokenizer(), cache_dir)
    assert again.directory == first.directory
    assert again.tokens_path.stat().st_mtime_ns == stamp  # not rewritten

    corpus.write_text(
        corpus.read_text(encoding="utf-8") + "A new line with a new letter: Z!\n", encoding="utf-8"
    )
    os.utime(corpus, ns=(stamp + 10**9, stamp + 10**9))
    changed = build_token_cache(corpus, CharTokenizer(), cache_dir)
    assert changed.directory != first.directory
    assert changed.meta["num_tokens"] == first.meta["num_tokens"] + len("A new line with a new letter: Z!\n")
    assert "Z" in changed.tokenizer().chars


def test_the_token_cache_is_reported_once_per_corpus(corpus, tmp_path, monkeypatch):
    reported: list[str] = []
    monkeypatch.setattr("gptlab.data.datamodules.rank_zero_info", reported.append)
    dm = make_datamodule(corpus, tmp_path)  # prepare_data, as train() does
    dm.prepare_data()  # and again, as Lightning does for fit and for test
    dm.prepare_data()
    assert len(reported) == 1 and reported[0].startswith("token cache: ")
    corpus.write_text(corpus.read_text(encoding="utf-8") + "more\n", encoding="utf-8")
    dm.prepare_data()  # a changed corpus is a new cache, reported too
    assert len(reported) == 2 and reported[1] != reported[0]


def test_cache_stores_uint16_tokens_that_decode_to_the_corpus(corpus, tmp_path):
    cache = build_token_cache(corpus, CharTokenizer(), tmp_path / "cache")
    tokens = cache.tokens()
    assert tokens.dtype == np.uint16
    assert cache.tokenizer().decode(tokens.tolist()) == corpus.read_text(encoding="utf-8")


def test_an_unfinished_cache_entry_is_not_trusted(corpus, tmp_path):
    cache_dir = tmp_path / "cache"
    entry = build_token_cache(corpus, CharTokenizer(), cache_dir)
    (entry.directory / "meta.json").unlink()  # as if killed before the entry was complete
    (entry.directory / "tokens.bin").write_bytes(b"garbage")
    rebuilt = build_token_cache(corpus, CharTokenizer(), cache_dir)
    assert rebuilt.directory == entry.directory
    assert rebuilt.tokenizer().decode(rebuilt.tokens().tolist()) == corpus.read_text(encoding="utf-8")


def test_missing_corpus_is_named_with_the_fix(tmp_path):
    dm = PretrainDataModule(
        path=str(tmp_path / "nope.txt"), tokenizer=CharTokenizer(), block_size=8, cache_dir=tmp_path
    )
    with pytest.raises(FileNotFoundError, match=r"corpus path '.*nope.txt' does not exist; point data.path"):
        dm.prepare_data()


def test_empty_corpus_is_rejected(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(CorpusError, match="is empty"):
        build_token_cache(empty, CharTokenizer(), tmp_path / "cache")
    assert not any((tmp_path / "cache").glob("*/meta.json"))


def test_corpus_shorter_than_one_block_is_explained(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("To be, or not to be, that is the question." * 2, encoding="utf-8")
    dm = PretrainDataModule(path=str(short), tokenizer=CharTokenizer(), block_size=64, cache_dir=tmp_path)
    dm.prepare_data()
    with pytest.raises(ValueError, match=r"has 84 tokens, too short for block_size=64"):
        dm.setup("fit")


def test_eval_batch_size_sizes_validation_batches_only(corpus, tmp_path):
    dm = make_datamodule(corpus, tmp_path, eval_batch_size=7)
    dm.setup("fit")
    inputs = [x for x, _ in dm.val_dataloader()]
    assert [len(x) for x in inputs[:-1]] == [7] * (len(inputs) - 1)
    assert sum(len(x) for x in inputs) == len(dm.datasets["val"])  # every window, once
    assert next(iter(dm.train_dataloader()))[0].shape == (4, 16)  # training keeps data.batch_size
    with pytest.raises(ValueError, match=r"data.eval_batch_size=0: .*e.g. data.eval_batch_size=64"):
        make_datamodule(corpus, tmp_path, eval_batch_size=0)
