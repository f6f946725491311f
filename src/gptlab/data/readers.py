"""Read text from corpus files: ``.txt``, ``.jsonl``, ``.csv``, ``.tsv``, each optionally ``.gz``.

Everything streams line by line, so memory does not grow with file size, and every error names the
file and the line (or byte offset) at fault, with the fix.
"""

from __future__ import annotations

import csv
import glob
import gzip
import json
import os
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

FORMATS = ("txt", "jsonl", "csv", "tsv")
PathSpec = str | os.PathLike | Sequence[str | os.PathLike]


class CorpusFormatError(ValueError):
    """A corpus file cannot be read as its format says."""


def file_format(path: Path) -> str:
    """``txt``, ``jsonl``, ``csv`` or ``tsv``, from the suffix (a trailing ``.gz`` is looked through)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    fmt = suffixes[-1].lstrip(".") if suffixes else ""
    fmt = {"text": "txt", "json": "jsonl", "ndjson": "jsonl"}.get(fmt, fmt)
    if fmt not in FORMATS:
        raise CorpusFormatError(
            f"'{path}' has an unsupported format; use one of .txt, .jsonl, .csv, .tsv (optionally .gz)"
        )
    return fmt


def _is_supported(path: Path) -> bool:
    try:
        file_format(path)
    except CorpusFormatError:
        return False
    return not path.name.startswith(".")


def expand_paths(paths: PathSpec) -> list[Path]:
    """Files named by a file, a directory (searched recursively), a glob, or a list of these."""
    specs = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if not specs:
        raise FileNotFoundError("no corpus path given; set data.path=<file, directory or glob>")
    files: list[Path] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_file():
            found = [path]
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _is_supported(p))
            if not found:
                raise FileNotFoundError(
                    f"directory '{path}' holds no .txt, .jsonl, .csv or .tsv files (optionally .gz)"
                )
        elif glob.has_magic(str(path)):
            found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not found:
                raise FileNotFoundError(f"glob '{spec}' matches no files; check the pattern in data.path")
        else:
            raise FileNotFoundError(
                f"corpus path '{path}' does not exist; point data.path at a file, directory or glob "
                "(e.g. data.path=data/shakespeare_char.txt)"
            )
        files.extend(p.resolve() for p in found)
    return list(dict.fromkeys(files))  # keep order, drop repeats


def iter_lines(path: Path, errors: str = "strict") -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` with line endings kept, decoding UTF-8 line by line.

    ``errors="replace"`` substitutes U+FFFD for undecodable bytes instead of failing.
    """
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    offset = 0
    line_number = 0
    try:
        with opener(path, "rb") as stream:
            for line_number, raw in enumerate(stream, start=1):  # noqa: B007 - used after the loop
                try:
                    text = raw.decode("utf-8", errors=errors)
                except UnicodeDecodeError as err:
                    raise CorpusFormatError(
                        f"'{path}' is not valid UTF-8 at byte offset {offset + err.start} (line "
                        f"{line_number}); convert the file to UTF-8, or set data.encoding_errors=replace "
                        "to substitute U+FFFD for bad bytes"
                    ) from None
                offset += len(raw)
                yield line_number, text
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise CorpusFormatError(
            f"'{path}' is a truncated or corrupt gzip file (after line {line_number}): {err}; "
            "re-create or re-download it"
        ) from None


def iter_records(
    path: Path, fields: Sequence[str], errors: str = "strict"
) -> Iterator[tuple[int, dict[str, str | None]]]:
    """Yield ``(line_number, {field: value})`` for each record of a jsonl, csv or tsv file.

    A ``.txt`` file is one record per line, under the first field name. A JSON value of ``null`` or a
    missing CSV cell gives ``None``; a field absent from a JSON object or a CSV header is an error.
    """
    fmt = file_format(path)
    if fmt == "txt":
        for number, line in iter_lines(path, errors):
            yield number, {fields[0]: line.rstrip("\r\n")}
    elif fmt == "jsonl":
        yield from _jsonl_records(path, fields, errors)
    else:
        yield from _csv_records(path, fields, errors, delimiter="\t" if fmt == "tsv" else ",")


def _jsonl_records(path: Path, fields: Sequence[str], errors: str) -> Iterator[tuple[int, dict]]:
    for number, line in iter_lines(path, errors):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise CorpusFormatError(f"'{path}' line {number} is not valid JSON: {err.msg}") from None
        if not isinstance(record, dict):
            raise CorpusFormatError(
                f"'{path}' line {number} is a JSON {type(record).__name__}, not an object"
            )
        missing = [f for f in fields if f not in record]
        if missing:
            raise CorpusFormatError(
                f"'{path}' line {number} has no field {missing[0]!r} (it has {sorted(record)}); set "
                "data.text_field / data.label_field to the right names"
            )
        yield number, {f: None if record[f] is None else str(record[f]) for f in fields}


def _csv_records(
    path: Path, fields: Sequence[str], errors: str, delimiter: str
) -> Iterator[tuple[int, dict]]:
    lines = (line for _, line in iter_lines(path, errors))
    reader = csv.DictReader(lines, delimiter=delimiter)
    header = reader.fieldnames or []
    missing = [f for f in fields if f not in header]
    if missing:
        raise CorpusFormatError(
            f"'{path}' has no column {missing[0]!r} (its header is {header}); set "
            "data.text_field / data.label_field to the right names"
        )
    for row in reader:
        yield reader.line_num, {f: row.get(f) for f in fields}
