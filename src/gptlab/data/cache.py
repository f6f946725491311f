"""The token cache: a corpus tokenized once and kept memory-mapped in ``<cache_dir>/<key>/``.

The key fingerprints the corpus files (path, size, mtime), the tokenizer, the reader options and the
preprocessing: a changed input gets a new key, an unchanged one reuses the tokens. Each entry is written
under a temporary name and renamed when complete, under a per-key file lock, so a preparation killed
half-way never leaves an entry that a later run trusts, and the next run removes its leftovers and
prepares again. The tokenizer's fit and the encoding are in :mod:`gptlab.data.encoding`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gptlab.data.documents import CHUNK_CHARS, ENCODING_ERRORS, PIECE_CHARS, CorpusReader, Preprocessing
from gptlab.data.encoding import prepare_tokens
from gptlab.data.readers import PathSpec, expand_paths
from gptlab.run.files import check_writable_dir, umask
from gptlab.tokenization import Tokenizer

try:  # POSIX only; elsewhere concurrent preparations of one entry are not serialised
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

# 3: the splits are cut in the text before tokenizing and their token ranges kept in meta.json.
CACHE_FORMAT = 3


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


@dataclass(frozen=True)
class TokenCache:
    """A finished cache entry: the tokens file, its dtype and length, and the fitted tokenizer."""

    directory: Path

    @property
    def complete(self) -> bool:
        return (self.directory / "meta.json").exists()

    @property
    def meta(self) -> dict:
        with self._damage_named():
            return json.loads((self.directory / "meta.json").read_text())

    @property
    def tokens_path(self) -> Path:
        return self.directory / "tokens.bin"

    def tokens(self) -> np.memmap:
        meta = self.meta
        with self._damage_named():
            expected = meta["num_tokens"] * np.dtype(meta["dtype"]).itemsize
            if self.tokens_path.stat().st_size != expected:
                raise ValueError(
                    f"tokens.bin has {self.tokens_path.stat().st_size:,} bytes, not {expected:,}"
                )
            return np.memmap(self.tokens_path, dtype=meta["dtype"], mode="r", shape=(meta["num_tokens"],))

    def split_range(self, name: str) -> tuple[int, int]:
        """The [start, end) token range of split ``name`` (train, val or test; empty when absent)."""
        start, end = self.meta["splits"].get(name, (0, 0))
        return start, end

    def tokenizer(self) -> Tokenizer:
        with self._damage_named():
            return Tokenizer.from_json((self.directory / "tokenizer.json").read_text(encoding="utf-8"))

    @contextlib.contextmanager
    def _damage_named(self) -> Iterator[None]:
        """A complete entry that cannot be read was damaged after it was written (a disk error, a
        partial copy or sync of the cache): say which directory to delete."""
        try:
            yield
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CorruptCacheError(
                f"token cache entry '{self.directory}' is damaged ({type(err).__name__}: {err}); delete it "
                f"(rm -r '{self.directory}') and the next run tokenizes the corpus again"
            ) from None


class CorruptCacheError(RuntimeError):
    """A finished token cache entry can no longer be read."""


def _options(
    text_field: str,
    encoding_errors: str,
    preprocessing: Preprocessing,
    fit_sample_mb: float | None,
    split: tuple[float, float],
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
        "split": list(split),
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
    split: tuple[float, float] = (0.0, 0.0),
) -> TokenCache:
    """The cache entry for these inputs, complete or not (see ``TokenCache.complete``); builds nothing."""
    options = _options(
        text_field, encoding_errors, Preprocessing.from_any(preprocessing), fit_sample_mb, split
    )
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
    split: tuple[float, float] = (0.0, 0.0),
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
    ``piece_chars`` set the streaming granularity and do not change the tokens. ``split``: the
    (val_fraction, test_fraction) of the text's UTF-8 bytes, cut before tokenizing so that every
    tokenizer holds out the same text (``TokenCache.split_range``).
    """
    preprocessing = Preprocessing.from_any(preprocessing)
    files = expand_paths(path)
    options = _options(text_field, encoding_errors, preprocessing, fit_sample_mb, split)
    entry = _entry(files, tokenizer, cache_dir, options)
    if entry.complete:
        return entry
    cache_root = entry.directory.parent
    check_writable_dir(cache_root, "paths.cache_dir")
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
            # mkdtemp makes the directory private (0700); the entry gets what mkdir would have given it
            os.chmod(staging, 0o777 & ~umask())
            read = CorpusReader(
                files, text_field, encoding_errors, preprocessing, chunk_chars, piece_chars, path
            )
            meta = prepare_tokens(read, tokenizer, staging, num_proc, fit_sample_mb, tuple(split))
            # meta.json last: its presence marks the entry complete.
            (staging / "meta.json").write_text(json.dumps(meta, indent=2))
            os.rename(staging, entry.directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return entry


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path``; the OS releases it if the process dies. The holder deletes
    the file when done, so locks do not pile up; a waiter that then gets the lock of a deleted file
    (another process may already lock a new one) starts over."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    while True:
        handle = open(lock_path, "a")  # noqa: SIM115 - closed below, after the lock is released
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            if os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()  # releases the lock of the deleted file
    try:
        yield
    finally:
        lock_path.unlink(missing_ok=True)  # while still locked: no one else can hold this path's lock
        handle.close()
