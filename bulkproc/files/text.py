"""Text files: their encoding (never guessed into a transcoding), their delimiter, and their records."""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass

from .problems import Problem, quoted

BYTE_ORDER_MARK = "\ufeff"
DELIMITERS = (",", ";", "\t", "|")
# Longest first: a UTF-32 mark begins with the UTF-16 one.
_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32le", "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32be", "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig", "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16le", "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16be", "utf-16"),
)
# Codecs Python calls text encodings that are no character sets a spreadsheet saves (punycode's
# decoder is also quadratic in its input).
_NOT_CHARSETS = frozenset({"idna", "punycode", "unicode_escape", "raw_unicode_escape", "undefined", "charmap",
                           "mbcs", "oem", "palmos"})
# The encodings spreadsheet programs save text in, most widespread first: a sample is compared
# with these only (a short one fits many old DOS and Mac code pages equally well), and among
# those that read it alike, the first is named.
_PREFERRED = ("cp1252", "latin_1", "iso8859_15", "cp1250", "iso8859_2", "mac_roman", "cp1251", "cp1257",
              "cp1253", "cp1254", "cp1255", "cp1256", "cp1258", "cp932", "shift_jis", "gb18030", "gbk",
              "big5", "euc_kr", "euc_jp", "koi8_r", "cp437", "cp850")
_NAMES = {"latin_1": "iso-8859-1", "mac_roman": "mac-roman", "shift_jis": "shift_jis", "cp932": "cp932"}
_SAMPLE_BYTES = 64 * 1024
# One quoted run (an unclosed one runs to the end), or a line break outside quotes.
_QUOTED_OR_BREAK = re.compile(r'"[^"]*"?|\r\n|\r|\n')
_QUOTED = re.compile(r'"[^"]*"?')
_BLANK_LINES = re.compile(r"(?:[ \t\f\v]*(?:\r\n|\r|\n))*")


@dataclass(frozen=True)
class Decoded:
    """A text file's characters and the encoding that read them, or why it cannot be read."""

    text: str | None
    encoding: str | None
    problem: Problem | None = None
    # The encoding the bytes most likely have, when they are not the one tried.
    suggested: str | None = None


def charset(name: str) -> str | None:
    """Return the codec for an `encoding` a person named, or None when it is no character set."""
    try:
        info = codecs.lookup(name.strip())
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name.replace("-", "_") in _NOT_CHARSETS:
        return None
    return info.name


def decode(data: bytes, encoding: str | None = None) -> Decoded:
    """Return the file's text: by its byte-order mark, else the named encoding, else UTF-8."""
    for mark, codec, name in _MARKS:
        if data.startswith(mark):
            return _decoded(data, codec, name)
    if encoding:
        codec = charset(encoding)
        if codec is None:
            return Decoded(None, None, Problem(None, None, unknown_encoding_message(encoding)))
        return _decoded(data, codec, encoding.strip().lower())
    if _looks_like_utf16_without_mark(data):
        order = "utf-16le" if data[1:2] == b"\x00" else "utf-16be"
        return Decoded(None, None, Problem(None, None, (
            f"The file looks like UTF-16 without a byte-order mark; send encoding={order} "
            'with it or save it as "CSV UTF-8" and upload it again.')), suggested=order)
    try:
        return Decoded(data.decode("utf-8").lstrip(BYTE_ORDER_MARK), "utf-8")
    except UnicodeDecodeError as exc:
        return _not_utf8(data, exc.start)


def unknown_encoding_message(name: str) -> str:
    """Why `encoding` cannot be used, and what can."""
    return (f"The encoding {quoted(name)} is not one this service knows; name a character set such as "
            "windows-1252, iso-8859-1, windows-1250, mac-roman or utf-16.")


def _decoded(data: bytes, codec: str, name: str) -> Decoded:
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].decode(codec, "replace").count("\n") + 1
        return Decoded(None, None, Problem(None, None, (
            f"The file is not {name}: byte 0x{data[exc.start]:02X} on line {line} has no meaning in it; "
            f'send the encoding it was saved in or save it as "CSV UTF-8" and upload it again.'), line))
    # Tools that each add a byte-order mark can stack several; all of them go, so the header stays a header.
    return Decoded(text.lstrip(BYTE_ORDER_MARK), name)


def _looks_like_utf16_without_mark(data: bytes) -> bool:
    sample = data[:4096]
    return len(sample) >= 4 and sample.count(0) * 4 >= len(sample) and sample.count(0) * 4 < len(sample) * 3


def _not_utf8(data: bytes, offset: int) -> Decoded:
    line = data.count(b"\n", 0, offset) + 1
    guess = likely_encoding(data)
    if guess is None:
        advice = 'save it as "CSV UTF-8" and upload it again'
    else:
        advice = f'it looks like {_title(guess)}: send encoding={guess} with it or save it as "CSV UTF-8"'
    message = f"The file is not UTF-8 (the first bad byte is on line {line}); {advice}."
    return Decoded(None, None, Problem(None, None, message, line), suggested=guess)


def likely_encoding(data: bytes) -> str | None:
    """Return the name of the encoding bytes most likely have, to tell a person; never used to decode."""
    from charset_normalizer import from_bytes  # only refused files need it

    matches = list(from_bytes(data[:_SAMPLE_BYTES], cp_isolation=list(_PREFERRED)))
    if not matches:
        return None
    best = matches[0]
    alike = set(best.could_be_from_charset) | {best.encoding}
    if not best.multi_byte_usage:
        # A few accented letters fit most single-byte code pages equally well: of those that read
        # the sample as cleanly as the best, name the one most files are saved in.
        alike |= {name for match in matches if match.percent_chaos <= best.percent_chaos + 1.0
                  for name in match.could_be_from_charset}
    codec = next((name for name in _PREFERRED if name in alike), best.encoding)
    return _person_name(codec)


def _person_name(codec: str) -> str:
    if codec in _NAMES:
        return _NAMES[codec]
    if re.fullmatch(r"cp125\d", codec):
        return "windows-" + codec[2:]
    if codec.startswith("iso8859_"):
        return "iso-8859-" + codec[len("iso8859_"):]
    return codec.replace("_", "-")


_CAPITALS = frozenset({"iso", "utf", "euc", "koi8", "gbk", "gb18030", "jp", "kr", "jis", "cp"})


def _title(name: str) -> str:
    """Windows-1252, ISO-8859-1, Mac-Roman: an encoding's name as people write it in prose."""
    return "-".join(part.upper() if part in _CAPITALS else part.capitalize() for part in name.split("-"))


def delimiter_of(text: str) -> str:
    """Return the delimiter found most often outside quotes in the first non-blank line (`,` when none is)."""
    start = _BLANK_LINES.match(text).end()
    end = len(text)
    for match in _QUOTED_OR_BREAK.finditer(text, start):
        if not match.group().startswith('"'):
            end = match.start()
            break
    line = _QUOTED.sub("", text[start:end])
    counts = {delimiter: line.count(delimiter) for delimiter in DELIMITERS}
    best = max(DELIMITERS, key=counts.__getitem__)  # the first of equals: `,` wins a tie
    return best if counts[best] else ","


def records(text: str, delimiter: str, unreadable: list[Problem]) -> Iterator[tuple[int, list[str]]]:
    """Yield (line the record starts on, its cells); on broken quoting, add a problem and stop."""
    # strict=True turns an unclosed quote into an error instead of silently eating the rest of the file;
    # skipinitialspace lets a hand-typed `A, "1 Main St, Springfield"` keep its quoted comma.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True, skipinitialspace=True)
    start_line = 1
    try:
        for cells in reader:
            yield start_line, cells
            start_line = reader.line_num + 1
    except csv.Error as exc:
        unreadable.append(_unreadable_problem(start_line, str(exc)))


def _unreadable_problem(line: int, reason: str) -> Problem:
    if "field larger than field limit" in reason:
        message = (
            f"The file cannot be read from line {line} on: a field there is longer than "
            f"{csv.field_size_limit()} characters (look for a quote that is never closed)."
        )
    else:
        message = (
            f"The file cannot be read from line {line} on: a quoted field is never closed "
            'or has text after its closing quote (write a quote inside a quoted field as "").'
        )
    return Problem(None, None, message, line)
