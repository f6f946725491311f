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
import sys
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

FORMATS = ("txt", "jsonl", "csv", "tsv")
PathSpec = str | os.PathLike | Sequence[str | os.PathLike]
BOM = "\ufeff".encode()
GZIP_MAGIC = b"\x1f\x8b"
REPLACEMENT = "\ufffd"


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


def expand_paths(paths: PathSpec, key: str = "data.path") -> list[Path]:
    """Files named by a file, a directory (searched recursively), a glob, or a list of these; errors
    name the setting ``key`` that gave ``paths``."""
    specs = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if not specs:
        raise FileNotFoundError(f"no corpus path given; set {key}=<file, directory or glob>")
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
                raise FileNotFoundError(f"glob '{spec}' matches no files; check the pattern in {key}")
        else:
            raise FileNotFoundError(
                f"corpus path '{path}' does not exist; point {key} at a file, directory or glob "
                f"(e.g. {key}=data/shakespeare_char.txt)"
            )
        files.extend(p.resolve() for p in found)
    return list(dict.fromkeys(files))  # keep order, drop repeats


def iter_lines(path: Path, errors: str = "strict", prefix: str = "data.") -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` with line endings kept, decoding UTF-8 line by line (a leading
    byte-order mark, as Excel writes, is dropped).

    ``errors="replace"`` substitutes U+FFFD for undecodable bytes instead of failing, and says how many
    bytes it replaced. Errors name settings as ``<prefix>encoding_errors``.
    """
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    offset = replaced = 0
    line_number = 0
    try:
        with opener(path, "rb") as stream:
            for line_number, raw in enumerate(stream, start=1):  # noqa: B007 - used after the loop
                if line_number == 1:
                    if raw.startswith(GZIP_MAGIC):
                        raise CorpusFormatError(
                            f"'{path}' is gzip-compressed but its name does not end in .gz; rename it to "
                            f"'{path.name}.gz'"
                        )
                    raw = raw.removeprefix(BOM)
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    if errors != "replace":
                        raise CorpusFormatError(
                            f"'{path}' is not valid UTF-8 at byte offset {offset + err.start} (line "
                            f"{line_number}); convert the file to UTF-8, or set {prefix}encoding_errors="
                            "replace to substitute U+FFFD for bad bytes"
                        ) from None
                    text = raw.decode("utf-8", errors="replace")
                    replaced += _replaced_bytes(raw, text)
                offset += len(raw)
                yield line_number, text
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise CorpusFormatError(
            f"'{path}' is a truncated or corrupt gzip file (after line {line_number}): {err}; "
            "re-create or re-download it"
        ) from None
    if replaced:
        # Imported here: reading a corpus alone (a preparation, its benchmark) need not load torch.
        from lightning.pytorch.utilities import rank_zero_info

        rank_zero_info(
            f"'{path}': {replaced:,} undecodable byte(s) replaced with U+FFFD "
            f"({prefix}encoding_errors=replace)"
        )


def _replaced_bytes(raw: bytes, text: str) -> int:
    """How many bytes of ``raw`` decoding with errors="replace" turned into U+FFFD in ``text``."""
    new_marks = text.count(REPLACEMENT) - raw.count(REPLACEMENT.encode())
    return len(raw) - (len(text.encode("utf-8")) - new_marks * len(REPLACEMENT.encode()))


def iter_records(
    path: Path, fields: Sequence[str], errors: str = "strict", prefix: str = "data."
) -> Iterator[tuple[int, dict[str, str | None]]]:
    """Yield ``(line_number, {field: value})`` for each record of a jsonl, csv or tsv file.

    A ``.txt`` file is one record per line, under the first field name. A JSON value of ``null`` or a
    missing CSV cell gives ``None``; a JSON number gives its shortest form (``1.0`` and ``1`` are both
    ``"1"``); a field absent from a JSON object or a CSV header, or a JSON object or list as a value, is
    an error. Errors name settings as ``<prefix>text_field`` and so on.
    """
    fmt = file_format(path)
    if fmt == "txt":
        for number, line in iter_lines(path, errors, prefix):
            yield number, {fields[0]: line.rstrip("\r\n")}
    elif fmt == "jsonl":
        yield from _jsonl_records(path, fields, errors, prefix)
    else:
        yield from _csv_records(path, fields, errors, "\t" if fmt == "tsv" else ",", prefix)


def _jsonl_records(path: Path, fields: Sequence[str], errors: str, prefix: str) -> Iterator[tuple[int, dict]]:
    field_keys = f"{prefix}text_field" + (f" / {prefix}label_field" if len(fields) > 1 else "")
    for number, line in iter_lines(path, errors, prefix):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == 1 and line.lstrip().startswith("["):
                raise CorpusFormatError(_JSON_ARRAY.format(path=path)) from None
            raise CorpusFormatError(f"'{path}' line {number} is not valid JSON: {err.msg}") from None
        if not isinstance(record, dict):
            if number == 1 and isinstance(record, list):
                raise CorpusFormatError(_JSON_ARRAY.format(path=path))
            raise CorpusFormatError(
                f"'{path}' line {number} is a JSON {type(record).__name__}, not an object"
            )
        missing = [f for f in fields if f not in record]
        if missing:
            raise CorpusFormatError(
                f"'{path}' line {number} has no field {missing[0]!r} (it has {sorted(record)}); set "
                f"{field_keys} to the right names"
            )
        yield number, {f: _json_text(record[f], path, number, f) for f in fields}


_JSON_ARRAY = (
    "'{path}' holds a JSON array; .json and .jsonl files are read as JSON Lines, one object per line. "
    "Convert it, e.g. jq -c '.[]' in.json > out.jsonl"
)


def _json_text(value: object, path: Path, number: int, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int | float):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    raise CorpusFormatError(
        f"'{path}' line {number}: field {field!r} is a JSON {'object' if isinstance(value, dict) else 'list'}"
        ", not a string; give its text as one string"
    )


def _csv_records(
    path: Path, fields: Sequence[str], errors: str, delimiter: str, prefix: str
) -> Iterator[tuple[int, dict]]:
    field_keys = f"{prefix}text_field" + (f" / {prefix}label_field" if len(fields) > 1 else "")
    lines = (line for _, line in iter_lines(path, errors, prefix))
    # documents may be long: Python's csv module stops at 128 KiB a cell by default
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    reader = csv.DictReader(lines, delimiter=delimiter)
    header = reader.fieldnames or []
    missing = [f for f in fields if f not in header]
    if missing:
        raise CorpusFormatError(
            f"'{path}' has no column {missing[0]!r} (its header is {header}); set {field_keys} to "
            "the right names"
        )
    for row in reader:
        yield reader.line_num, {f: row.get(f) for f in fields}
