"""What an upload's bytes are, decided by their content: text, a workbook, or something to name and refuse."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from . import text, workbooks
from .problems import Problem

# A record: the line of the file (or the sheet row) it starts on, and its cells.
Record = tuple[int | None, list[str]]

_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIPS = (b"PK\x03\x04", b"PK\x05\x06")
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"%PDF-", "a PDF document"),
    (b"%!PS", "a PostScript document"),
    (b"{\\rtf", "a rich-text (RTF) document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"\x28\xb5\x2f\xfd", "a Zstandard archive"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"\x7fELF", "a program (ELF)"),
    (b"OggS", "an Ogg audio or video file"),
    (b"ID3", "an MP3 audio file"),
)
_HTML = re.compile(r"<!doctype html\s*>|<html(?:\s[^<>\n]*)?>")
_XML = re.compile(r"<\?xml\s[^\n]*\?>")
# How much of a text file's start tells whether it is markup.
_MARKUP_CHARACTERS = 4096
_ACCEPTED = "upload a CSV file (UTF-8), or an .xlsx, .xls or .ods workbook"


@dataclass(frozen=True)
class ReadOptions:
    """What the form said about the file: its encoding, its sheet, and which column holds what."""

    encoding: str | None = None
    sheet: str | None = None
    columns: dict[str, str] | None = None


@dataclass
class Source:
    """A file's records as cells, how it was read, and why it could not be (filled as it is read).

    The records can be iterated more than once: a text file's are read again from its bytes.
    """

    records: Iterable[Record]
    info: dict[str, object]
    problems: list[Problem] = field(default_factory=list)
    # Non-blank records the reader counted without yielding them (a workbook over the row limit).
    more: int = 0


def read(data: bytes, options: ReadOptions, max_records: int) -> Source:
    """Return the records of an upload, whatever format its bytes say it is."""
    if data.startswith(_ZIPS):
        kind, description = workbooks.zip_kind(data)
        if kind is None:
            return refused(f"This is {description}, not a spreadsheet; {_ACCEPTED}.")
        unpacking = workbooks.unpacking_problem(data)
        if unpacking is not None:
            return Source([], {"format": kind}, [unpacking])
        return _workbook(data, kind, options, max_records)
    if data.startswith(_OLE2):
        return _workbook(data, "xls", options, max_records)
    description = next((what for signature, what in _SIGNATURES if data.startswith(signature)), None)
    if description is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        description = "a WebP image"
    if description is None and data[:3] == b"BZh" and data[4:10] == b"1AY&SY":
        description = "a bzip2 archive"
    if description is not None:
        return refused(f"This is {description}, not a spreadsheet; {_ACCEPTED}.")
    return _text(data, options)


def refused(message: str, **info: object) -> Source:
    """A source with no records, refused for `message`."""
    return Source([], {"format": None, **info}, [Problem(None, None, message)])


def _workbook(data: bytes, kind: str, options: ReadOptions, max_records: int) -> Source:
    sheet = workbooks.read(data, options.sheet, max_records)
    info: dict[str, object] = {"format": kind, "sheet": sheet.name, "sheets": sheet.names}
    problems = [sheet.problem] if sheet.problem else []
    return Source(sheet.records, info, problems, sheet.more)


def _text(data: bytes, options: ReadOptions) -> Source:
    encoding = text.encoding_of(data, options.encoding)
    if encoding.codec is None:
        assert encoding.problem is not None
        return Source([], {"format": None, "suggested_encoding": encoding.suggested}, [encoding.problem])
    markup = _markup(text.beginning(text.lines(data, encoding.codec), _MARKUP_CHARACTERS))
    if markup is not None:
        return refused(markup, encoding=encoding.name)
    delimiter = text.delimiter_of(text.lines(data, encoding.codec))
    problems: list[Problem] = []
    info: dict[str, object] = {"format": "csv", "encoding": encoding.name, "delimiter": delimiter}
    return Source(TextRecords(data, encoding.codec, delimiter, problems), info, problems)


@dataclass(frozen=True)
class TextRecords:
    """A text file's records, read again from its bytes each time they are iterated; broken quoting
    adds a problem to `unreadable` and ends them (so a file is read again only once it read well)."""

    data: bytes
    codec: str
    delimiter: str
    unreadable: list[Problem]

    def __iter__(self) -> Iterator[Record]:
        return text.records(text.lines(self.data, self.codec), self.delimiter, self.unreadable)


def _markup(characters: str) -> str | None:
    """What a text file that is markup is (a web page, an XML spreadsheet), or None."""
    start = characters[:_MARKUP_CHARACTERS].lstrip().casefold()
    # Whole tags only: a hospital may well be called "<!DOCTYPE HTML" in a CSV (hypothesis found one).
    if _HTML.match(start):
        return f"This is a web page (HTML), not a spreadsheet; {_ACCEPTED}."
    if not _XML.match(start):
        return None
    if "urn:schemas-microsoft-com:office:spreadsheet" in start:
        return ("This is an Excel 2003 XML spreadsheet, which cannot be read; open it in Excel and save it "
                "as .xlsx or as CSV UTF-8.")
    return f"This is an XML file, not a spreadsheet; {_ACCEPTED}."
