"""Corpus file readers: paths, formats, gzip, and errors that name the file and line."""

from __future__ import annotations

import gzip
import json

import pytest

from gptlab.data.readers import CorpusFormatError, expand_paths, iter_lines, iter_records
from tests.conftest import CHINESE


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_expand_file_directory_glob_and_list(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b").mkdir()
    one = tmp_path / "a" / "one.txt"
    two = tmp_path / "a" / "b" / "two.jsonl.gz"
    one.write_text("x")
    two.write_bytes(gzip.compress(b'{"text": "y"}\n'))
    (tmp_path / "a" / "notes.md").write_text("skipped: not a corpus format")
    (tmp_path / "a" / ".hidden.txt").write_text("skipped: hidden")
    assert expand_paths(one) == [one.resolve()]
    assert expand_paths(tmp_path / "a") == [two.resolve(), one.resolve()]
    assert expand_paths(str(tmp_path / "a" / "**" / "*.gz")) == [two.resolve()]
    assert expand_paths([one, str(tmp_path / "a")]) == [one.resolve(), two.resolve()]


def test_nothing_matched_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no .txt, .jsonl, .csv or .tsv files"):
        expand_paths(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"glob '.*\*.txt' matches no files"):
        expand_paths(str(tmp_path / "*.txt"))
    with pytest.raises(FileNotFoundError, match="does not exist; point data.path"):
        expand_paths(tmp_path / "missing.txt")


def test_jsonl_csv_tsv_and_gzip_records(tmp_path):
    rows = [{"text": "床前明月光", "label": "li bai", "extra": 1}, {"text": "line, with comma", "label": 2}]
    jsonl = write_jsonl(tmp_path / "d.jsonl", rows)
    csv_file = tmp_path / "d.csv"
    csv_file.write_text('text,label\n床前明月光,li bai\n"line, with comma",2\n', encoding="utf-8")
    tsv_gz = tmp_path / "d.tsv.gz"
    tsv_gz.write_bytes(gzip.compress("text\tlabel\n床前明月光\tli bai\nline, with comma\t2\n".encode()))
    expected = [{"text": "床前明月光", "label": "li bai"}, {"text": "line, with comma", "label": "2"}]
    for path in (jsonl, csv_file, tsv_gz):
        assert [r for _, r in iter_records(path, ["text", "label"])] == expected, path
    assert [n for n, _ in iter_records(csv_file, ["text"])] == [2, 3]


def test_txt_records_are_lines(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("first\r\n\nthird\n", encoding="utf-8")
    assert list(iter_records(path, ["text"])) == [
        (1, {"text": "first"}),
        (2, {"text": ""}),
        (3, {"text": "third"}),
    ]


def test_bad_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"text": broken}\n', encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"bad.jsonl' line 2 is not valid JSON"):
        list(iter_records(path, ["text"]))


def test_missing_json_field_names_line_and_fields(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, {"body": "b"}])
    with pytest.raises(CorpusFormatError, match=r"line 2 has no field 'text' \(it has \['body'\]\)"):
        list(iter_records(path, ["text"]))


def test_missing_csv_column_names_the_header(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("body,label\nhello,a\n", encoding="utf-8")
    with pytest.raises(
        CorpusFormatError, match=r"has no column 'text' \(its header is \['body', 'label'\]\)"
    ):
        list(iter_records(path, ["text", "label"]))


def test_invalid_utf8_names_byte_offset_or_is_replaced(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes("héllo\n".encode() + b"ab\xffcd\n")
    with pytest.raises(
        CorpusFormatError, match=r"not valid UTF-8 at byte offset 9 \(line 2\).*encoding_errors=replace"
    ):
        list(iter_lines(path))
    assert [t for _, t in iter_lines(path, errors="replace")] == ["héllo\n", "ab\ufffdcd\n"]


def test_truncated_gzip_is_reported(tmp_path):
    path = tmp_path / "cut.txt.gz"
    path.write_bytes(gzip.compress((CHINESE * 200).encode())[:-30])
    with pytest.raises(CorpusFormatError, match="truncated or corrupt gzip"):
        list(iter_lines(path))


def test_unsupported_suffix_is_named(tmp_path):
    path = tmp_path / "d.parquet"
    path.write_bytes(b"x")
    with pytest.raises(CorpusFormatError, match="unsupported format; use one of .txt, .jsonl, .csv, .tsv"):
        list(iter_records(path, ["text"]))


def test_a_json_object_or_list_as_text_is_refused_and_numbers_read_as_one_label(tmp_path):
    for value, kind in (({"en": "hi"}, "object"), (["a", "b"], "list")):
        rows = write_jsonl(
            tmp_path / f"{kind}.jsonl", [{"text": "fine", "label": 1}, {"text": value, "label": 2}]
        )
        with pytest.raises(CorpusFormatError, match=rf"line 2: field 'text' is a JSON {kind}, not a string"):
            list(iter_records(rows, ["text", "label"]))
    rows = write_jsonl(tmp_path / "numbers.jsonl", [{"text": "a", "label": x} for x in (1, 1.0, 2.5, True)])
    assert [r["label"] for _, r in iter_records(rows, ["text", "label"])] == ["1", "1", "2.5", "true"]


def test_long_csv_cells_and_an_excel_byte_order_mark_are_read(tmp_path):
    table = tmp_path / "excel.csv"
    long = "字" * 100_000  # 300 KB of UTF-8, over the csv module's default 128 KiB a cell
    table.write_bytes("\ufefftext,label\n".encode() + f'"{long}",x\nshort,y\n'.encode())
    assert [r["text"] for _, r in iter_records(table, ["text", "label"])] == [long, "short"]
    text = tmp_path / "bom.txt"
    text.write_bytes("\ufeff第一行\n".encode())
    assert list(iter_lines(text)) == [(1, "第一行\n")]


def test_a_json_array_gzip_bytes_and_replaced_bytes_are_named(tmp_path, caplog):
    array = tmp_path / "rows.json"
    for content in ('[{"text": "a"}, {"text": "b"}]\n', '[\n  {"text": "a"}\n]\n'):
        array.write_text(content, encoding="utf-8")
        with pytest.raises(CorpusFormatError, match=r"holds a JSON array; .* JSON Lines, one object .*jq -c"):
            list(iter_records(array, ["text"]))
    packed = tmp_path / "notes.txt"
    packed.write_bytes(gzip.compress("你好\n".encode()))
    with pytest.raises(CorpusFormatError, match=r"is gzip-compressed .*; rename it to 'notes.txt.gz'"):
        list(iter_lines(packed))
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok \xff\xfe here\n\xef\xbf\xbd kept\n\xe4\xbd\n")
    with caplog.at_level("INFO"):
        lines = [line for _, line in iter_lines(bad, errors="replace")]
    assert lines == ["ok \ufffd\ufffd here\n", "\ufffd kept\n", "\ufffd\n"]
    assert (
        "bad.txt': 4 undecodable byte(s) replaced with U+FFFD (data.encoding_errors=replace)" in caplog.text
    )


def test_errors_name_the_settings_of_the_command_that_reads(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; point input at a file"):
        expand_paths(tmp_path / "nowhere.txt", key="input")
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("café\n".encode("latin-1"))
    with pytest.raises(CorpusFormatError, match=r"or set encoding_errors=replace") as err:
        list(iter_records(latin, ["text"], prefix=""))
    assert "data." not in str(err.value)
    rows = write_jsonl(tmp_path / "r.jsonl", [{"body": "x"}])
    with pytest.raises(CorpusFormatError, match=r"has no field 'text' .*; set text_field to the right names"):
        list(iter_records(rows, ["text"], prefix=""))
