"""Read a corpus's documents, clean them up and cut them into chunks of pieces for the tokenizer.

A corpus is one or more files (a file, a directory, a glob or a list of them): in a ``.txt`` file the
whole file is one document; in ``.jsonl`` / ``.csv`` / ``.tsv`` each record's text field is one; any of
them may be gzipped. Documents are separated by the tokenizer's end-of-text token, so training windows
span document boundaries as in GPT-2's pretraining.

Reading streams: documents are read line by line, cut into pieces of about ``PIECE_CHARS`` characters
and grouped into chunks of about ``CHUNK_CHARS``, so memory does not grow with the corpus.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

from gptlab.data.readers import PathSpec, file_format, iter_lines, iter_records

PIECE_CHARS = 1 << 16  # a document is encoded in pieces of about this many characters ...
CHUNK_CHARS = 1 << 20  # ... and pieces are encoded in chunks of about this many (one task per chunk)
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


SPLITS = ("train", "val", "test")


def split_offsets(total_bytes: int, val_fraction: float, test_fraction: float) -> list[int]:
    """The UTF-8 byte offsets at which the val and the test split begin (the test one only if any)."""
    cuts = [int(total_bytes * (1 - val_fraction - test_fraction))]
    if test_fraction:
        cuts.append(int(total_bytes * (1 - test_fraction)))
    return cuts


def _cut_index(text: str, nbytes: int) -> int:
    """The number of whole characters in the first ``nbytes`` UTF-8 bytes of ``text``."""
    return len(text.encode("utf-8", errors="surrogatepass")[:nbytes].decode("utf-8", errors="ignore"))


def split_chunks(chunks: Iterable[list[Piece]], cuts: list[int]) -> Iterator[tuple[int, list[Piece]]]:
    """(split index, chunk) for the corpus cut at the byte offsets ``cuts`` (see :func:`split_offsets`;
    a cut inside a character moves back to its start): chunks never span two splits, and a split never
    starts with an end-of-text token. The cut depends on the text alone, so every tokenizer sees the
    same splits."""
    split, position = 0, 0
    for chunk in chunks:
        out: list[Piece] = []
        for separate, text in chunk:
            while split < len(cuts) and position + len(text.encode("utf-8", "surrogatepass")) > cuts[split]:
                index = _cut_index(text, cuts[split] - position)
                head, text = text[:index], text[index:]
                if head:
                    out.append((separate, head))
                    position += len(head.encode("utf-8", "surrogatepass"))
                if out:
                    yield split, out
                    out = []
                split, separate = split + 1, False
            if text:
                out.append((separate, text))
                position += len(text.encode("utf-8", "surrogatepass"))
        if out:
            yield split, out


@dataclass
class CorpusReader:
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
