"""Read a corpus, tokenize it once and keep the tokens in a memory-mapped cache.

The cache lives in ``<cache_dir>/<key>/`` where the key fingerprints the corpus files (path, size,
mtime), the tokenizer spec and the format version: a changed input gets a new key, an unchanged one
reuses the tokens. Each entry is written under a temporary name and renamed when complete, so a
preparation killed half-way never leaves an entry that a later run trusts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptlab.data.tokenizers import Tokenizer

CACHE_FORMAT = 1


class CorpusError(ValueError):
    """The corpus cannot be used: missing, empty or too short."""


def resolve_corpus_files(path: str | os.PathLike) -> list[Path]:
    """The files a corpus path names: one file for now (directories and globs come with the readers)."""
    file = Path(path).expanduser()
    if not file.exists():
        raise FileNotFoundError(
            f"corpus path '{file}' does not exist; point data.path at a text file "
            "(e.g. data.path=data/shakespeare.txt)"
        )
    if not file.is_file():
        raise CorpusError(f"corpus path '{file}' is not a file")
    return [file.resolve()]


def iter_documents(files: list[Path]) -> Iterator[str]:
    """Yield each file's text as one document."""
    for file in files:
        yield file.read_text(encoding="utf-8")


def corpus_fingerprint(files: list[Path], tokenizer: Tokenizer) -> str:
    stats = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    blob = json.dumps({"format": CACHE_FORMAT, "files": stats, "tokenizer": tokenizer.spec()})
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32)


@dataclass(frozen=True)
class TokenCache:
    """A finished cache entry: the tokens file, its dtype and length, and the fitted tokenizer."""

    directory: Path

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


def build_token_cache(
    path: str | os.PathLike, tokenizer: Tokenizer, cache_dir: str | os.PathLike
) -> TokenCache:
    """Tokenize the corpus at ``path`` into ``cache_dir`` unless an entry for it already exists."""
    files = resolve_corpus_files(path)
    cache_root = Path(cache_dir)
    entry = TokenCache(cache_root / corpus_fingerprint(files, tokenizer))
    if (entry.directory / "meta.json").exists():
        return entry

    if all(f.stat().st_size == 0 for f in files):
        raise CorpusError(f"corpus '{path}' is empty; it must hold some text to train on")
    if tokenizer.needs_fit:
        tokenizer.fit(iter_documents(files))
    ids: list[int] = []
    for i, document in enumerate(iter_documents(files)):
        if i:
            ids.append(tokenizer.eot_id)
        ids.extend(tokenizer.encode(document))
    if not ids:
        raise CorpusError(f"corpus '{path}' is empty; it must hold some text to train on")

    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.directory.name}.", dir=cache_root))
    try:
        dtype = token_dtype(tokenizer.vocab_size)
        np.asarray(ids, dtype=dtype).tofile(staging / "tokens.bin")
        (staging / "tokenizer.json").write_text(tokenizer.to_json(), encoding="utf-8")
        meta = {
            "dtype": dtype.name,
            "num_tokens": len(ids),
            "files": [str(f) for f in files],
            "tokenizer": tokenizer.spec(),
            "vocab_size": tokenizer.vocab_size,
        }
        # meta.json last: its presence marks the entry complete.
        (staging / "meta.json").write_text(json.dumps(meta, indent=2))
        os.rename(staging, entry.directory)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (entry.directory / "meta.json").exists():  # another process may have won the race
            raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return entry
