"""Fit a tokenizer on a corpus and encode it chunk by chunk into ``tokens.bin``, in a process pool
for tokenizers written in Python."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from gptlab.data.documents import (
    CHUNK_CHARS,
    SPLITS,
    CorpusReader,
    CorpusStats,
    Piece,
    split_chunks,
    split_offsets,
)
from gptlab.tokenization import Tokenizer, UnknownCharactersError

# A pool costs its start-up and pays only on a large corpus with a core free (figures in
# benchmarks/MEASUREMENTS.md); below this much text one process is used.
MIN_BYTES_FOR_POOL = 32 * CHUNK_CHARS


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32)


def prepare_tokens(
    read: CorpusReader,
    tokenizer: Tokenizer,
    staging: Path,
    num_proc: int | None,
    fit_sample_mb: float | None,
    split: tuple[float, float] = (0.0, 0.0),
) -> dict:
    """Fit ``tokenizer`` if it needs to, then write the corpus's tokens to ``staging/tokens.bin``: the
    train split, then val, then test, cut at byte offsets of the text by ``split`` = (val_fraction,
    test_fraction) before tokenizing (:func:`gptlab.data.documents.split_chunks`). Returns the entry's
    metadata, with each split's token range."""
    start, start_cpu = time.perf_counter(), time.process_time()
    sample = tokenizer.needs_fit and fit_sample_mb is not None
    text_bytes = 0
    if any(split) or sample:
        # A counting pass: the split's cut and the sample's stride need the size of the text after
        # preprocessing (a gzipped file's size on disk is about half its text's).
        text_bytes = sum(_utf8_bytes(chunk) for chunk in read(CorpusStats()))
    cuts = split_offsets(text_bytes, *split) if any(split) else []
    fit_seconds = fit_cpu = 0.0
    if tokenizer.needs_fit:
        fit_start, fit_start_cpu = time.perf_counter(), time.process_time()
        # Fit a copy: the caller's tokenizer stays as requested, so it keeps finding this entry.
        tokenizer = Tokenizer.from_json(tokenizer.to_json())
        chunks = read(CorpusStats())
        if sample:
            every = max(1, round(text_bytes / (fit_sample_mb * 1e6)))
            chunks = _sample(chunks, every, int(fit_sample_mb * 1e6))
        _fit(tokenizer, (text for chunk in chunks for _, text in chunk))
        fit_seconds, fit_cpu = time.perf_counter() - fit_start, time.process_time() - fit_start_cpu

    stats = CorpusStats()
    dtype = token_dtype(tokenizer.vocab_size)
    split_of_chunk: deque[int] = deque()

    def chunks() -> Iterator[list[Piece]]:
        for index, chunk in split_chunks(read(stats), cuts):
            split_of_chunk.append(index)
            yield chunk

    counts = [0] * (len(cuts) + 1)
    try:
        with open(staging / "tokens.bin", "wb") as out:
            for tokens in _encode_chunks(tokenizer, chunks(), dtype, num_proc, read.total_bytes):
                tokens.tofile(out)
                counts[split_of_chunk.popleft()] += len(tokens)
    except UnknownCharactersError as err:
        if fit_seconds and fit_sample_mb is not None:
            raise UnknownCharactersError(
                f"{err} The vocabulary was learnt from a {fit_sample_mb} MB sample: set "
                "data.fit_sample_mb=null to learn it from the whole corpus."
            ) from None
        raise
    (staging / "tokenizer.json").write_text(tokenizer.to_json(), encoding="utf-8")
    ends = np.cumsum(counts).tolist()
    splits = zip(SPLITS[: len(counts)], counts, ends, strict=True)
    return {
        "dtype": dtype.name,
        "num_tokens": ends[-1],
        # [start, end) token range of each split
        "splits": {name: [end - count, end] for name, count, end in splits},
        "files": [str(f) for f in read.files],
        "tokenizer": tokenizer.spec(),
        "vocab_size": tokenizer.vocab_size,
        "documents": stats.documents,
        "dropped_documents": stats.empty + stats.too_short,
        "chars": stats.chars,
        # Wall time, and CPU time over all threads of this process (pool workers not included).
        "fit_seconds": round(fit_seconds, 3),
        "encode_seconds": round(time.perf_counter() - start - fit_seconds, 3),
        "fit_cpu_seconds": round(fit_cpu, 3),
        "encode_cpu_seconds": round(time.process_time() - start_cpu - fit_cpu, 3),
    }


def _utf8_bytes(chunk: list[Piece]) -> int:
    return sum(len(text.encode("utf-8", "surrogatepass")) for _, text in chunk)


def _sample(chunks: Iterator[list[Piece]], every: int, max_bytes: int) -> Iterator[list[Piece]]:
    """Every ``every``-th chunk, up to ``max_bytes`` bytes of UTF-8 text (the corpus is still read to its
    end, so reading errors surface here rather than later)."""
    taken = 0
    for index, chunk in enumerate(chunks):
        if index % every == 0 and taken < max_bytes:
            taken += _utf8_bytes(chunk)
            yield chunk


def _fit(tokenizer: Tokenizer, texts: Iterator[str]) -> None:
    """``tokenizer.fit(texts)``, re-raising a reading error as itself even when the fit runs in native
    code that would wrap it or take it for the end of the corpus."""
    failure: Exception | None = None

    def guarded() -> Iterator[str]:
        nonlocal failure
        try:
            yield from texts
        except Exception as err:
            failure = err
            raise

    try:
        tokenizer.fit(guarded())
    except Exception:
        if failure is not None:
            raise failure from None
        raise
    if failure is not None:
        raise failure


def _encode_chunk(tokenizer: Tokenizer, chunk: list[Piece], dtype: np.dtype) -> np.ndarray:
    encoded = tokenizer.encode_batch([text for _, text in chunk])
    eot = tokenizer.eot_id
    tokens = np.empty(sum(map(len, encoded)) + sum(separate for separate, _ in chunk), dtype=dtype)
    position = 0
    for (separate, _), ids in zip(chunk, encoded, strict=True):
        if separate:
            tokens[position] = eot
            position += 1
        tokens[position : position + len(ids)] = ids
        position += len(ids)
    return tokens


def _has_native_batch(tokenizer: Tokenizer) -> bool:
    return type(tokenizer).encode_batch is not Tokenizer.encode_batch


def _encode_chunks(
    tokenizer: Tokenizer,
    chunks: Iterator[list[Piece]],
    dtype: np.dtype,
    num_proc: int | None,
    total_bytes: int,
) -> Iterator[np.ndarray]:
    """Token arrays for the chunks, in order. A tokenizer with a native ``encode_batch`` (Hugging Face,
    Rust) encodes each chunk's pieces on all cores by itself; a Python one gets a process pool."""
    workers = num_proc or os.cpu_count() or 1
    if _has_native_batch(tokenizer) or workers < 2 or total_bytes < MIN_BYTES_FOR_POOL:
        for chunk in chunks:
            yield _encode_chunk(tokenizer, chunk, dtype)
    else:
        yield from _encode_in_pool(tokenizer, chunks, dtype, workers)


_worker_tokenizer: Tokenizer | None = None


def _start_worker(tokenizer_json: str) -> None:
    global _worker_tokenizer
    _worker_tokenizer = Tokenizer.from_json(tokenizer_json)


def _encode_in_worker(chunk: list[Piece], dtype: str) -> np.ndarray:
    return _encode_chunk(_worker_tokenizer, chunk, np.dtype(dtype))


def _encode_in_pool(
    tokenizer: Tokenizer, chunks: Iterator[list[Piece]], dtype: np.dtype, workers: int
) -> Iterator[np.ndarray]:
    # Pool.imap would read the whole corpus ahead into its task queue; keep at most 2 chunks per
    # worker in flight so memory stays flat. "spawn": the parent may hold threads (torch, Rust) that
    # make fork unsafe.
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_start_worker, initargs=(tokenizer.to_json(),)) as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append(pool.apply_async(_encode_in_worker, (chunk, dtype.name)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
