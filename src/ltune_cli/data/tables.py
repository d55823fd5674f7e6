"""Reading CSV / TSV / JSON-lines files into numbered records, with errors that point into the file.

A data file is user input, so its fix is in the file: every failure here (missing file,
bad bytes, a stray quote, a malformed JSON line, a short row) becomes a one-line
`LtuneError` naming the file, the 1-based line and the fix, never a codec/csv/json error.

TSV is split on tabs with quoting disabled (GLUE sentences contain quote characters, and a
quote must never swallow lines); CSV follows the usual quoting rules, strictly.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ltune_cli.errors import LtuneError

#: extension -> format; `.json` is read as JSON lines (one object per line), like `.jsonl`.
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}
DELIMITERS = {"csv": ",", "tsv": "\t"}
#: separators that betray a file split by something other than its extension says
DELIMITER_NAMES = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}
SUFFIX_FOR_DELIMITER = {"\t": ".tsv", ",": ".csv"}
#: what a record's field is called in messages, per format
FIELD_WORD = {"csv": "column", "tsv": "column", "jsonl": "key", "hub": "column"}

CSV_QUOTE_FIX = ("a field that starts with a double quote must end with one, and a quote inside it "
                 "is written twice (\"\"); or save the file as TSV")
JSONL_FIX = "write one JSON object per line (JSON lines), e.g. {\"text\": \"...\", \"label\": 0}"


def show(value, limit: int = 40) -> str:
    """A short, quoted, one-line rendering of a user value for an error message."""
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 4] + "...'"


def one_line(message: str) -> str:
    """Replace anything that would break the message over lines (values come from user files)."""
    return "".join(ch if ch.isprintable() else " " for ch in message)


def data_error(source: str, problem: str, *, line: int | None = None, column: str | None = None,
               fix: str | None = None, unit: str = "line", field_word: str = "column") -> LtuneError:
    """`<file>: line N: column 'x': <problem>. <Fix>.` as one `LtuneError` line."""
    where = str(source)
    if line is not None:
        where += f": {unit} {line}"
    if column is not None:
        where += f": {field_word} {show(column)}"
    message = sentence(f"{where}: {problem}")
    if fix:
        message += " " + sentence(fix[:1].upper() + fix[1:])
    return LtuneError(one_line(message))


def sentence(text: str) -> str:
    """`text` ending in '.', '?' or '!' (adds a '.' when it has none)."""
    text = text.rstrip()
    return text if text.endswith((".", "?", "!")) else text + "."


@dataclass
class Table:
    """One split's records: `rows` hold (1-based line or row number, {column: value}).

    `columns` is the header (or the fixed layout of a header-less file, or the keys of the
    first JSON object); `header_line` is the raw header, kept to diagnose a wrong delimiter.
    """

    source: str
    fmt: str  # csv | tsv | jsonl | hub
    columns: list[str]
    rows: list[tuple[int, dict]]
    header_line: str | None = None
    fixed_columns: bool = True  # every row has every column (delimited files); False for JSON
    unit: str = "line"

    def error(self, problem: str, *, line: int | None = None, column: str | None = None,
              fix: str | None = None) -> LtuneError:
        return data_error(self.source, problem, line=line, column=column, fix=fix, unit=self.unit,
                          field_word=FIELD_WORD[self.fmt])

    def delimiter_hint(self, line: str | None, what: str = "line") -> str:
        """' The line contains commas but no tabs...' when `line` looks split by another separator."""
        expected = DELIMITERS.get(self.fmt)
        if expected is None or line is None or expected in line:
            return ""
        for ch, name in DELIMITER_NAMES.items():
            if ch != expected and ch in line:
                rename = SUFFIX_FOR_DELIMITER.get(ch)
                todo = f"rename it to {rename}" if rename else f"save it {DELIMITER_NAMES[expected]}-separated"
                return (f" The {what} contains {name}s but no {DELIMITER_NAMES[expected]}s, so the file looks "
                        f"{name}-separated: {todo}.")
        return ""


def read_text(path: Path, source: str) -> str:
    """The file as text: UTF-8 (a leading BOM is dropped); other bytes -> error with offset and line."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise data_error(source, "file not found") from None
    except IsADirectoryError:
        raise data_error(source, "is a folder, not a file") from None
    except OSError as e:
        raise data_error(source, f"cannot be read ({e.strerror or e})") from None
    return decode(data, source)


def decode(data: bytes, source: str) -> str:
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = bom + e.start
        utf16 = data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        fix = "it looks like UTF-16: save it as UTF-8" if utf16 else "save the file as UTF-8"
        raise data_error(source, f"not UTF-8 text (byte 0x{data[offset]:02x} at byte offset {offset})",
                         line=data.count(b"\n", 0, offset) + 1, fix=fix) from None


def numbered_lines(text: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) split on '\\n' only (a '\\r\\n' ending loses its '\\r').

    Not `str.splitlines()`: it also splits on form feeds and Unicode separators, which would
    make line numbers disagree with the user's editor.
    """
    for n, line in enumerate(text.split("\n"), 1):
        yield n, line[:-1] if line.endswith("\r") else line


def _tsv_fields(text: str) -> Iterator[tuple[int, list[str]]]:
    for n, line in numbered_lines(text):
        if line.strip():
            yield n, line.split("\t")


def _csv_fields(text: str, source: str) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise data_error(source, f"malformed CSV ({e})", line=start, fix=CSV_QUOTE_FIX) from None
        if any(f.strip() for f in fields):
            yield start, fields


def _rows(table: Table, numbered: Iterable[tuple[int, list[str]]]) -> list[tuple[int, dict]]:
    """Pair each row's fields with the column names; a row must have exactly that many.

    Trailing empty fields are tolerated (spreadsheets write them); anything else extra means a
    separator inside a text, which would shift the label column, so it is an error.
    """
    names, width = table.columns, len(table.columns)
    sep = DELIMITERS[table.fmt]
    layout = "the header" if table.header_line is not None else "the fixed layout"
    rows = []
    for n, fields in numbered:
        if len(fields) != width:
            if len(fields) < width or any(f.strip() for f in fields[width:]):
                raise table.error(
                    f"has {len(fields)} field(s) but {layout} has {width} "
                    f"({DELIMITER_NAMES[sep]}-separated: {', '.join(names)})."
                    + table.delimiter_hint(sep.join(fields)),
                    line=n,
                    fix="a text may not contain a tab" if sep == "\t" else "quote a text that contains commas")
            fields = fields[:width]
        rows.append((n, dict(zip(names, fields, strict=True))))
    return rows


def read_delimited(path: Path, fmt: str, *, source: str | None = None,
                   layout: tuple[str, ...] | None = None) -> Table:
    """A CSV/TSV file; the first line is the header unless a fixed `layout` names the columns."""
    source = source or str(path)
    text = read_text(path, source)
    numbered = _tsv_fields(text) if fmt == "tsv" else _csv_fields(text, source)
    if layout is None:
        first = next(numbered, None)
        if first is None:
            raise data_error(source, "the file is empty (expected a header line, then one example per line)")
        header_line = DELIMITERS[fmt].join(first[1])
        columns = [c.strip() for c in first[1]]
        # A repeated name would silently keep only its last column (two 'label' columns: which one?).
        # Unnamed columns (trailing separators) cannot be selected, so they may repeat.
        seen: set[str] = set()
        for c in columns:
            if c and c in seen:
                raise data_error(source, f"column {show(c)} appears twice in the header", line=first[0],
                                 fix="rename one of them (each column needs its own name)")
            seen.add(c)
    else:
        header_line, columns = None, list(layout)
    table = Table(source, fmt, columns, [], header_line=header_line)
    table.rows = _rows(table, numbered)
    return table


def _json_kind(value) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def read_jsonl(path: Path, *, source: str | None = None) -> Table:
    """A JSON-lines file: one object per non-blank line."""
    source = source or str(path)
    rows = []
    for n, line in numbered_lines(read_text(path, source)):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise data_error(source, f"malformed JSON ({e.msg} at column {e.colno})", line=n,
                             fix=JSONL_FIX) from None
        except (ValueError, RecursionError) as e:
            raise data_error(source, f"malformed JSON ({type(e).__name__}: {e})", line=n, fix=JSONL_FIX) from None
        if not isinstance(obj, dict):
            raise data_error(source, f"expected a JSON object, got {_json_kind(obj)}", line=n, fix=JSONL_FIX)
        rows.append((n, obj))
    if not rows:
        raise data_error(source, "the file is empty (expected one JSON object per line)")
    columns = list(rows[0][1])
    return Table(source, "jsonl", columns, rows, fixed_columns=False)


def read_table(path: Path, *, source: str | None = None, layout: tuple[str, ...] | None = None) -> Table:
    """Read `path` in the format its extension names (see FORMATS)."""
    fmt = FORMATS[path.suffix.lower()]
    if fmt == "jsonl":
        return read_jsonl(path, source=source)
    return read_delimited(path, fmt, source=source, layout=layout)
