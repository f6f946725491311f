"""Read a corpus, tokenize it once and keep the tokens in a memory-mapped cache.

A corpus is one or more files (a file, a directory, a glob or a list of them): in a ``.txt`` file the
whole file is one document; in ``.jsonl`` / ``.csv`` / ``.tsv`` each record's text field is one; any of
them may be gzipped. Documents are separated by the tokenizer's end-of-text token, so training windows
span document boundaries as in GPT-2's pretraining.

Preparation streams: documents are read line by line, cut into pieces of about ``PIECE_CHARS``
characters, grouped into chunks of about ``CHUNK_CHARS``, encoded chunk by chunk (in parallel) and
appended to ``tokens.bin``, so memory does not grow with the corpus. The tokenizer's fit (when it learns
a vocabulary) streams over the same pieces.

The cache lives in ``<cache_dir>/<key>/`` where the key fingerprints the corpus files (path, size,
mtime), the tokenizer, the reader options and the preprocessing: a changed input gets a new key, an
unchanged one reuses the tokens. Each entry is written under a temporary name and renamed when complete,
under a per-key file lock, so a preparation killed half-way never leaves an entry that a later run
trusts, and the next run removes its leftovers and prepares again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import tempfile
import time
import unicodedata
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from gptlab.data.readers import PathSpec, expand_paths, file_format, iter_lines, iter_records
from gptlab.tokenization import Tokenizer, UnknownCharactersError

try:  # POSIX only; elsewhere concurrent preparations of one entry are not serialised
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

CACHE_FORMAT = 2
PIECE_CHARS = 1 << 16  # a document is encoded in pieces of about this many characters ...
CHUNK_CHARS = 1 << 20  # ... and pieces are encoded in chunks of about this many (one task per chunk)
# Measured on 2 cores (20 MB): the char tokenizer encodes ~10 MB/s in one process; a pool of 2 needs
# ~0.5 s to start and moves the work off the main process, which pays only when a core is free and the
# corpus is large. Below this much text one process is used.
MIN_BYTES_FOR_POOL = 32 * CHUNK_CHARS
ENCODING_ERRORS = ("strict", "replace")

# (put an end-of-text token before it, text): the unit handed to the tokenizer.
Piece = tuple[bool, str]


class CorpusError(ValueError):
    """The corpus cannot be used: empty, or nothing left after preprocessing."""


_SPACE_RUN = re.compile(r"[ \t]+")


@dataclass(frozen=True)
class Preprocessing:
    """Clean-up applied to each document before tokenization (all off by default).

    ``nfkc``: Unicode NFKC normalisation (full-width forms, ligatures, no-break spaces become plain
    characters). ``clean_whitespace``: runs of spaces and tabs become one space, trailing spaces go,
    ``\\r\\n`` becomes ``\\n`` and 3 or more newlines in a row become 2. ``lowercase``: lowercase
    everything. ``min_chars``: drop documents shorter than this many characters (after the clean-up).
    Empty documents are always dropped.
    """

    nfkc: bool = False
    clean_whitespace: bool = False
    lowercase: bool = False
    min_chars: int = 0

    def __post_init__(self) -> None:
        if self.min_chars < 0:
            raise ValueError(f"preprocessing.min_chars must be >= 0, got {self.min_chars}")

    @classmethod
    def from_any(cls, value: Preprocessing | Mapping | None) -> Preprocessing:
        """Accept an instance, a mapping of its fields (a Hydra config node) or None (all off)."""
        if value is None:
            return cls()
        if isinstance(value, Preprocessing):
            return value
        return cls(**{k: v for k, v in dict(value).items() if k != "_target_"})

    def lines(self, lines: Iterable[str]) -> Iterator[str]:
        """Apply the clean-up to one document given as lines (each with its ``\\n``, if any)."""
        if not (self.nfkc or self.clean_whitespace or self.lowercase):
            yield from lines
            return
        newlines_in_a_row = 0
        for line in lines:
            if self.nfkc:
                line = unicodedata.normalize("NFKC", line)
            if self.lowercase:
                line = line.lower()
            if self.clean_whitespace:
                ends_line = line.endswith("\n")
                body = _SPACE_RUN.sub(" ", line.rstrip("\r\n")).rstrip(" ")
                if body:
                    newlines_in_a_row = 1 if ends_line else 0
                elif ends_line:
                    newlines_in_a_row += 1
                    if newlines_in_a_row > 2:
                        continue
                line = body + "\n" if ends_line else body
            yield line

    def text(self, text: str) -> str:
        """Apply the clean-up to a whole document."""
        return "".join(self.lines(split_lines(text)))


def split_lines(text: str) -> Iterator[str]:
    """Lines of ``text`` with their ``\\n`` kept (only ``\\n`` ends a line, as when reading a file)."""
    start = 0
    while (end := text.find("\n", start)) != -1:
        yield text[start : end + 1]
        start = end + 1
    if start < len(text):
        yield text[start:]


def iter_documents(
    files: Iterable[Path], text_field: str = "text", encoding_errors: str = "strict"
) -> Iterator[Iterator[str]]:
    """Yield each document as an iterator over its lines; consume one before asking for the next.

    A ``.txt`` file is one document, read line by line; each jsonl/csv/tsv record's ``text_field`` is
    one (a null or missing value is an empty document).
    """
    for file in files:
        if file_format(file) == "txt":
            yield (line for _, line in iter_lines(file, encoding_errors))
        else:
            for _, record in iter_records(file, [text_field], encoding_errors):
                yield split_lines(record[text_field] or "")


def _safe_cut(previous_line: str, line: str) -> bool:
    """Whether the text may be cut between these two lines without changing its tokens.

    Character and byte tokenizers give the same ids wherever the text is cut. GPT-2-style byte-level
    BPE pre-tokenizes with a regex whose whitespace rules look ahead: cutting inside a run of whitespace
    (``"  \\n"`` then ``"  word"``) can split a pre-token in two and change a token or two. A lone
    ``\\n`` between two non-space characters is always a pre-token of its own, so a cut there gives the
    same ids as the uncut text.
    """
    return (
        len(previous_line) >= 2
        and previous_line[-1] == "\n"
        and not previous_line[-2].isspace()
        and not line[:1].isspace()
    )


def _document_pieces(lines: Iterable[str], piece_chars: int) -> Iterator[str]:
    """Cut a document into pieces of at least ``piece_chars`` characters at line boundaries, at a safe
    cut (see :func:`_safe_cut`) unless none came within 4x ``piece_chars`` (e.g. a CRLF file)."""
    buffer: list[str] = []
    size = 0
    previous = ""
    for line in lines:
        if size >= piece_chars and (size >= 4 * piece_chars or _safe_cut(previous, line)):
            yield "".join(buffer)
            buffer, size = [], 0
        buffer.append(line)
        size += len(line)
        previous = line
    if buffer:
        yield "".join(buffer)


@dataclass
class CorpusStats:
    """What reading the corpus found; filled in while its chunks are consumed."""

    documents: int = 0
    empty: int = 0
    too_short: int = 0
    chars: int = 0


def _long_enough(lines: Iterator[str], min_chars: int, stats: CorpusStats) -> Iterator[str] | None:
    """The document's lines if it holds at least ``max(min_chars, 1)`` characters, else None.

    Only the first ``min_chars`` characters are buffered, so a long document still streams.
    """
    head: list[str] = []
    size = 0
    for line in lines:
        head.append(line)
        size += len(line)
        if size >= max(min_chars, 1):
            return chain(head, lines)
    if size == 0:
        stats.empty += 1
    else:
        stats.too_short += 1
    return None


def iter_chunks(
    files: list[Path],
    *,
    text_field: str = "text",
    encoding_errors: str = "strict",
    preprocessing: Preprocessing | None = None,
    chunk_chars: int = CHUNK_CHARS,
    piece_chars: int = PIECE_CHARS,
    stats: CorpusStats | None = None,
    source: str = "",
) -> Iterator[list[Piece]]:
    """Yield the corpus as chunks of pieces of about ``chunk_chars`` characters.

    Raises :class:`CorpusError` at the end when no document was kept, saying why.
    """
    preprocessing = preprocessing or Preprocessing()
    stats = stats if stats is not None else CorpusStats()
    chunk: list[Piece] = []
    size = 0
    for raw_lines in iter_documents(files, text_field, encoding_errors):
        lines = _long_enough(preprocessing.lines(raw_lines), preprocessing.min_chars, stats)
        if lines is None:
            continue
        separate = stats.documents > 0  # an end-of-text token between documents, not before the first
        stats.documents += 1
        for piece in _document_pieces(lines, piece_chars):
            chunk.append((separate, piece))
            separate = False
            size += len(piece)
            stats.chars += len(piece)
            if size >= chunk_chars:
                yield chunk
                chunk, size = [], 0
    if chunk:
        yield chunk
    if stats.documents == 0:
        where = source or ", ".join(str(f) for f in files)
        if stats.too_short:
            raise CorpusError(
                f"all {stats.too_short} non-empty documents of corpus '{where}' are shorter than "
                f"data.preprocessing.min_chars={preprocessing.min_chars} characters, so preprocessing "
                "dropped them all; lower min_chars"
            )
        raise CorpusError(f"corpus '{where}' is empty; it must hold some text to train on")


def tokenizer_identity(tokenizer: Tokenizer) -> dict:
    """What the cache key knows of a tokenizer: its spec, and once it has a vocabulary (learnt or fixed)
    a hash of its whole state, so a tokenizer fitted elsewhere (a checkpoint's) never gets the ids of
    another vocabulary with the same spec."""
    if tokenizer.needs_fit:
        return tokenizer.spec()
    return {**tokenizer.spec(), "state": hashlib.sha256(tokenizer.to_json().encode()).hexdigest()[:20]}


def corpus_fingerprint(files: list[Path], tokenizer: Tokenizer, options: Mapping | None = None) -> str:
    """The cache key: the files' identity (path, size, mtime), the tokenizer and the options."""
    stats = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    identity = tokenizer_identity(tokenizer)
    blob = json.dumps(
        {"format": CACHE_FORMAT, "files": stats, "tokenizer": identity, "options": options or {}},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32)


@dataclass(frozen=True)
class TokenCache:
    """A finished cache entry: the tokens file, its dtype and length, and the fitted tokenizer."""

    directory: Path

    @property
    def complete(self) -> bool:
        return (self.directory / "meta.json").exists()

    @property
    def meta(self) -> dict:
        return json.loads((self.directory / "meta.json").read_text())

    @property
    def tokens_path(self) -> Path:
        return self.directory / "tokens.bin"

    def tokens(self) -> np.memmap:
        meta = self.meta
        return np.memmap(self.tokens_path, dtype=meta["dtype"], mode="r", shape=(meta["num_tokens"],))

    def tokenizer(self) -> Tokenizer:
        return Tokenizer.from_json((self.directory / "tokenizer.json").read_text(encoding="utf-8"))


def _options(
    text_field: str,
    encoding_errors: str,
    preprocessing: Preprocessing,
    fit_sample_mb: float | None,
) -> dict:
    if encoding_errors not in ENCODING_ERRORS:
        raise ValueError(f"data.encoding_errors must be one of {ENCODING_ERRORS}, got {encoding_errors!r}")
    if fit_sample_mb is not None and fit_sample_mb <= 0:
        raise ValueError(f"data.fit_sample_mb must be positive or null (whole corpus), got {fit_sample_mb}")
    return {
        "text_field": text_field,
        "encoding_errors": encoding_errors,
        "preprocessing": asdict(preprocessing),
        "fit_sample_mb": fit_sample_mb,
    }


def find_token_cache(
    path: PathSpec,
    tokenizer: Tokenizer,
    cache_dir: str | os.PathLike,
    *,
    text_field: str = "text",
    encoding_errors: str = "strict",
    preprocessing: Preprocessing | Mapping | None = None,
    fit_sample_mb: float | None = None,
) -> TokenCache:
    """The cache entry for these inputs, complete or not (see ``TokenCache.complete``); builds nothing."""
    options = _options(text_field, encoding_errors, Preprocessing.from_any(preprocessing), fit_sample_mb)
    return _entry(expand_paths(path), tokenizer, cache_dir, options)


def _entry(
    files: list[Path], tokenizer: Tokenizer, cache_dir: str | os.PathLike, options: dict
) -> TokenCache:
    return TokenCache(Path(cache_dir) / corpus_fingerprint(files, tokenizer, options))


def build_token_cache(
    path: PathSpec,
    tokenizer: Tokenizer,
    cache_dir: str | os.PathLike,
    *,
    text_field: str = "text",
    encoding_errors: str = "strict",
    preprocessing: Preprocessing | Mapping | None = None,
    num_proc: int | None = None,
    fit_sample_mb: float | None = None,
    chunk_chars: int = CHUNK_CHARS,
    piece_chars: int = PIECE_CHARS,
) -> TokenCache:
    """Tokenize the corpus at ``path`` into ``cache_dir`` unless an entry for it already exists.

    A tokenizer that still needs fitting is not changed: the entry holds the fitted copy
    (``TokenCache.tokenizer()``).

    ``path``: a file, directory (recursive), glob, or a list of them. ``text_field``: the JSON field or
    CSV/TSV column holding the text. ``encoding_errors``: ``strict`` fails on invalid UTF-8 (naming
    file and byte offset), ``replace`` substitutes U+FFFD. ``num_proc``: worker processes for
    tokenizers encoded in Python (default: all cores); tokenizers with a native ``encode_batch`` are
    already parallel. ``fit_sample_mb``: a tokenizer that learns its vocabulary (BPE, char) learns it
    from about this many MB spread evenly over the corpus (every k-th chunk) instead of all of it, which
    bounds BPE training's time and memory; None uses the whole corpus. ``chunk_chars`` and
    ``piece_chars`` set the streaming granularity and do not change the tokens.
    """
    preprocessing = Preprocessing.from_any(preprocessing)
    files = expand_paths(path)
    options = _options(text_field, encoding_errors, preprocessing, fit_sample_mb)
    entry = _entry(files, tokenizer, cache_dir, options)
    if entry.complete:
        return entry
    cache_root = entry.directory.parent
    cache_root.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(cache_root / f".{entry.directory.name}.lock"):
        if entry.complete:  # another process prepared it while this one waited
            return entry
        # Holding the lock, anything left under this key is from a preparation that died: redo it.
        for leftover in cache_root.glob(f".{entry.directory.name}.tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        shutil.rmtree(entry.directory, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{entry.directory.name}.tmp-", dir=cache_root))
        try:
            read = _Reader(files, text_field, encoding_errors, preprocessing, chunk_chars, piece_chars, path)
            meta = _prepare(read, tokenizer, staging, num_proc, fit_sample_mb)
            # meta.json last: its presence marks the entry complete.
            (staging / "meta.json").write_text(json.dumps(meta, indent=2))
            os.rename(staging, entry.directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return entry


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path``; the OS releases it if the process dies."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class _Reader:
    """Reads the corpus from the start each time it is called (once to fit, once to encode)."""

    files: list[Path]
    text_field: str
    encoding_errors: str
    preprocessing: Preprocessing
    chunk_chars: int
    piece_chars: int
    source: PathSpec

    def __call__(self, stats: CorpusStats) -> Iterator[list[Piece]]:
        return iter_chunks(
            self.files,
            text_field=self.text_field,
            encoding_errors=self.encoding_errors,
            preprocessing=self.preprocessing,
            chunk_chars=self.chunk_chars,
            piece_chars=self.piece_chars,
            stats=stats,
            source=str(self.source),
        )

    @property
    def total_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)


def _prepare(
    read: _Reader, tokenizer: Tokenizer, staging: Path, num_proc: int | None, fit_sample_mb: float | None
) -> dict:
    fit_seconds = fit_cpu = 0.0
    if tokenizer.needs_fit:
        start, start_cpu = time.perf_counter(), time.process_time()
        # Fit a copy: the caller's tokenizer stays as requested, so it keeps finding this entry.
        tokenizer = Tokenizer.from_json(tokenizer.to_json())
        chunks = read(CorpusStats())
        if fit_sample_mb is not None:
            every = max(1, round(read.total_bytes / (fit_sample_mb * 1e6)))
            chunks = _sample(chunks, every, int(fit_sample_mb * 1e6))
        _fit(tokenizer, (text for chunk in chunks for _, text in chunk))
        fit_seconds, fit_cpu = time.perf_counter() - start, time.process_time() - start_cpu

    start, start_cpu = time.perf_counter(), time.process_time()
    stats = CorpusStats()
    dtype = token_dtype(tokenizer.vocab_size)
    num_tokens = 0
    try:
        with open(staging / "tokens.bin", "wb") as out:
            for tokens in _encode_chunks(tokenizer, read(stats), dtype, num_proc, read.total_bytes):
                tokens.tofile(out)
                num_tokens += len(tokens)
    except UnknownCharactersError as err:
        if fit_seconds and fit_sample_mb is not None:
            raise UnknownCharactersError(
                f"{err} The vocabulary was learnt from a {fit_sample_mb} MB sample: set "
                "data.fit_sample_mb=null to learn it from the whole corpus."
            ) from None
        raise
    (staging / "tokenizer.json").write_text(tokenizer.to_json(), encoding="utf-8")
    return {
        "dtype": dtype.name,
        "num_tokens": num_tokens,
        "files": [str(f) for f in read.files],
        "tokenizer": tokenizer.spec(),
        "vocab_size": tokenizer.vocab_size,
        "documents": stats.documents,
        "dropped_documents": stats.empty + stats.too_short,
        "chars": stats.chars,
        # Wall time, and CPU time over all threads of this process (pool workers not included).
        "fit_seconds": round(fit_seconds, 3),
        "encode_seconds": round(time.perf_counter() - start, 3),
        "fit_cpu_seconds": round(fit_cpu, 3),
        "encode_cpu_seconds": round(time.process_time() - start_cpu, 3),
    }


def _sample(chunks: Iterator[list[Piece]], every: int, max_chars: int) -> Iterator[list[Piece]]:
    """Every ``every``-th chunk, up to ``max_chars`` characters (the corpus is still read to its end,
    so reading errors surface here rather than later)."""
    taken = 0
    for index, chunk in enumerate(chunks):
        if index % every == 0 and taken < max_chars:
            taken += sum(len(text) for _, text in chunk)
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
